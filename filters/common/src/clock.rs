//! Time as the filters see it: nanoseconds since the Unix epoch, from a [`Clock`] the
//! caller supplies, so algorithms are tested with a [`FakeClock`] and never touch
//! `std::time` (which panics on `wasm32-unknown-unknown`).

use std::sync::atomic::{AtomicU64, Ordering};

pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

pub trait Clock {
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
}

/// A clock that only moves when told to; shareable across threads in tests.
#[derive(Debug, Default)]
pub struct FakeClock {
    nanos: AtomicU64,
}

impl FakeClock {
    pub fn at_nanos(nanos: u64) -> Self {
        Self {
            nanos: AtomicU64::new(nanos),
        }
    }

    pub fn at_seconds(seconds: u64) -> Self {
        Self::at_nanos(seconds.saturating_mul(NANOS_PER_SECOND))
    }

    pub fn advance_nanos(&self, nanos: u64) {
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    pub fn advance_millis(&self, millis: u64) {
        self.advance_nanos(millis.saturating_mul(1_000_000));
    }

    pub fn advance_seconds(&self, seconds: u64) {
        self.advance_nanos(seconds.saturating_mul(NANOS_PER_SECOND));
    }
}

impl Clock for FakeClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn fake_clock_moves_only_when_advanced() {
        let clock = FakeClock::at_seconds(10);
        assert_eq!(clock.now_nanos(), 10 * NANOS_PER_SECOND);
        clock.advance_millis(1500);
        assert_eq!(clock.now_nanos(), 11_500_000_000);
    }
}
