//! Policies → one filter configuration per (workload, filter).
//!
//! Precedence (README "Policies"): policies do not merge. For each filter kind, among
//! the policies of the workload's namespace whose selector matches it, the most
//! specific wins — a selector naming the workload, then the one with the most
//! `matchLabels`, then an empty selector (the namespace default); ties go to the
//! alphabetically first name, so the outcome never depends on file order. No policy →
//! the filter's pass-through configuration.
//!
//! `scope: workload` rate limits are split over the workload's connected replicas:
//! replica i of n gets ⌊L/n⌋, plus one for the first L mod n replicas (ordered by node
//! id), so the shares sum to L.

use serde_json::Value;

use super::model::{Kind, Policy, Scope, Workload};

/// The policy that configures `kind` for `workload`, if any.
pub fn select<'p>(policies: &'p [Policy], kind: Kind, workload: &Workload) -> Option<&'p Policy> {
    policies
        .iter()
        .filter(|p| p.kind == kind && p.namespace == workload.namespace)
        .filter(|p| p.selector.matches(workload))
        .min_by(|a, b| {
            b.selector
                .specificity()
                .cmp(&a.selector.specificity())
                .then_with(|| a.name.cmp(&b.name))
        })
}

/// The replica's position among its workload's connected replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    pub index: usize,
    pub count: usize,
}

/// The filter JSON for one proxy.
pub fn filter_config(
    policies: &[Policy],
    kind: Kind,
    workload: &Workload,
    replica: Replica,
) -> Value {
    let Some(policy) = select(policies, kind, workload) else {
        return kind.pass_through();
    };
    let mut config = policy.config.clone();
    if kind == Kind::RateLimit && policy.scope == Scope::Workload {
        split_limits(&mut config, replica);
    }
    if kind == Kind::RateLimit && policy.scope == Scope::Global {
        set_global_domain(&mut config, policy);
    }
    config
}

/// The rate-limit service finds a global policy's rules by this domain.
pub fn global_domain(policy: &Policy) -> String {
    format!("{}/{}", policy.namespace, policy.name)
}

/// `global.domain` is the control plane's to set (ADR 0009): the service looks the
/// policy up by it, so an author's value could only break the match.
fn set_global_domain(config: &mut Value, policy: &Policy) {
    let Some(object) = config.as_object_mut() else {
        return;
    };
    let global = object
        .entry("global")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(global) = global.as_object_mut() {
        global.insert("domain".into(), Value::from(global_domain(policy)));
    }
}

/// Replica `index` of `count`'s share of `total`.
pub fn share(total: u64, replica: Replica) -> u64 {
    let count = u64::try_from(replica.count.max(1)).unwrap_or(1);
    let index = u64::try_from(replica.index).unwrap_or(0);
    total / count + u64::from(index < total % count)
}

