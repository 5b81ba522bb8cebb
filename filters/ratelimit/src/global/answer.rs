//! The service's answer — or its failure — as a [`Decision`], the same value the local
//! mode produces, so the 429, the `RateLimit` fields and the metrics are shared.
//!
//! Per rule: the descriptor's status (`OVER_LIMIT` limits; remaining and reset from the
//! status). On a failed or timed-out call, a rule with a `fallback` limit is charged
//! locally (per sidecar) with it; one without follows its `failureMode` (default:
//! `global.failureMode`).

use super::messages::{RateLimitResponse, CODE_OVER_LIMIT};
use super::request::Planned;
use crate::algorithm::Verdict;
use crate::config::{CompiledConfig, FailureMode};
use crate::limiter::{Decision, Evaluation, Outcome};
use meshward_filter_common::clock::NANOS_PER_SECOND;
use meshward_filter_common::matcher::{is_field_value, is_http_token};
use meshward_filter_common::store::SharedStore;

/// The decision the service's answer gives.
pub fn decide(
    config: &CompiledConfig,
    planned: &[Planned],
    response: &RateLimitResponse,
) -> Decision {
    let evaluations = planned
        .iter()
        .enumerate()
        .map(|(index, planned)| {
            let status = response.statuses.get(index);
            let code = status.map_or(response.overall_code, |s| s.code);
            let reset_nanos = status
                .and_then(|s| s.duration_until_reset)
                .map_or(0, |d| d.as_nanos());
            let limited = code == CODE_OVER_LIMIT;
            let retry_after_nanos = if limited {
                // Without a reset from the service: the time one request's quota takes
                // to come back under the rule's own limit.
                let one_request = config
                    .rules
                    .get(planned.rule)
                    .map_or(NANOS_PER_SECOND, |rule| {
                        rule.limit.per_nanos / rule.limit.requests.max(1)
                    });
                if reset_nanos > 0 {
                    reset_nanos
                } else {
                    one_request
                }
            } else {
                0
            };
            let verdict = Verdict {
                allowed: !limited,
                next: None,
                remaining: status.map_or(0, |s| u64::from(s.limit_remaining)),
                reset_nanos,
                retry_after_nanos,
            };
            Evaluation {
                rule: planned.rule,
                outcome: if limited {
                    Outcome::Limited(verdict)
                } else {
                    Outcome::Allowed(verdict)
                },
                evicted: false,
                key: planned.key.display.clone(),
            }
        })
        .collect();
    Decision { evaluations }
}

/// The decision when the call failed (`error` says why): fallback limits charged
/// locally, the other rules by `failureMode`. Also returns how many rules fell back.
pub fn on_failure(
    config: &CompiledConfig,
    planned: &[Planned],
    store: &dyn SharedStore,
    now: u64,
    error: &str,
) -> (Decision, usize) {
    let mut fell_back = 0;
    let evaluations = planned
        .iter()
        .filter_map(|planned| {
            let rule = config.rules.get(planned.rule)?;
            let (outcome, evicted) = match &rule.fallback {
                Some(limit) => {
                    fell_back += 1;
                    match rule.table.charge(
                        store,
                        &planned.key.digest,
                        limit,
                        now,
                        config.cas_retries,
                    ) {
                        Ok(charge) if charge.verdict.allowed => {
                            (Outcome::Allowed(charge.verdict), charge.evicted)
                        }
                        Ok(charge) => (Outcome::Limited(charge.verdict), charge.evicted),
                        Err(err) => (
                            Outcome::StoreFailed {
                                error: format!("{error}; fallback: {err}"),
                                allowed: rule.failure_mode == FailureMode::Allow,
                            },
                            false,
                        ),
                    }
                }
                None => (
                    Outcome::StoreFailed {
                        error: error.to_owned(),
                        allowed: rule.failure_mode == FailureMode::Allow,
                    },
                    false,
                ),
            };
            Some(Evaluation {
                rule: planned.rule,
                outcome,
                evicted,
                key: planned.key.display.clone(),
            })
        })
        .collect();
    (Decision { evaluations }, fell_back)
}

