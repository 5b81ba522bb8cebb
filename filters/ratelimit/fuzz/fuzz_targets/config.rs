//! The rate-limit configuration loader, and the limits a loaded configuration enforces.
//!
//! Input: the JSON configuration. Properties of a configuration that loads: at most 64
//! rules with unique metric-safe names; every limit within its documented bounds (1 to
//! 10⁹ requests per 1 ms to 366 d, a burst only where the algorithm has one, GCRA's
//! burst × interval within 366 d); `fallback` only in global mode, at most 15 key parts
//! there, a domain of 1 to 320 characters and a 1 ms–10 s timeout; the sweep interval
//! 10 ms–1 h; `needsSourceAddress` exactly when a key uses the client address. Then each
//! rule's limit, on a fresh key at one instant, admits exactly its burst (token bucket,
//! GCRA) or its quota (windows) with `remaining` counting down, then denies with a
//! positive Retry-After after which a request is admitted (exactly then for the token
//! bucket, GCRA and the fixed window); and the `RateLimit`, `RateLimit-Policy`,
//! `Retry-After` fields and 429 body of those decisions are valid and say so.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::config_error::is_metric_segment;
use meshward_ratelimit::algorithm::{Algorithm, Limit};
use meshward_ratelimit::config::{self, CompiledConfig};
use meshward_ratelimit::key::KeyPart;
use meshward_ratelimit::limiter::{Decision, Evaluation, Outcome};
use meshward_ratelimit_fuzz::check_fields;

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SECOND;
const MAX_WINDOW: u64 = 366 * 86_400 * SECOND;
/// Requests simulated per input, at most (the rest of the rules are only validated).
const BUDGET: u64 = 20_000;

fn check_compiled(config: &CompiledConfig) {
    assert!(config.rules.len() <= 64);
    for (i, rule) in config.rules.iter().enumerate() {
        assert!(
            rule.name.len() <= 64 && is_metric_segment(&rule.name),
            "{:?}",
            rule.name
        );
        assert!(config.rules.iter().take(i).all(|r| r.name != rule.name));
        for limit in std::iter::once(&rule.limit).chain(&rule.fallback) {
            check_limit(limit);
        }
        assert!(rule.table.pages() >= 1);
        if config.global.is_none() {
            assert!(rule.fallback.is_none());
        } else {
            assert!(rule.key.len() <= 15);
        }
    }
    if let Some(global) = &config.global {
        assert!((1..=320).contains(&global.domain.len()));
        assert!(!global.cluster.is_empty());
        assert!((1_000_000..=10 * SECOND).contains(&global.timeout_nanos));
    }
    assert!((10_000_000..=3600 * SECOND).contains(&config.sweep_interval_nanos));
    assert!(config.cas_retries <= 1000);
    let uses_address = config.rules.iter().any(|rule| {
        rule.key.iter().any(|part| {
            matches!(
                part,
                KeyPart::ConnectionAddress | KeyPart::ForwardedFor { .. }
            )
        })
    });
    assert_eq!(config.needs_source_address, uses_address);
}

fn check_limit(limit: &Limit) {
    assert!((1..=1_000_000_000).contains(&limit.requests));
    assert!((1_000_000..=MAX_WINDOW).contains(&limit.per_nanos));
    assert!((1..=1_000_000_000).contains(&limit.burst));
    match limit.algorithm {
        Algorithm::SlidingWindow | Algorithm::FixedWindow => {
            assert_eq!(limit.burst, limit.requests)
        }
        Algorithm::Gcra => {
            assert!((limit.per_nanos / limit.requests).saturating_mul(limit.burst) <= MAX_WINDOW)
        }
        Algorithm::TokenBucket => {}
    }
}

/// Back-to-back requests on a fresh key at `now`: the evaluations of the last admitted
/// one and of the first denied one.
fn exhaust(limit: &Limit, now: u64) -> (Outcome, Outcome) {
    let expected = limit.burst;
    let mut state = None;
    let mut last_allowed = None;
    for k in 1..=expected {
        let verdict = limit.check(state, now);
        assert!(
            verdict.allowed,
            "request {k} of {expected} refused: {limit:?}"
        );
        assert_eq!(verdict.remaining, expected - k, "{limit:?}");
        assert_eq!(verdict.retry_after_nanos, 0);
        state = Some(verdict.next.expect("an admission is stored"));
        last_allowed = Some(verdict);
    }
    let denied = limit.check(state, now);
    assert!(
        !denied.allowed,
        "request {} admitted: {limit:?}",
        expected + 1
    );
    assert_eq!((denied.next, denied.remaining), (None, 0));
    let wait = denied.retry_after_nanos;
    assert!(wait > 0, "{limit:?}");
    let later = now.checked_add(wait).expect("Retry-After within the clock");
    assert!(
        limit.check(state, later).allowed,
        "refused after Retry-After ({wait} ns): {limit:?}"
    );
    if limit.algorithm != Algorithm::SlidingWindow {
        assert!(
            !limit.check(state, later - 1).allowed,
            "admitted 1 ns before Retry-After ({wait} ns): {limit:?}"
        );
    }
    (
        Outcome::Allowed(last_allowed.expect("a burst of at least one")),
        Outcome::Limited(denied),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(config) = config::parse(data) else {
        return;
    };
    check_compiled(&config);

    let mut budget = BUDGET;
    let mut allowed = Vec::new();
    let mut limited = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        if rule.limit.burst > budget {
            continue;
        }
        budget -= rule.limit.burst;
        // A different phase in the window for each rule.
        let now = T0 + (index as u64) * 7_919_000_003;
        let (last, denied) = exhaust(&rule.limit, now);
        let evaluation = |outcome| Evaluation {
            rule: index,
            outcome,
            evicted: false,
            key: "fuzz".into(),
        };
        allowed.push(evaluation(last));
        limited.push(evaluation(denied));
    }
    check_fields(
        &config,
        &Decision {
            evaluations: allowed,
        },
    );
    check_fields(
        &config,
        &Decision {
            evaluations: limited,
        },
    );
});
