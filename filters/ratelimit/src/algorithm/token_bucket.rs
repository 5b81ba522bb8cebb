//! Token bucket with continuous refill. State: `a` = tokens in millionths (so slow
//! refill rates accumulate exactly), `b` = time of the last refill.

use super::{mul_div_ceil, mul_div_floor, Limit, State, Verdict};

const SCALE: u64 = 1_000_000;

fn refilled(limit: &Limit, state: Option<State>, now: u64) -> (u64, u64) {
    let capacity = limit.burst.saturating_mul(SCALE);
    match state {
        None => (capacity, now),
        Some(State {
            a: tokens, b: last, ..
        }) => {
            // A clock that stepped backwards refills nothing and keeps the later mark.
            let elapsed = now.saturating_sub(last);
            let added = mul_div_floor(
                elapsed,
                limit.requests.saturating_mul(SCALE),
                limit.per_nanos,
            );
            (tokens.saturating_add(added).min(capacity), now.max(last))
        }
    }
}

/// Nanoseconds to accumulate `missing` micro-tokens.
fn time_for(limit: &Limit, missing: u64) -> u64 {
    mul_div_ceil(
        missing,
        limit.per_nanos,
        limit.requests.saturating_mul(SCALE),
    )
}

pub(super) fn check(limit: &Limit, state: Option<State>, now: u64) -> Verdict {
    let capacity = limit.burst.saturating_mul(SCALE);
    let (tokens, mark) = refilled(limit, state, now);
    if tokens >= SCALE {
        let left = tokens - SCALE;
        Verdict {
            allowed: true,
            next: Some(State {
                a: left,
                b: mark,
                c: 0,
            }),
            remaining: left / SCALE,
            reset_nanos: time_for(limit, capacity - left),
            retry_after_nanos: 0,
        }
    } else {
        Verdict {
            allowed: false,
            next: None,
            remaining: 0,
            reset_nanos: time_for(limit, capacity - tokens),
            retry_after_nanos: time_for(limit, SCALE - tokens),
        }
    }
}

pub(super) fn is_idle(limit: &Limit, state: State, now: u64) -> bool {
    refilled(limit, Some(state), now).0 >= limit.burst.saturating_mul(SCALE)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::test_util::*;
    use super::super::Algorithm;

    #[test]
    fn admits_the_burst_then_refills_at_the_rate() {
        // 10 per second, capacity 5.
        let limit = limit(Algorithm::TokenBucket, 10, 1, 5);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, T0, 8), 5);
        // 100 ms buys exactly one token.
        assert_eq!(admit(&limit, &mut state, T0 + 99 * MILLI, 1), 0);
        assert_eq!(admit(&limit, &mut state, T0 + 100 * MILLI, 2), 1);
        // A long pause refills to capacity, never beyond.
        assert_eq!(admit(&limit, &mut state, T0 + 100 * SECOND, 10), 5);
    }

    #[test]
    fn reports_remaining_reset_and_retry_after() {
        let limit = limit(Algorithm::TokenBucket, 10, 1, 5);
        let first = limit.check(None, T0);
        assert!(first.allowed);
        assert_eq!(first.remaining, 4);
        assert_eq!(first.reset_nanos, 100 * MILLI, "one token short of full");
        let mut state = first.next;
        admit(&limit, &mut state, T0, 4);
        let denied = limit.check(state, T0 + 30 * MILLI);
        assert!(!denied.allowed);
        assert_eq!(denied.next, None, "a denial stores nothing");
        assert_eq!(denied.retry_after_nanos, 70 * MILLI);
        assert_eq!(denied.reset_nanos, 470 * MILLI);
    }

    #[test]
    fn slow_rates_accumulate_fractional_tokens() {
        // 1 per hour: 30 minutes twice must add up to one token.
        let limit = limit(Algorithm::TokenBucket, 1, 3600, 1);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, T0, 1), 1);
        assert_eq!(admit(&limit, &mut state, T0 + 1800 * SECOND, 1), 0);
        assert_eq!(admit(&limit, &mut state, T0 + 3600 * SECOND, 1), 1);
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let limit = limit(Algorithm::TokenBucket, 1, 1, 1);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, T0 + 10 * SECOND, 1), 1);
        assert_eq!(admit(&limit, &mut state, T0, 1), 0);
        assert_eq!(
            admit(&limit, &mut state, T0 + 10 * SECOND, 1),
            0,
            "the backwards step must not count as elapsed time"
        );
    }

    #[test]
    fn idle_once_full() {
        let limit = limit(Algorithm::TokenBucket, 10, 1, 5);
        let state = limit.check(None, T0).next.unwrap();
        assert!(!limit.is_idle(state, T0));
        assert!(limit.is_idle(state, T0 + 100 * MILLI));
    }
}
