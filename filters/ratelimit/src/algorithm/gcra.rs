//! GCRA (generic cell rate algorithm, virtual scheduling form): the leaky bucket with
//! no drip process. State: `a` = theoretical arrival time (TAT) of the next request.
//! Emission interval T = per / requests; `burst` requests may arrive back to back.

use super::{Limit, State, Verdict};

fn emission_interval(limit: &Limit) -> u64 {
    (limit.per_nanos / limit.requests.max(1)).max(1)
}

pub(super) fn check(limit: &Limit, state: Option<State>, now: u64) -> Verdict {
    let interval = emission_interval(limit);
    // The whole burst spans `burst * T`: a request is admitted while the new TAT stays
    // within that span ahead of now.
    let span = interval.saturating_mul(limit.burst);
    let tat = state.map_or(now, |s| s.a.max(now));
    let new_tat = tat.saturating_add(interval);
    let allow_at = new_tat.saturating_sub(span);
    if now >= allow_at {
        let ahead = new_tat - now;
        Verdict {
            allowed: true,
            next: Some(State {
                a: new_tat,
                b: 0,
                c: 0,
            }),
            remaining: span.saturating_sub(ahead) / interval,
            reset_nanos: ahead,
            retry_after_nanos: 0,
        }
    } else {
        Verdict {
            allowed: false,
            next: None,
            remaining: 0,
            reset_nanos: tat - now,
            retry_after_nanos: allow_at - now,
        }
    }
}

pub(super) fn is_idle(state: State, now: u64) -> bool {
    state.a <= now
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::test_util::*;
    use super::super::Algorithm;

    #[test]
    fn burst_is_admitted_back_to_back_then_one_per_interval() {
        // 10 per second (T = 100 ms), burst 5.
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, T0, 7), 5);
        assert_eq!(admit(&limit, &mut state, T0 + 50 * MILLI, 1), 0);
        assert_eq!(admit(&limit, &mut state, T0 + 100 * MILLI, 2), 1);
        assert_eq!(admit(&limit, &mut state, T0 + 200 * MILLI, 2), 1);
    }

    #[test]
    fn retry_after_is_the_exact_wait_for_the_next_cell() {
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        let mut state = None;
        admit(&limit, &mut state, T0, 5);
        let denied = limit.check(state, T0 + 30 * MILLI);
        assert!(!denied.allowed);
        assert_eq!(denied.next, None);
        assert_eq!(denied.retry_after_nanos, 70 * MILLI);
        // The TAT is 500 ms ahead: that long until the full burst is back.
        assert_eq!(denied.reset_nanos, 470 * MILLI);
        assert!(limit.check(state, T0 + 100 * MILLI).allowed);
        assert!(!limit.check(state, T0 + 100 * MILLI - 1).allowed);
    }

    #[test]
    fn remaining_counts_down_through_the_burst() {
        let limit = limit(Algorithm::Gcra, 10, 1, 3);
        let first = limit.check(None, T0);
        assert_eq!((first.allowed, first.remaining), (true, 2));
        let second = limit.check(first.next, T0);
        assert_eq!((second.allowed, second.remaining), (true, 1));
        let third = limit.check(second.next, T0);
        assert_eq!((third.allowed, third.remaining), (true, 0));
        assert_eq!(third.reset_nanos, 300 * MILLI);
    }

    #[test]
    fn burst_of_one_is_a_strict_pace() {
        let limit = limit(Algorithm::Gcra, 2, 1, 1);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, T0, 3), 1);
        assert_eq!(admit(&limit, &mut state, T0 + 499 * MILLI, 1), 0);
        assert_eq!(admit(&limit, &mut state, T0 + 500 * MILLI, 1), 1);
    }

    #[test]
    fn idle_when_tat_has_passed() {
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        let state = limit.check(None, T0).next.unwrap();
        assert!(!limit.is_idle(state, T0 + 99 * MILLI));
        assert!(limit.is_idle(state, T0 + 100 * MILLI));
    }
}
