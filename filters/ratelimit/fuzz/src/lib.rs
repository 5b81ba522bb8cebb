//! Checks shared by the rate-limit fuzz targets: the response fields a decision gives
//! are valid RFC 9651 / HTTP and say what the decision says.

use meshward_ratelimit::config::CompiledConfig;
use meshward_ratelimit::headers::{problem, response_fields};
use meshward_ratelimit::limiter::Decision;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

fn seconds_ceil(nanos: u64) -> i64 {
    i64::try_from(nanos.div_ceil(NANOS_PER_SECOND)).unwrap_or(i64::MAX)
}

fn integer(params: &sfv::Parameters, key: &str) -> Option<i64> {
    match params.get(key) {
        Some(sfv::BareItem::Integer(n)) => Some(i64::from(*n)),
        _ => None,
    }
}

/// `(name, params)` of each member of an sf List of strings.
fn members(field: &str) -> Vec<(String, sfv::Parameters)> {
    let list = sfv::Parser::new(field)
        .parse::<sfv::List>()
        .unwrap_or_else(|err| panic!("{field:?} is not an RFC 9651 List: {err}"));
    list.into_iter()
        .map(|member| match member {
            sfv::ListEntry::Item(sfv::Item {
                bare_item: sfv::BareItem::String(name),
                params,
            }) => (name.as_str().to_owned(), params),
            other => panic!("{field:?}: a member is not a string item: {other:?}"),
        })
        .collect()
}

/// The fields (both the 429 set and the allowed set) and the 429 body of `decision`.
pub fn check_fields(config: &CompiledConfig, decision: &Decision) {
    let limited = decision.is_limited(config);
    for with_retry in [limited, true] {
        let fields = response_fields(config, decision, with_retry);
        for (i, (name, value)) in fields.iter().enumerate() {
            assert!(!value.contains(['\r', '\n', '\0']), "{name}: {value:?}");
            assert!(
                fields.iter().take(i).all(|(n, _)| n != name),
                "{name} twice"
            );
        }
        let get = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        let reported: Vec<_> = decision
            .enforced(config)
            .filter_map(|e| Some((e, e.verdict()?, config.rules.get(e.rule)?)))
            .collect();
        if let (Some(policy), Some(state)) = (get("ratelimit-policy"), get("ratelimit")) {
            let policy = members(policy);
            let state = members(state);
            assert_eq!(policy.len(), reported.len());
            assert_eq!(state.len(), reported.len());
            for (((_, verdict, rule), (p_name, p)), (s_name, s)) in
                reported.iter().zip(&policy).zip(&state)
            {
                assert_eq!((p_name, s_name), (&rule.name, &rule.name));
                let clamp = |n: i64| n.min(999_999_999_999_999);
                assert_eq!(
                    integer(p, "q"),
                    Some(clamp(
                        i64::try_from(rule.limit.requests).unwrap_or(i64::MAX)
                    ))
                );
                assert_eq!(
                    integer(p, "w"),
                    Some(clamp(seconds_ceil(rule.limit.per_nanos)))
                );
                assert_eq!(
                    integer(s, "r"),
                    Some(clamp(i64::try_from(verdict.remaining).unwrap_or(i64::MAX)))
                );
                assert_eq!(
                    integer(s, "t"),
                    Some(clamp(seconds_ceil(verdict.reset_nanos)))
                );
            }
        } else {
            assert!(reported.is_empty() || !config.response_headers.rate_limit);
        }
        match get("retry-after") {
            Some(value) => {
                assert!(with_retry);
                let seconds: i64 = value.parse().expect("Retry-After is delay-seconds");
                assert!(seconds >= 1, "{value}");
            }
            None => assert!(!with_retry),
        }
    }
    if limited {
        let body = problem(config, decision).to_json();
        let json: serde_json::Value = serde_json::from_str(&body).expect("problem+json");
        assert_eq!(json.get("status").and_then(|s| s.as_u64()), Some(429));
    }
}