/// The service's `response_headers_to_add`, for the reply (and allowed responses when
/// `responseHeaders.onAllowed`). Only valid fields are passed on: a name that is an
/// RFC 9110 token (no pseudo-headers), a value without control characters (tab
/// allowed) — the service's bytes never reach Envoy's codec unchecked.
pub fn added_headers(response: &RateLimitResponse) -> Vec<(String, String)> {
    response
        .response_headers_to_add
        .iter()
        .filter(|h| is_http_token(&h.key))
        .filter_map(|h| Some((h.key.to_ascii_lowercase(), h.text()?)))
        .filter(|(_, value)| is_field_value(value))
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::messages::{DescriptorStatus, HeaderValue, ProtoDuration, CODE_OK};
    use super::super::request::plan;
    use super::*;
    use crate::algorithm::test_util::T0;
    use crate::config::{parse, GlobalConfig};
    use crate::headers::response_fields;
    use meshward_filter_common::request::RequestHead;
    use meshward_filter_common::store::InMemoryStore;

    const CONFIG: &[u8] = br#"{"global":{"domain":"shop/orders","failureMode":"deny"},"rules":[
      {"name":"per-client","key":[{"type":"clientAddress"}],"limit":{"algorithm":"tokenBucket","requests":10,"per":"1m"},
       "fallback":{"algorithm":"tokenBucket","requests":1,"per":"1h"}},
      {"name":"all","limit":{"algorithm":"gcra","requests":100,"per":"1s"}},
      {"name":"dry","shadow":true,"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}
    ]}"#;

    fn planned() -> (CompiledConfig, GlobalConfig, Vec<Planned>) {
        let config = parse(CONFIG).unwrap();
        let global = config.global.clone().unwrap();
        let request = RequestHead::new(
            vec![(":path".into(), "/".into())],
            Some("192.0.2.1:1".into()),
        );
        let (planned, _) = plan(&config, &global, &request).unwrap();
        (config, global, planned)
    }

    fn status(code: i32, remaining: u32, reset_secs: i64) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: None,
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration {
                seconds: reset_secs,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn over_limit_limits_and_fills_the_fields() {
        let (config, _, planned) = planned();
        let response = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![
                status(CODE_OVER_LIMIT, 0, 42),
                status(CODE_OK, 99, 1),
                status(CODE_OVER_LIMIT, 0, 1),
            ],
            response_headers_to_add: vec![HeaderValue {
                key: "X-From-RLS".into(),
                value: "yes".into(),
                raw_value: vec![],
            }],
        };
        let decision = decide(&config, &planned, &response);
        assert!(decision.is_limited(&config));
        let fields = response_fields(&config, &decision, true);
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("ratelimit-policy").as_deref(),
            Some(r#""per-client";q=10;w=60, "all";q=100;w=1"#)
        );
        assert_eq!(
            get("ratelimit").as_deref(),
            Some(r#""per-client";r=0;t=42, "all";r=99;t=1"#)
        );
        assert_eq!(get("retry-after").as_deref(), Some("42"));
        assert_eq!(
            added_headers(&response),
            [("x-from-rls".to_string(), "yes".to_string())]
        );
    }

    #[test]
    fn a_shadow_rule_over_limit_never_limits() {
        let (config, _, planned) = planned();
        let response = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![
                status(CODE_OK, 5, 1),
                status(CODE_OK, 5, 1),
                status(CODE_OVER_LIMIT, 0, 1),
            ],
            response_headers_to_add: vec![],
        };
        let decision = decide(&config, &planned, &response);
        assert!(!decision.is_limited(&config));
        assert!(matches!(
            decision.evaluations[2].outcome,
            Outcome::Limited(_)
        ));
    }

    #[test]
    fn a_failure_uses_the_fallback_limit_or_the_failure_mode() {
        let (config, _, planned) = planned();
        let store = InMemoryStore::new();
        for rule in &config.rules {
            rule.table.prepare(&store).unwrap();
        }
        let (first, fell_back) = on_failure(&config, &planned, &store, T0, "timeout");
        assert_eq!(fell_back, 1);
        // `per-client` falls back to 1/h and admits once; `all` has no fallback and
        // `failureMode: deny` closes it.
        assert!(matches!(first.evaluations[0].outcome, Outcome::Allowed(_)));
        assert!(matches!(
            first.evaluations[1].outcome,
            Outcome::StoreFailed { allowed: false, .. }
        ));
        assert!(first.is_limited(&config));
        let (second, _) = on_failure(&config, &planned, &store, T0, "timeout");
        assert!(matches!(second.evaluations[0].outcome, Outcome::Limited(_)));
    }

    #[test]
    fn a_rules_own_failure_mode_overrides_the_global_default() {
        let config = parse(
            br#"{"global":{"domain":"d","failureMode":"deny"},"rules":[
              {"name":"open","failureMode":"allow","limit":{"algorithm":"gcra","requests":1,"per":"1s"}},
              {"name":"closed","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
        )
        .unwrap();
        let global = config.global.clone().unwrap();
        let request = RequestHead::new(vec![(":path".into(), "/".into())], None);
        let (planned, _) = plan(&config, &global, &request).unwrap();
        let (decision, _) = on_failure(&config, &planned, &InMemoryStore::new(), T0, "down");
        assert!(matches!(
            decision.evaluations[0].outcome,
            Outcome::StoreFailed { allowed: true, .. }
        ));
        assert!(matches!(
            decision.evaluations[1].outcome,
            Outcome::StoreFailed { allowed: false, .. }
        ));
    }

    /// Found by the `rls_answer` fuzz target (fuzz/regressions/rls_answer): header
    /// names from the service were passed on unchecked, control characters and NUL
    /// included.
    #[test]
    fn only_valid_header_fields_from_the_service_are_added() {
        use prost::Message;
        let crasher =
            include_bytes!("../../fuzz/regressions/rls_answer/header-name-with-control-characters");
        let response = RateLimitResponse::decode(&crasher[..]).unwrap();
        assert!(!response.response_headers_to_add.is_empty());
        assert_eq!(added_headers(&response), []);
        let header = |key: &str, value: &str| HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: vec![],
        };
        let response = RateLimitResponse {
            overall_code: CODE_OK,
            statuses: vec![],
            response_headers_to_add: vec![
                header("X-Ok", "tab\tinside"),
                header("bad name", "v"),
                header(":status", "200"),
                header("", "v"),
                header("x-nul", "a\0b"),
                header("x-del", "a\u{7f}"),
                header("x-split", "a\r\nx-injected: 1"),
                HeaderValue {
                    key: "x-raw".into(),
                    value: String::new(),
                    raw_value: b"raw".to_vec(),
                },
            ],
        };
        assert_eq!(
            added_headers(&response),
            [
                ("x-ok".to_string(), "tab\tinside".to_string()),
                ("x-raw".to_string(), "raw".to_string())
            ]
        );
    }

    #[test]
    fn a_response_without_statuses_follows_the_overall_code() {
        let (config, _, planned) = planned();
        let response = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![],
            response_headers_to_add: vec![],
        };
        let decision = decide(&config, &planned, &response);
        assert!(decision.is_limited(&config));
        assert_eq!(
            decision.evaluations[1].verdict().unwrap().retry_after_nanos,
            10_000_000,
            "1 s / 100"
        );
    }
}
