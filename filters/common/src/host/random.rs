//! Randomness from the host: WASI `random_get`, which Envoy implements from its own
//! secure source.

use crate::random::Random;

#[derive(Debug, Clone, Copy, Default)]
pub struct HostRandom;

impl Random for HostRandom {
    fn fill(&mut self, bytes: &mut [u8]) {
        if getrandom::fill(bytes).is_err() {
            // No entropy from the host: fall back to the clock so ids stay distinct
            // (never a panic; ids are not secrets).
            let seed = crate::clock::Clock::now_nanos(&super::clock::HostClock);
            crate::random::SeededRandom::new(seed).fill(bytes);
        }
    }
}
