//! Bounded exponential backoff with jitter between reconnection attempts.
//!
//! Jitter matters here: when the control plane restarts, every agent of the fleet loses
//! its stream at the same instant, and without it they would all come back in lockstep.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Delays start at `initial` and double up to `max` (`max` below `initial` is
    /// raised to it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay before the next attempt: uniformly within [d/2, d] for the current
    /// step d, which then doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(random() % spread.saturating_add(1))
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A random number without a dependency: every `RandomState` is freshly keyed.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_bound_with_jitter_within_each_step() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let steps = [200u64, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for step in steps {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step);
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn reset_starts_over_and_bounds_are_sane() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));

        // max < initial: every delay is at most initial.
        let mut odd = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        for _ in 0..5 {
            assert!(odd.next_delay() <= Duration::from_secs(1));
        }
        // Zero initial: still a (tiny) bounded delay, never a busy loop of zeros forever.
        let mut zero = Backoff::new(Duration::ZERO, Duration::from_millis(4));
        let last = (0..10).map(|_| zero.next_delay()).last().unwrap();
        assert!(last >= Duration::from_millis(2) && last <= Duration::from_millis(4));
    }

    #[test]
    fn jitter_actually_varies() {
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(delays.len() > 1, "{delays:?}");
    }
}