/// Splits `rules[].limit.requests` and `.burst`. A share of 0 (a limit smaller than the
/// replica count) becomes 1: a rule cannot admit nothing, so the sum then exceeds the
/// figure by at most the number of replicas — logged by the caller via the status.
fn split_limits(config: &mut Value, replica: Replica) {
    let Some(rules) = config.get_mut("rules").and_then(Value::as_array_mut) else {
        return;
    };
    for rule in rules {
        let Some(limit) = rule.get_mut("limit").and_then(Value::as_object_mut) else {
            continue;
        };
        for field in ["requests", "burst"] {
            if let Some(total) = limit.get(field).and_then(Value::as_u64) {
                limit.insert(field.into(), Value::from(share(total, replica).max(1)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Selector;
    use serde_json::json;

    fn policy(name: &str, selector: Selector, scope: Scope, config: Value) -> Policy {
        Policy {
            kind: Kind::RateLimit,
            namespace: "shop".into(),
            name: name.into(),
            selector,
            scope,
            config,
            source: format!("{name}.yaml"),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Selector {
        Selector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workloads: vec![],
        }
    }

    fn orders() -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "orders".into(),
            labels: [
                ("app".to_string(), "orders".to_string()),
                ("tier".to_string(), "api".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn a_global_policy_carries_its_domain_and_is_not_split() {
        let global = policy(
            "orders-limit",
            labels(&[("app", "orders")]),
            Scope::Global,
            json!({"global": {"domain": "mine", "timeout": "50ms"}, "rules": [{"name": "r", "limit": {"requests": 10}}]}),
        );
        let config = filter_config(
            &[global],
            Kind::RateLimit,
            &orders(),
            Replica { index: 1, count: 3 },
        );
        assert_eq!(
            config,
            json!({"global": {"domain": "shop/orders-limit", "timeout": "50ms"}, "rules": [{"name": "r", "limit": {"requests": 10}}]})
        );
    }

    #[test]
    fn the_most_specific_policy_wins_and_ties_go_to_the_first_name() {
        let policies = vec![
            policy(
                "b-default",
                Selector::default(),
                Scope::PerReplica,
                json!({"n": 1}),
            ),
            policy(
                "z-app",
                labels(&[("app", "orders")]),
                Scope::PerReplica,
                json!({"n": 2}),
            ),
            policy(
                "a-app",
                labels(&[("app", "orders")]),
                Scope::PerReplica,
                json!({"n": 3}),
            ),
            policy(
                "other-ns",
                labels(&[("app", "orders"), ("tier", "api")]),
                Scope::PerReplica,
                json!({"n": 4}),
            ),
        ];
        let mut policies = policies;
        policies[3].namespace = "billing".into();
        let chosen = select(&policies, Kind::RateLimit, &orders()).unwrap();
        assert_eq!(chosen.name, "a-app");
        let named = policy(
            "named",
            Selector {
                match_labels: Default::default(),
                workloads: vec!["orders".into()],
            },
            Scope::PerReplica,
            json!({}),
        );
        policies.push(named);
        assert_eq!(
            select(&policies, Kind::RateLimit, &orders()).unwrap().name,
            "named"
        );
        assert!(select(&policies, Kind::Authz, &orders()).is_none());
        assert_eq!(
            filter_config(
                &policies,
                Kind::Authz,
                &orders(),
                Replica { index: 0, count: 1 }
            ),
            Kind::Authz.pass_through()
        );
    }

    #[test]
    fn shares_sum_to_the_figure() {
        for total in [0u64, 1, 2, 7, 10, 1001] {
            for count in 1..=7usize {
                let sum: u64 = (0..count)
                    .map(|index| share(total, Replica { index, count }))
                    .sum();
                assert_eq!(sum, total, "{total} over {count}");
            }
        }
        assert_eq!(share(7, Replica { index: 0, count: 2 }), 4);
        assert_eq!(share(7, Replica { index: 1, count: 2 }), 3);
    }

    #[test]
    fn workload_scope_splits_requests_and_burst_per_replica_scope_does_not() {
        let config = json!({"rules": [{"name": "r", "limit": {"algorithm": "tokenBucket", "requests": 11, "per": "1s", "burst": 5}}]});
        let split = vec![policy(
            "p",
            Selector::default(),
            Scope::Workload,
            config.clone(),
        )];
        let second = filter_config(
            &split,
            Kind::RateLimit,
            &orders(),
            Replica { index: 1, count: 2 },
        );
        assert_eq!(second["rules"][0]["limit"]["requests"], 5);
        assert_eq!(second["rules"][0]["limit"]["burst"], 2);
        let first = filter_config(
            &split,
            Kind::RateLimit,
            &orders(),
            Replica { index: 0, count: 2 },
        );
        assert_eq!(first["rules"][0]["limit"]["requests"], 6);
        let whole = vec![policy(
            "p",
            Selector::default(),
            Scope::PerReplica,
            config.clone(),
        )];
        assert_eq!(
            filter_config(
                &whole,
                Kind::RateLimit,
                &orders(),
                Replica { index: 1, count: 2 }
            ),
            config
        );
    }
}
