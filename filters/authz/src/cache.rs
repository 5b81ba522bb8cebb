//! The verified-token cache: a repeat request with the same token skips parsing,
//! signature verification and claim checks. Bounded (oldest entry out first), keyed
//! by a 128-bit digest of provider and token (the token itself is not kept), and an
//! entry never outlives the token's `exp` or the configured maximum age.
//!
//! One cache per VM, i.e. per Envoy worker thread: entries hold parsed claims, which
//! shared data could only carry re-serialised, costing most of what the cache saves.

use std::collections::{HashMap, VecDeque};

use meshward_filter_common::digest::{digest_parts, Digest128};

pub struct VerifiedCache<T> {
    capacity: usize,
    entries: HashMap<Digest128, (T, u64)>,
    order: VecDeque<Digest128>,
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

    /// The key of a token by where it was found: the first provider reading that place
    /// and the place's position among that provider's locations. The same token found
    /// in the same place always selects the same provider (by its issuer), so a lookup
    /// needs no decoding of the token.
    pub fn key(provider: usize, location: usize, token: &str) -> Digest128 {
        let provider = u64::try_from(provider).unwrap_or(u64::MAX).to_le_bytes();
        let location = u64::try_from(location).unwrap_or(u64::MAX).to_le_bytes();
        digest_parts([&provider[..], &location[..], token.as_bytes()])
    }

    /// The cached value, if present and still valid at `now_secs`.
    pub fn get(&mut self, key: &Digest128, now_secs: u64) -> Option<T> {
        match self.entries.get(key) {
            Some((value, expires)) if now_secs < *expires => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` until `expires_secs` (exclusive).
    pub fn insert(&mut self, key: Digest128, value: T, expires_secs: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key, (value, expires_secs)).is_none() {
            self.order.push_back(key);
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
            let key = Cache::key(0, 0, &i.to_string());
            cache.insert(key, "x", i + 1);
            let _ = cache.get(&key, i + 2); // expire it at once
            assert!(cache.order.len() <= 17, "{}", cache.order.len());
        }
    }

    #[test]
    fn provider_is_part_of_the_key_and_capacity_zero_disables() {
        assert_ne!(Cache::key(0, 0, "t"), Cache::key(1, 0, "t"));
        assert_ne!(Cache::key(0, 0, "t"), Cache::key(0, 1, "t"));
        let mut cache = Cache::new(0);
        cache.insert(Cache::key(0, 0, "t"), "x", 100);
        assert_eq!(cache.get(&Cache::key(0, 0, "t"), 0), None);
    }
}
