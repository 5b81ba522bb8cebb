//! The verified-token cache: a repeat request with the same token skips parsing,
//! signature verification and claim checks. Bounded (oldest entry out first), an entry
//! never outlives the token's `exp` or the configured maximum age.
//!
//! Entries are found by a fast, non-cryptographic hash of where the token was found and
//! the token, and a hit is only a hit when the stored token is byte-for-byte the one
//! presented: a collision costs a verification, never an identity. (The previous
//! SHA-256 key cost about as much as the rest of a cached request in wasm, which has no
//! SHA instructions.) Entries keep the token, which is little more than the parsed
//! identity already holds (its payload segment).
//!
//! One cache per VM, i.e. per Envoy worker thread: entries hold parsed claims, which
//! shared data could only carry re-serialised, costing most of what the cache saves.

use std::collections::{HashMap, VecDeque};

/// Where a token was found (first provider reading that place, the place's position
/// among its locations) and the token: what a cached identity is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKey<'t> {
    hash: u64,
    provider: usize,
    place: usize,
    token: &'t str,
}

struct Entry<T> {
    provider: usize,
    place: usize,
    token: Box<str>,
    value: T,
    expires: u64,
}

pub struct VerifiedCache<T> {
    capacity: usize,
    entries: HashMap<u64, Entry<T>>,
    order: VecDeque<u64>,
}

/// Word-at-a-time multiplicative hash (the FxHash step): a few cycles per 8 bytes.
fn fast_hash(parts: [u64; 2], token: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(K);
    let mut hash = parts.iter().fold(0, |h, p| step(h, *p));
    let mut chunks = token.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = step(hash, u64::from_le_bytes(word));
    }
    let mut last = [0u8; 8];
    for (slot, byte) in last.iter_mut().zip(chunks.remainder()) {
        *slot = *byte;
    }
    step(step(hash, u64::from_le_bytes(last)), token.len() as u64)
}

impl<T: Clone> VerifiedCache<T> {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The key of `token` found by provider `provider`'s location number `place`: the
    /// same token found in the same place always selects the same provider (by its
    /// issuer), so a lookup needs no decoding of the token.
    pub fn key(provider: usize, place: usize, token: &str) -> TokenKey<'_> {
        let number = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        TokenKey {
            hash: fast_hash([number(provider), number(place)], token),
            provider,
            place,
            token,
        }
    }

    /// The cached value, if this very token is present and still valid at `now_secs`.
    pub fn get(&mut self, key: &TokenKey<'_>, now_secs: u64) -> Option<T> {
        let entry = self.entries.get(&key.hash)?;
        if entry.provider != key.provider || entry.place != key.place || *entry.token != *key.token
        {
            return None; // another token with the same hash
        }
        if now_secs < entry.expires {
            return Some(entry.value.clone());
        }
        self.entries.remove(&key.hash);
        None
    }

    /// Stores `value` until `expires_secs` (exclusive); replaces an entry whose token
    /// had the same hash.
    pub fn insert(&mut self, key: TokenKey<'_>, value: T, expires_secs: u64) {
        if self.capacity == 0 {
            return;
        }
        let entry = Entry {
            provider: key.provider,
            place: key.place,
            token: key.token.into(),
            value,
            expires: expires_secs,
        };
        if self.entries.insert(key.hash, entry).is_none() {
            self.order.push_back(key.hash);
        }
        // `order` may hold keys already dropped as expired; skip those.
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|key| entries.contains_key(key));
        }
    }

    /// Drops every entry (a provider's key set lost a key).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    type Cache = VerifiedCache<&'static str>;

    #[test]
    fn entries_expire_exactly_at_their_deadline() {
        let mut cache = Cache::new(4);
        let key = Cache::key(0, 0, "token");
        cache.insert(key, "alice", 100);
        assert_eq!(cache.get(&key, 99), Some("alice"));
        assert_eq!(cache.get(&key, 100), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn oldest_entry_leaves_first_when_full() {
        let mut cache = Cache::new(2);
        let [a, b, c] = ["a", "b", "c"].map(|t| Cache::key(0, 0, t));
        cache.insert(a, "a", 100);
        cache.insert(b, "b", 100);
        cache.insert(c, "c", 100);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&a, 0), None);
        assert_eq!(cache.get(&c, 0), Some("c"));
    }

    #[test]
    fn stays_bounded_under_churn_with_expired_keys() {
        let mut cache = Cache::new(8);
        for i in 0..10_000u64 {
            let token = i.to_string();
            let key = Cache::key(0, 0, &token);
            cache.insert(key, "x", i + 1);
            let _ = cache.get(&key, i + 2); // expire it at once
            assert!(cache.order.len() <= 17, "{}", cache.order.len());
        }
    }

    #[test]
    fn a_hit_needs_the_same_token_in_the_same_place() {
        let mut cache = Cache::new(4);
        cache.insert(Cache::key(0, 0, "token"), "alice", 100);
        assert_eq!(cache.get(&Cache::key(0, 0, "token"), 0), Some("alice"));
        assert_eq!(cache.get(&Cache::key(1, 0, "token"), 0), None);
        assert_eq!(cache.get(&Cache::key(0, 1, "token"), 0), None);
        assert_eq!(cache.get(&Cache::key(0, 0, "tokem"), 0), None);
        // A colliding hash is not a hit: the stored token differs.
        let forged = TokenKey {
            token: "another token",
            ..Cache::key(0, 0, "token")
        };
        assert_eq!(cache.get(&forged, 0), None);
        assert_eq!(cache.get(&Cache::key(0, 0, "token"), 0), Some("alice"));
    }

    #[test]
    fn provider_is_part_of_the_key_and_capacity_zero_disables() {
        assert_ne!(Cache::key(0, 0, "t"), Cache::key(1, 0, "t"));
        assert_ne!(Cache::key(0, 0, "t"), Cache::key(0, 1, "t"));
        assert_ne!(Cache::key(0, 0, "t").hash, Cache::key(0, 0, "u").hash);
        let mut cache = Cache::new(0);
        cache.insert(Cache::key(0, 0, "t"), "x", 100);
        assert_eq!(cache.get(&Cache::key(0, 0, "t"), 0), None);
    }
}
