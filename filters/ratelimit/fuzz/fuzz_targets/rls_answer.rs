//! The rate-limit service's answer (Envoy RLS v3 `RateLimitResponse`, protobuf bytes as
//! received) decoded with prost and mapped to a decision.
//!
//! Input: the response bytes; their length's parity picks one of two configurations
//! (three rules, one of them shadow; legacy fields on or off). Properties: a decoded
//! response re-encodes to one that decodes the same; the decision has one evaluation
//! per planned rule, in order, limited exactly when the rule's status (or the overall
//! code, for a missing status) is OVER_LIMIT, with the status's remaining count and
//! reset, and a Retry-After of the reset or one request's interval; the request is
//! limited exactly when an enforced (non-shadow) rule is; the response fields and 429
//! body are valid (see src/lib.rs); the headers the service asks to add have valid
//! lowercase names and values without CR, LF or NUL.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::request::RequestHead;
use meshward_ratelimit::config::{self, CompiledConfig};
use meshward_ratelimit::global::answer::{added_headers, decide};
use meshward_ratelimit::global::messages::{RateLimitResponse, CODE_OVER_LIMIT};
use meshward_ratelimit::global::request::{plan, Planned};
use meshward_ratelimit::limiter::Outcome;
use meshward_ratelimit_fuzz::check_fields;
use prost::Message;

const CONFIGS: [&str; 2] = [
    r#"{"global":{"domain":"shop/orders","failureMode":"deny"},"rules":[
      {"name":"per-client","key":[{"type":"clientAddress"}],"limit":{"algorithm":"tokenBucket","requests":10,"per":"1m"},
       "fallback":{"algorithm":"tokenBucket","requests":1,"per":"1h"}},
      {"name":"all","limit":{"algorithm":"gcra","requests":100,"per":"1s"}},
      {"name":"dry","shadow":true,"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
    r#"{"global":{"domain":"d"},"responseHeaders":{"legacy":true,"onAllowed":true},"rules":[
      {"name":"dry","shadow":true,"limit":{"algorithm":"fixedWindow","requests":5,"per":"10s"}},
      {"name":"tenant","key":[{"type":"header","name":"x-tenant"},{"type":"method"}],"limit":{"algorithm":"slidingWindow","requests":1000000000,"per":"10ms"}},
      {"name":"daily","limit":{"algorithm":"fixedWindow","requests":3,"per":"1d"}}]}"#,
];

fn planned(config: &CompiledConfig) -> Vec<Planned> {
    let global = config.global.clone().expect("global configurations");
    let request = RequestHead::new(
        vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/orders".into()),
            ("x-tenant".into(), "acme".into()),
        ],
        Some("192.0.2.1:1".into()),
    );
    let (planned, _) = plan(config, &global, &request).expect("every rule applies");
    planned
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_digit() || b.is_ascii_lowercase() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(response) = RateLimitResponse::decode(data) else {
        return;
    };
    let again = RateLimitResponse::decode(response.encode_to_vec().as_slice())
        .expect("a re-encoded response decodes");
    assert_eq!(again, response);

    let Some(json) = CONFIGS.get(data.len() % 2) else {
        return;
    };
    let config = config::parse(json.as_bytes()).expect("the fixed configurations load");
    let planned = planned(&config);
    let decision = decide(&config, &planned, &response);
    assert_eq!(decision.evaluations.len(), planned.len());
    for (index, (evaluation, planned)) in decision.evaluations.iter().zip(&planned).enumerate() {
        assert_eq!(evaluation.rule, planned.rule);
        let status = response.statuses.get(index);
        let code = status.map_or(response.overall_code, |s| s.code);
        let verdict = evaluation.verdict().expect("the service decided");
        assert_eq!(
            matches!(evaluation.outcome, Outcome::Limited(_)),
            code == CODE_OVER_LIMIT
        );
        assert_eq!(verdict.allowed, code != CODE_OVER_LIMIT);
        assert_eq!(
            verdict.remaining,
            status.map_or(0, |s| u64::from(s.limit_remaining))
        );
        let reset = status
            .and_then(|s| s.duration_until_reset)
            .map_or(0, |d| d.as_nanos());
        assert_eq!(verdict.reset_nanos, reset);
        if verdict.allowed {
            assert_eq!(verdict.retry_after_nanos, 0);
        } else if reset > 0 {
            assert_eq!(verdict.retry_after_nanos, reset);
        } else {
            let rule = config
                .rules
                .get(planned.rule)
                .expect("a planned rule exists");
            assert_eq!(
                verdict.retry_after_nanos,
                rule.limit.per_nanos / rule.limit.requests
            );
        }
    }
    let enforced_limit = decision.evaluations.iter().any(|e| {
        matches!(e.outcome, Outcome::Limited(_))
            && config.rules.get(e.rule).is_some_and(|rule| !rule.shadow)
    });
    assert_eq!(decision.is_limited(&config), enforced_limit);
    check_fields(&config, &decision);

    let added = added_headers(&response);
    assert!(added.len() <= response.response_headers_to_add.len());
    for (name, value) in &added {
        assert!(valid_name(name), "header name {name:?} from the service");
        assert!(!value.contains(['\r', '\n', '\0']), "{name}: {value:?}");
    }
});
