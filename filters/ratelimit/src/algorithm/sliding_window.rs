//! Sliding-window counter (the approximation popularised by Cloudflare): the count of
//! the previous fixed window is weighted by how much of it still overlaps the sliding
//! window. State: `a` = index of the current fixed window, `b` = previous window's
//! count, `c` = current window's count. Only admitted requests are counted, so a
//! client that backs off recovers.

use super::{Limit, State, Verdict};

struct Window {
    previous: u64,
    current: u64,
    index: u64,
    /// Nanoseconds elapsed inside the current fixed window.
    elapsed: u64,
}

fn window_at(limit: &Limit, state: Option<State>, now: u64) -> Window {
    let width = limit.per_nanos;
    let index = now / width;
    let elapsed = now % width;
    match state {
        Some(State { a, b, c }) if a == index => Window {
            previous: b,
            current: c,
            index,
            elapsed,
        },
        Some(State { a, c, .. }) if a.checked_add(1) == Some(index) => Window {
            previous: c,
            current: 0,
            index,
            elapsed,
        },
        // Clock stepped backwards: stay in the stored window, at its start.
        Some(State { a, b, c }) if a > index => Window {
            previous: b,
            current: c,
            index: a,
            elapsed: 0,
        },
        _ => Window {
            previous: 0,
            current: 0,
            index,
            elapsed,
        },
    }
}

/// The window's estimated request count times the window width (kept scaled so the
/// arithmetic stays exact).
fn weighted(limit: &Limit, window: &Window, current: u64) -> u128 {
    let width = u128::from(limit.per_nanos);
    u128::from(window.previous) * (width - u128::from(window.elapsed)) + u128::from(current) * width
}

/// The estimate as a number of requests, for logs and tests.
pub fn estimate(limit: &Limit, state: Option<State>, now: u64) -> f64 {
    let window = window_at(limit, state, now);
    weighted(limit, &window, window.current) as f64 / limit.per_nanos as f64
}

pub(super) fn check(limit: &Limit, state: Option<State>, now: u64) -> Verdict {
    let window = window_at(limit, state, now);
    let width = u128::from(limit.per_nanos);
    let budget = u128::from(limit.requests) * width;
    let until_window_end = limit.per_nanos - window.elapsed;
    let after = weighted(limit, &window, window.current.saturating_add(1));
    if after <= budget {
        let remaining = u64::try_from((budget - after) / width).unwrap_or(u64::MAX);
        Verdict {
            allowed: true,
            next: Some(State {
                a: window.index,
                b: window.previous,
                c: window.current + 1,
            }),
            remaining,
            reset_nanos: until_window_end,
            retry_after_nanos: 0,
        }
    } else {
        Verdict {
            allowed: false,
            next: None,
            remaining: 0,
            reset_nanos: until_window_end,
            retry_after_nanos: retry_after(limit, &window),
        }
    }
}

/// Earliest time at which one more request fits: later in this window if the previous
/// window's weight decays enough, otherwise in the next window as this window's count
/// decays.
fn retry_after(limit: &Limit, window: &Window) -> u64 {
    let width = u128::from(limit.per_nanos);
    let elapsed = u128::from(window.elapsed);
    let requests = u128::from(limit.requests);
    // Need: previous * (width - t) + (current + 1) * width <= requests * width.
    let spare_now = requests.checked_sub(u128::from(window.current) + 1);
    if let Some(spare) = spare_now {
        if window.previous > 0 {
            let previous = u128::from(window.previous);
            // t >= width - spare * width / previous
            let wait_until = width.saturating_sub((spare * width) / previous);
            if wait_until < width {
                return u64::try_from(wait_until.saturating_sub(elapsed).max(1))
                    .unwrap_or(u64::MAX);
            }
        }
    }
    // Next window: current * (width - t) + width <= requests * width.
    let to_boundary = width - elapsed;
    let current = u128::from(window.current);
    let spare_next = requests.saturating_sub(1);
    let t = (spare_next * width)
        .checked_div(current)
        .map_or(0, |fits| width.saturating_sub(fits));
    u64::try_from(to_boundary + t).unwrap_or(u64::MAX)
}

pub(super) fn is_idle(limit: &Limit, state: State, now: u64) -> bool {
    let index = now / limit.per_nanos;
    let both_expired = state.a.saturating_add(2) <= index;
    let current_expired_and_empty = state.a.saturating_add(1) == index && state.c == 0;
    both_expired || current_expired_and_empty || (state.b == 0 && state.c == 0)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::test_util::*;
    use super::super::Algorithm;
    use super::*;

    /// Window-aligned start so "15 s into the window" is exact.
    const START: u64 = (T0 / (60 * SECOND)) * 60 * SECOND;

    #[test]
    fn worked_example_previous_42_current_18_at_15_of_60_seconds() {
        let limit = limit(Algorithm::SlidingWindow, 100, 60, 100);
        let index = START / (60 * SECOND);
        let state = Some(State {
            a: index,
            b: 42,
            c: 18,
        });
        let estimate = estimate(&limit, state, START + 15 * SECOND);
        assert!((estimate - 49.5).abs() < 1e-9, "estimate was {estimate}");
        // 42 * 45/60 + 18 + 1 = 50.5 <= 100: admitted with 49 left.
        let verdict = limit.check(state, START + 15 * SECOND);
        assert!(verdict.allowed);
        assert_eq!(verdict.remaining, 49);
        assert_eq!(verdict.reset_nanos, 45 * SECOND);
    }

    #[test]
    fn limit_is_enforced_within_a_window_and_decays_across() {
        let limit = limit(Algorithm::SlidingWindow, 10, 60, 10);
        let mut state = None;
        assert_eq!(admit(&limit, &mut state, START, 15), 10);
        // Next window, 30 s in: previous 10 weighted 0.5 → 5; five more fit.
        assert_eq!(admit(&limit, &mut state, START + 90 * SECOND, 8), 5);
        // Two windows later everything has expired.
        assert_eq!(admit(&limit, &mut state, START + 240 * SECOND, 12), 10);
    }

    #[test]
    fn retry_after_points_at_the_first_admissible_instant() {
        let limit = limit(Algorithm::SlidingWindow, 10, 60, 10);
        let mut state = None;
        admit(&limit, &mut state, START, 10);
        let denied = limit.check(state, START + 10 * SECOND);
        assert!(!denied.allowed);
        // Next window starts in 50 s; at t into it, 10 * (60 - t)/60 + 1 <= 10 ⇒ t >= 6 s.
        assert_eq!(denied.retry_after_nanos, 56 * SECOND);
        let at = START + 10 * SECOND + denied.retry_after_nanos;
        assert!(limit.check(state, at).allowed);
        assert!(!limit.check(state, at - 1).allowed);
    }

    #[test]
    fn idle_after_two_windows() {
        let limit = limit(Algorithm::SlidingWindow, 10, 60, 10);
        let state = limit.check(None, START).next.unwrap();
        assert!(!limit.is_idle(state, START + 61 * SECOND));
        assert!(limit.is_idle(state, START + 120 * SECOND));
    }
}
