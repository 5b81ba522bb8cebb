//! Response fields for a decision: `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers-10, RFC 9651 lists of sf-strings with
//! parameters), `Retry-After`, the legacy `X-RateLimit-*` trio, and the problem+json
//! body of the 429.

use crate::config::CompiledConfig;
use crate::limiter::{Decision, Evaluation};
use meshward_filter_common::clock::NANOS_PER_SECOND;
use meshward_filter_common::duration::format_duration_nanos;
use meshward_filter_common::problem::Problem;
use meshward_filter_common::sf::{serialize_list, BareItem, Item};

pub const PROBLEM_TYPE: &str = "https://meshward.io/problems/rate-limited";

fn seconds_ceil(nanos: u64) -> i64 {
    i64::try_from(nanos.div_ceil(NANOS_PER_SECOND)).unwrap_or(i64::MAX)
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Header fields to send with the response. `limited` selects the 429 set
/// (`Retry-After` included).
pub fn response_fields(
    config: &CompiledConfig,
    decision: &Decision,
    limited: bool,
) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    let reported: Vec<(&Evaluation, &crate::config::CompiledRule)> = decision
        .enforced(config)
        .filter(|evaluation| evaluation.verdict().is_some())
        .filter_map(|evaluation| {
            config
                .rules
                .get(evaluation.rule)
                .map(|rule| (evaluation, rule))
        })
        .collect();
    let headers = &config.response_headers;
    if headers.rate_limit && !reported.is_empty() {
        let policies: Vec<Item> = reported
            .iter()
            .map(|(_, rule)| {
                Item::new(BareItem::String(rule.name.clone()))
                    .param("q", BareItem::Integer(saturating_i64(rule.limit.requests)))
                    .param("w", BareItem::Integer(seconds_ceil(rule.limit.per_nanos)))
            })
            .collect();
        let states: Vec<Item> = reported
            .iter()
            .filter_map(|(evaluation, rule)| {
                let verdict = evaluation.verdict()?;
                Some(
                    Item::new(BareItem::String(rule.name.clone()))
                        .param("r", BareItem::Integer(saturating_i64(verdict.remaining)))
                        .param("t", BareItem::Integer(seconds_ceil(verdict.reset_nanos))),
                )
            })
            .collect();
        fields.push(("ratelimit-policy", serialize_list(&policies)));
        fields.push(("ratelimit", serialize_list(&states)));
    }
    if headers.legacy {
        // The most constrained policy: the one with the fewest requests left.
        let tightest = reported
            .iter()
            .filter_map(|(evaluation, rule)| evaluation.verdict().map(|verdict| (verdict, rule)))
            .min_by_key(|(verdict, _)| {
                (
                    verdict.remaining,
                    std::cmp::Reverse(verdict.retry_after_nanos),
                )
            });
        if let Some((verdict, rule)) = tightest {
            fields.push(("x-ratelimit-limit", rule.limit.requests.to_string()));
            fields.push(("x-ratelimit-remaining", verdict.remaining.to_string()));
            fields.push((
                "x-ratelimit-reset",
                seconds_ceil(verdict.reset_nanos).to_string(),
            ));
        }
    }
    if limited {
        fields.push((
            "retry-after",
            retry_after_seconds(config, decision).to_string(),
        ));
    }
    fields
}

/// Seconds until every limiting rule admits again (at least 1).
pub fn retry_after_seconds(config: &CompiledConfig, decision: &Decision) -> i64 {
    decision
        .enforced(config)
        .filter(|evaluation| evaluation.denies())
        .filter_map(|evaluation| {
            evaluation
                .verdict()
                .map(|verdict| verdict.retry_after_nanos)
        })
        .max()
        .map_or(1, seconds_ceil)
        .max(1)
}

/// The 429 body, naming the rule that limited (the first one, in config order).
pub fn problem(config: &CompiledConfig, decision: &Decision) -> Problem {
    let retry = retry_after_seconds(config, decision);
    let detail = decision
        .enforced(config)
        .find(|evaluation| evaluation.denies())
        .and_then(|evaluation| {
            config
                .rules
                .get(evaluation.rule)
                .map(|rule| (evaluation, rule))
        })
        .map(|(evaluation, rule)| match evaluation.verdict() {
            Some(_) => format!(
                "rate limit \"{}\" exceeded ({} request{} per {}); retry after {} s",
                rule.name,
                rule.limit.requests,
                if rule.limit.requests == 1 { "" } else { "s" },
                format_duration_nanos(rule.limit.per_nanos),
                retry
            ),
            None => format!(
                "rate limit \"{}\" could not be checked and fails closed; retry after {} s",
                rule.name, retry
            ),
        })
        .unwrap_or_else(|| "rate limit exceeded".to_owned());
    Problem {
        type_uri: PROBLEM_TYPE.to_owned(),
        title: "Too Many Requests".to_owned(),
        status: 429,
        detail,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::algorithm::test_util::T0;
    use crate::config::parse;
    use crate::limiter::evaluate;
    use meshward_filter_common::request::RequestHead;
    use meshward_filter_common::store::InMemoryStore;

    fn field<'a>(fields: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn limited_reply_carries_policy_state_and_retry_after() {
        let config = parse(
            br#"{"responseHeaders":{"legacy":true},"rules":[
              {"name":"per-minute","limit":{"algorithm":"tokenBucket","requests":2,"per":"1m"}},
              {"name":"shadowed","shadow":true,"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}
            ]}"#,
        )
        .unwrap();
        let store = InMemoryStore::new();
        let request = RequestHead::new(vec![(":path".into(), "/".into())], None);
        evaluate(&config, &request, &store, T0);
        evaluate(&config, &request, &store, T0);
        let decision = evaluate(&config, &request, &store, T0);
        assert!(decision.is_limited(&config));
        let fields = response_fields(&config, &decision, true);
        assert_eq!(
            field(&fields, "ratelimit-policy"),
            Some(r#""per-minute";q=2;w=60"#),
            "shadow rules are not advertised"
        );
        assert_eq!(
            field(&fields, "ratelimit"),
            Some(r#""per-minute";r=0;t=60"#)
        );
        assert_eq!(field(&fields, "retry-after"), Some("30"));
        assert_eq!(field(&fields, "x-ratelimit-limit"), Some("2"));
        assert_eq!(field(&fields, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(field(&fields, "x-ratelimit-reset"), Some("60"));
        let body = problem(&config, &decision);
        assert_eq!(body.status, 429);
        assert_eq!(
            body.detail,
            "rate limit \"per-minute\" exceeded (2 requests per 1m); retry after 30 s"
        );
    }

    #[test]
    fn allowed_responses_have_no_retry_after_and_fields_can_be_turned_off() {
        let config = parse(br#"{"responseHeaders":{"rateLimit":false},"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":5,"per":"1s"}}]}"#).unwrap();
        let store = InMemoryStore::new();
        let decision = evaluate(&config, &RequestHead::default(), &store, T0);
        assert!(response_fields(&config, &decision, false).is_empty());
    }
}
