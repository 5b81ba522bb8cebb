//! Randomness as the filter cores see it: a [`Random`] the caller supplies (the host's
//! WASI `random_get` in Envoy, a seeded generator in tests), so ids are testable and no
//! core touches an OS API that does not exist on `wasm32-unknown-unknown`.

pub trait Random {
    fn fill(&mut self, bytes: &mut [u8]);
}

/// Deterministic xorshift64* generator for tests and benchmarks. Not for production ids.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    state: u64,
}

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        Self { state: seed.max(1) }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            for (slot, byte) in chunk.iter_mut().zip(word.iter()) {
                *slot = *byte;
            }
        }
    }
}

/// Returns a random value whose bytes are not all zero (ids where zero is invalid).
pub fn nonzero_bytes<const N: usize>(random: &mut dyn Random) -> [u8; N] {
    let mut bytes = [0u8; N];
    // All-zero from a real source is astronomically unlikely; bounded retries, then
    // force a bit so the result is valid whatever the source does.
    for _ in 0..4 {
        random.fill(&mut bytes);
        if bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
    if let Some(last) = bytes.last_mut() {
        *last = 1;
    }
    bytes
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    struct Zeros;
    impl Random for Zeros {
        fn fill(&mut self, bytes: &mut [u8]) {
            bytes.fill(0);
        }
    }

    #[test]
    fn seeded_random_is_deterministic_and_fills_odd_lengths() {
        let (mut a, mut b) = (SeededRandom::new(7), SeededRandom::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert!(x.iter().any(|b| *b != 0));
    }

    #[test]
    fn nonzero_even_from_a_broken_source() {
        let id: [u8; 8] = nonzero_bytes(&mut Zeros);
        assert_ne!(id, [0u8; 8]);
    }
}
