//! Fixed window: at most `requests` per window of `per`, windows aligned to multiples of
//! `per` since the epoch (so every replica and the rate-limit service agree on window
//! boundaries). Simple and cheap; allows up to 2 × `requests` around a boundary — use
//! the sliding window when that matters. State: `a` = window index, `b` = admitted count.

use super::{Limit, State, Verdict};

pub fn check(limit: &Limit, state: Option<State>, now: u64) -> Verdict {
    let width = limit.per_nanos.max(1);
    let mut index = now / width;
    let count = match state {
        Some(State { a, b, .. }) if a == index => b,
        // Clock stepped backwards: stay in the stored window.
        Some(State { a, b, .. }) if a > index => {
            index = a;
            b
        }
        _ => 0,
    };
    let window_end = index.saturating_add(1).saturating_mul(width);
    let reset_nanos = window_end.saturating_sub(now);
    if count < limit.requests {
        let admitted = count + 1;
        Verdict {
            allowed: true,
            next: Some(State {
                a: index,
                b: admitted,
                c: 0,
            }),
            remaining: limit.requests - admitted,
            reset_nanos,
            retry_after_nanos: 0,
        }
    } else {
        Verdict {
            allowed: false,
            next: None,
            remaining: 0,
            reset_nanos,
            retry_after_nanos: reset_nanos.max(1),
        }
    }
}

/// A key whose window has ended is the same as a fresh one.
pub fn is_idle(limit: &Limit, state: State, now: u64) -> bool {
    state.a < now / limit.per_nanos.max(1)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::test_util::{admit, limit, SECOND, T0};
    use super::super::Algorithm;
    use super::*;

    #[test]
    fn admits_the_quota_per_aligned_window() {
        let limit = limit(Algorithm::FixedWindow, 3, 10, 3);
        let start = T0 - T0 % (10 * SECOND);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, start + SECOND, 5), 3);
        let denied = check(&limit, state, start + 4 * SECOND);
        assert!(!denied.allowed);
        assert_eq!(
            denied.retry_after_nanos,
            6 * SECOND,
            "until the window ends"
        );
        assert!(!is_idle(&limit, state.unwrap(), start + 9 * SECOND));
        assert!(is_idle(&limit, state.unwrap(), start + 10 * SECOND));
        assert_eq!(
            admit(&limit, &mut state, start + 10 * SECOND, 5),
            3,
            "a new window"
        );
        let verdict = check(&limit, None, start);
        assert_eq!((verdict.remaining, verdict.reset_nanos), (2, 10 * SECOND));
    }
}
