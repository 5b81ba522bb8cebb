//! Evaluates every rule against one request: each rule whose match holds and whose key
//! can be built is charged, shadow rules included; the request is limited when any
//! enforced rule says so (or its store failed with `failureMode: deny`).

use crate::algorithm::Verdict;
use crate::config::{CompiledConfig, FailureMode};
use crate::key;
use crate::table::ChargeError;
use meshward_filter_common::request::RequestHead;
use meshward_filter_common::store::SharedStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed(Verdict),
    Limited(Verdict),
    /// State could not be read or written; `failureMode` decided.
    StoreFailed {
        error: String,
        allowed: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Index into `CompiledConfig::rules`.
    pub rule: usize,
    pub outcome: Outcome,
    pub evicted: bool,
    /// The key as read from the request, for debug logs.
    pub key: String,
}

impl Evaluation {
    pub fn verdict(&self) -> Option<&Verdict> {
        match &self.outcome {
            Outcome::Allowed(verdict) | Outcome::Limited(verdict) => Some(verdict),
            Outcome::StoreFailed { .. } => None,
        }
    }

    pub fn denies(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Limited(_) | Outcome::StoreFailed { allowed: false, .. }
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub evaluations: Vec<Evaluation>,
}

impl Decision {
    /// Whether the request must be answered with 429.
    pub fn is_limited(&self, config: &CompiledConfig) -> bool {
        self.enforced(config).any(Evaluation::denies)
    }

    /// Evaluations of non-shadow rules.
    pub fn enforced<'a>(
        &'a self,
        config: &'a CompiledConfig,
    ) -> impl Iterator<Item = &'a Evaluation> + 'a {
        self.evaluations.iter().filter(|evaluation| {
            config
                .rules
                .get(evaluation.rule)
                .is_some_and(|rule| !rule.shadow)
        })
    }
}

pub fn evaluate(
    config: &CompiledConfig,
    request: &RequestHead,
    store: &dyn SharedStore,
    now: u64,
) -> Decision {
    let mut evaluations = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        if !rule.matcher.matches(request) {
            continue;
        }
        let Some(resolved) = key::resolve(&rule.key, request) else {
            continue;
        };
        let (outcome, evicted) = match rule.table.charge(
            store,
            &resolved.digest,
            &rule.limit,
            now,
            config.cas_retries,
        ) {
            Ok(charge) if charge.verdict.allowed => {
                (Outcome::Allowed(charge.verdict), charge.evicted)
            }
            Ok(charge) => (Outcome::Limited(charge.verdict), charge.evicted),
            Err(err) => (store_failure(&err, rule.failure_mode), false),
        };
        evaluations.push(Evaluation {
            rule: index,
            outcome,
            evicted,
            key: resolved.display,
        });
    }
    Decision { evaluations }
}

fn store_failure(err: &ChargeError, mode: FailureMode) -> Outcome {
    Outcome::StoreFailed {
        error: err.to_string(),
        allowed: mode == FailureMode::Allow,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::algorithm::test_util::T0;
    use crate::config::parse;
    use meshward_filter_common::store::{InMemoryStore, StoreError, Versioned};

    fn request(path: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut pairs = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path.to_string()),
        ];
        pairs.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RequestHead::new(pairs, Some("192.0.2.1:4000".into()))
    }

    fn prepared(json: &str) -> (CompiledConfig, InMemoryStore) {
        let config = parse(json.as_bytes()).unwrap();
        let store = InMemoryStore::new();
        for rule in &config.rules {
            rule.table.prepare(&store).unwrap();
        }
        (config, store)
    }

    #[test]
    fn rules_scoped_to_a_path_leave_other_paths_alone() {
        let (config, store) = prepared(
            r#"{"rules":[{"name":"login","match":{"path":{"exact":"/login"}},"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":2}}]}"#,
        );
        let limited =
            |path: &str| evaluate(&config, &request(path, &[]), &store, T0).is_limited(&config);
        assert!(!limited("/login"));
        assert!(!limited("/login"));
        assert!(limited("/login"));
        for _ in 0..10 {
            assert!(!limited("/other"));
            assert!(evaluate(&config, &request("/other", &[]), &store, T0)
                .evaluations
                .is_empty());
        }
    }

    #[test]
    fn shadow_rules_count_but_never_limit() {
        let (config, store) = prepared(
            r#"{"rules":[{"name":"dry-run","shadow":true,"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":1}}]}"#,
        );
        let second = {
            evaluate(&config, &request("/", &[]), &store, T0);
            evaluate(&config, &request("/", &[]), &store, T0)
        };
        assert!(matches!(second.evaluations[0].outcome, Outcome::Limited(_)));
        assert!(!second.is_limited(&config));
    }

    #[test]
    fn every_matching_rule_is_charged() {
        let (config, store) = prepared(
            r#"{"rules":[
              {"name":"wide","limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":3}},
              {"name":"narrow","key":[{"type":"header","name":"x-user"}],"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":1}}
            ]}"#,
        );
        let alice = request("/", &[("x-user", "alice")]);
        assert!(!evaluate(&config, &alice, &store, T0).is_limited(&config));
        let again = evaluate(&config, &alice, &store, T0);
        assert!(again.is_limited(&config), "narrow is exhausted");
        assert_eq!(again.evaluations.len(), 2, "wide was charged too");
        // Anonymous requests have no x-user: only `wide` applies, one token left.
        let anonymous = evaluate(&config, &request("/", &[]), &store, T0);
        assert_eq!(anonymous.evaluations.len(), 1);
        assert!(!anonymous.is_limited(&config));
        assert!(evaluate(&config, &request("/", &[]), &store, T0).is_limited(&config));
    }

    struct Down;
    impl SharedStore for Down {
        fn get(&self, _: &str) -> Result<Option<Versioned>, StoreError> {
            Err(StoreError::Unavailable("test".into()))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("test".into()))
        }
    }

    #[test]
    fn failure_mode_decides_when_the_store_fails() {
        let open = parse(
            br#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
        )
        .unwrap();
        let closed = parse(br#"{"rules":[{"name":"r","failureMode":"deny","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#).unwrap();
        let req = request("/", &[]);
        let decision = evaluate(&open, &req, &Down, T0);
        assert!(matches!(
            decision.evaluations[0].outcome,
            Outcome::StoreFailed { allowed: true, .. }
        ));
        assert!(!decision.is_limited(&open));
        assert!(evaluate(&closed, &req, &Down, T0).is_limited(&closed));
    }
}
