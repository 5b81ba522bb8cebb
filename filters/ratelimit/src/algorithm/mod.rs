//! The limiting algorithms, as pure functions from (stored state, now) to a
//! verdict and the state to store. Time is nanoseconds since the epoch; all arithmetic
//! is integer (u128 where products could overflow) so results are identical natively
//! and on 32-bit wasm.

mod fixed_window;
mod gcra;
mod sliding_window;
mod token_bucket;

pub use sliding_window::estimate as sliding_window_estimate;

/// Per-key state, 24 bytes, interpreted by the algorithm that wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Capacity `burst`, refilled continuously at `requests` per `per`.
    TokenBucket,
    /// Sliding-window counter: at most `requests` per `per`, estimated from the current
    /// and previous fixed windows.
    SlidingWindow,
    /// Generic cell rate algorithm: one request per `per / requests`, with `burst`
    /// requests allowed back to back. Same admission as a token bucket, kept as a
    /// single timestamp.
    Gcra,
    /// At most `requests` per window of `per`, windows aligned to the epoch.
    FixedWindow,
}

impl Algorithm {
    /// Stored with each key so a configuration that switches algorithm starts fresh.
    pub fn tag(self) -> u8 {
        match self {
            Algorithm::TokenBucket => 1,
            Algorithm::SlidingWindow => 2,
            Algorithm::Gcra => 3,
            Algorithm::FixedWindow => 4,
        }
    }
}

/// A validated limit (see `config.rs` for the JSON form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub algorithm: Algorithm,
    /// Quota per window (`q` of `RateLimit-Policy`). At least 1.
    pub requests: u64,
    /// Window length in nanoseconds (`w`). At least 1 ms.
    pub per_nanos: u64,
    /// Requests admissible back to back (token-bucket capacity, GCRA burst).
    pub burst: u64,
}

/// What an algorithm decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// State to store; `None` when the decision changed nothing (denials), so the
    /// caller skips the write.
    pub next: Option<State>,
    /// Requests still admissible right now after this one.
    pub remaining: u64,
    /// Nanoseconds until the quota is fully available again (`t` of `RateLimit`).
    pub reset_nanos: u64,
    /// Nanoseconds until a request would be admitted; 0 when allowed.
    pub retry_after_nanos: u64,
}

impl Limit {
    /// Identifies this limit in stored state (FNV-1a over algorithm and numbers): a
    /// configuration only reads, reuses or sweeps entries its own limit wrote, so two
    /// configurations of one rule name (a push while the old listener drains, two
    /// listeners) never judge each other's state.
    pub fn fingerprint(&self) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u32::from(*byte);
                hash = hash.wrapping_mul(0x0100_0193);
            }
        };
        feed(&[self.algorithm.tag()]);
        feed(&self.requests.to_le_bytes());
        feed(&self.per_nanos.to_le_bytes());
        feed(&self.burst.to_le_bytes());
        hash
    }

    /// Charges one request against `state` (`None`: the key was never seen).
    pub fn check(&self, state: Option<State>, now: u64) -> Verdict {
        match self.algorithm {
            Algorithm::TokenBucket => token_bucket::check(self, state, now),
            Algorithm::SlidingWindow => sliding_window::check(self, state, now),
            Algorithm::Gcra => gcra::check(self, state, now),
            Algorithm::FixedWindow => fixed_window::check(self, state, now),
        }
    }

    /// Whether `state` is indistinguishable from a fresh key at `now`, so its slot can
    /// be reused without changing any decision.
    pub fn is_idle(&self, state: State, now: u64) -> bool {
        match self.algorithm {
            Algorithm::TokenBucket => token_bucket::is_idle(self, state, now),
            Algorithm::SlidingWindow => sliding_window::is_idle(self, state, now),
            Algorithm::Gcra => gcra::is_idle(state, now),
            Algorithm::FixedWindow => fixed_window::is_idle(self, state, now),
        }
    }
}

/// `numerator * multiplier / divisor`, rounded up, saturating; `divisor` of 0 gives 0.
pub(crate) fn mul_div_ceil(numerator: u64, multiplier: u64, divisor: u64) -> u64 {
    if divisor == 0 {
        return 0;
    }
    let product = u128::from(numerator) * u128::from(multiplier);
    let quotient = product.div_ceil(u128::from(divisor));
    u64::try_from(quotient).unwrap_or(u64::MAX)
}

/// `numerator * multiplier / divisor`, rounded down, saturating; `divisor` of 0 gives 0.
pub(crate) fn mul_div_floor(numerator: u64, multiplier: u64, divisor: u64) -> u64 {
    if divisor == 0 {
        return 0;
    }
    let product = u128::from(numerator) * u128::from(multiplier);
    u64::try_from(product / u128::from(divisor)).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    pub const SECOND: u64 = 1_000_000_000;
    pub const MILLI: u64 = 1_000_000;
    /// An arbitrary, realistic epoch offset so no test depends on time starting at 0.
    pub const T0: u64 = 1_700_000_000 * SECOND;

    pub fn limit(algorithm: Algorithm, requests: u64, per_seconds: u64, burst: u64) -> Limit {
        Limit {
            algorithm,
            requests,
            per_nanos: per_seconds * SECOND,
            burst,
        }
    }

    /// Runs `count` requests at `now`, threading state; returns how many were allowed.
    pub fn admit(limit: &Limit, state: &mut Option<State>, now: u64, count: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..count {
            let verdict = limit.check(*state, now);
            if let Some(next) = verdict.next {
                *state = Some(next);
            }
            if verdict.allowed {
                allowed += 1;
            }
        }
        allowed
    }
}
