//! A rule's `limit` as the rate-limit service enforces it: the same JSON and bounds as
//! the rate-limit filter (filters/ratelimit/src/config.rs, README "Limit"), durations
//! parsed by the filter's own parser.

use meshward_filter_common::duration::parse_duration_nanos;
use serde::Deserialize;
use serde_json::Value;

const MIN_WINDOW_NANOS: u64 = 1_000_000;
const MAX_WINDOW_NANOS: u64 = 366 * 86_400 * 1_000_000_000;
const MAX_REQUESTS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Capacity `burst`, refilled continuously at `requests` per `per`. Also `gcra`
    /// (the same admission, kept as a timestamp by the filter).
    TokenBucket,
    /// Previous and current fixed-window counts, the previous one weighted by its
    /// remaining overlap with the sliding window.
    SlidingWindow,
    /// At most `requests` per aligned window of `per` (window index and count in a hash, PEXPIRE).
    FixedWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub algorithm: Algorithm,
    pub requests: u64,
    /// The window, in microseconds (the scripts' time unit: Redis `TIME`), rounded up.
    pub per_micros: u64,
    /// Token-bucket capacity; `requests` for the windows.
    pub burst: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LimitJson {
    algorithm: String,
    requests: u64,
    per: String,
    burst: Option<u64>,
}

impl Limit {
    /// Parses `rules[].limit`; the error names the field.
    pub fn parse(limit: &Value) -> Result<Limit, String> {
        let json: LimitJson = serde_json::from_value(limit.clone()).map_err(|e| e.to_string())?;
        let algorithm = match json.algorithm.as_str() {
            "tokenBucket" | "gcra" => Algorithm::TokenBucket,
            "slidingWindow" => Algorithm::SlidingWindow,
            "fixedWindow" => Algorithm::FixedWindow,
            other => {
                return Err(format!(
                "algorithm: expected tokenBucket, slidingWindow, gcra or fixedWindow, got {other:?}"
            ))
            }
        };
        let per_nanos = parse_duration_nanos(&json.per).map_err(|e| format!("per: {e}"))?;
        if !(MIN_WINDOW_NANOS..=MAX_WINDOW_NANOS).contains(&per_nanos) {
            return Err("per: expected 1ms to 366d".into());
        }
        if json.requests == 0 || json.requests > MAX_REQUESTS {
            return Err(format!(
                "requests: expected 1 to {MAX_REQUESTS}, got {}",
                json.requests
            ));
        }
        let burst = match (algorithm, json.burst) {
            (Algorithm::TokenBucket, Some(burst)) if (1..=MAX_REQUESTS).contains(&burst) => burst,
            (Algorithm::TokenBucket, Some(burst)) => {
                return Err(format!("burst: expected 1 to {MAX_REQUESTS}, got {burst}"))
            }
            (_, Some(_)) => return Err("burst: a window has no burst".into()),
            (_, None) => json.requests,
        };
        Ok(Limit {
            algorithm,
            requests: json.requests,
            per_micros: per_nanos.div_ceil(1000),
            burst,
        })
    }

    /// `current_limit` of the answer: Envoy's RLS speaks in requests per second, minute,
    /// hour or day; other windows have no unit (and no `current_limit`).
    pub fn unit(&self) -> Option<Unit> {
        const SECOND: u64 = 1_000_000;
        match self.per_micros {
            SECOND => Some(Unit::Second),
            p if p == 60 * SECOND => Some(Unit::Minute),
            p if p == 3600 * SECOND => Some(Unit::Hour),
            p if p == 86_400 * SECOND => Some(Unit::Day),
            p if p == 7 * 86_400 * SECOND => Some(Unit::Week),
            _ => None,
        }
    }
}

pub use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_parse_like_the_filter() {
        let limit =
            Limit::parse(&json!({"algorithm": "tokenBucket", "requests": 100, "per": "1m"}))
                .unwrap();
        assert_eq!(
            limit,
            Limit {
                algorithm: Algorithm::TokenBucket,
                requests: 100,
                per_micros: 60_000_000,
                burst: 100
            }
        );
        assert_eq!(limit.unit(), Some(Unit::Minute));
        let gcra =
            Limit::parse(&json!({"algorithm": "gcra", "requests": 10, "per": "1s", "burst": 3}))
                .unwrap();
        assert_eq!((gcra.algorithm, gcra.burst), (Algorithm::TokenBucket, 3));
        let window =
            Limit::parse(&json!({"algorithm": "slidingWindow", "requests": 5, "per": "1500ms"}))
                .unwrap();
        assert_eq!((window.per_micros, window.unit()), (1_500_000, None));
        assert_eq!(
            Limit::parse(&json!({"algorithm": "fixedWindow", "requests": 5, "per": "1h"}))
                .unwrap()
                .unit(),
            Some(Unit::Hour)
        );
    }

    #[test]
    fn bad_limits_are_refused_with_the_field() {
        for (limit, field) in [
            (
                json!({"algorithm": "leaky", "requests": 1, "per": "1s"}),
                "algorithm",
            ),
            (
                json!({"algorithm": "tokenBucket", "requests": 0, "per": "1s"}),
                "requests",
            ),
            (
                json!({"algorithm": "tokenBucket", "requests": 1, "per": "1us"}),
                "per",
            ),
            (
                json!({"algorithm": "tokenBucket", "requests": 1, "per": "1"}),
                "per",
            ),
            (
                json!({"algorithm": "slidingWindow", "requests": 1, "per": "1s", "burst": 2}),
                "burst",
            ),
            (
                json!({"algorithm": "tokenBucket", "requests": 1, "per": "1s", "burst": 0}),
                "burst",
            ),
            (
                json!({"algorithm": "tokenBucket", "requests": 1, "per": "1s", "extra": 0}),
                "extra",
            ),
        ] {
            let err = Limit::parse(&limit).unwrap_err();
            assert!(err.contains(field), "{limit}: {err}");
        }
    }
}
