//! Randomness from the host: WASI `random_get`, which Envoy implements from its own
//! secure source. Each call crosses into the host (about 0.6 µs,
//! docs/bench/host-calls.md), so bytes are fetched 256 at a time into a pool per VM and
//! handed out from there; every byte still comes from Envoy's source, used once.

use std::cell::RefCell;

use crate::random::Random;

const POOL: usize = 256;

struct Pool {
    bytes: [u8; POOL],
    /// Bytes of `bytes` already handed out.
    used: usize,
}

thread_local! {
    static POOL_BYTES: RefCell<Pool> = const {
        RefCell::new(Pool {
            bytes: [0; POOL],
            used: POOL,
        })
    };
}

#[derive(Debug, Clone, Copy, Default)]
pub struct HostRandom;

impl Random for HostRandom {
    fn fill(&mut self, bytes: &mut [u8]) {
        if bytes.len() > POOL {
            host_fill(bytes);
            return;
        }
        POOL_BYTES.with(|pool| {
            let mut pool = pool.borrow_mut();
            if POOL - pool.used < bytes.len() {
                host_fill(&mut pool.bytes);
                pool.used = 0;
            }
            let start = pool.used;
            if let Some(fresh) = pool.bytes.get(start..start + bytes.len()) {
                bytes.copy_from_slice(fresh);
            }
            pool.used += bytes.len();
        });
    }
}

fn host_fill(bytes: &mut [u8]) {
    if getrandom::fill(bytes).is_err() {
        // No entropy from the host: fall back to the clock so ids stay distinct
        // (never a panic; ids are not secrets).
        let seed = crate::clock::Clock::now_nanos(&super::clock::HostClock);
        crate::random::SeededRandom::new(seed).fill(bytes);
    }
}
