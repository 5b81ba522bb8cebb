//! Per-rule key table in shared data, fixed in size.
//!
//! Envoy never frees a shared-data key (clearing only drops the value), so one key per
//! client would grow without bound under a key-rotating client. Instead each rule owns
//! `ceil(maxKeys / WAYS)` pages created up front; a client key hashes to one page and
//! lives in one of its `WAYS` entries (a set-associative cache). A page is read and
//! written as one value with compare-and-swap, which makes every charge exact across
//! worker threads. When all entries of a page are live, the least recently seen one is
//! evicted (counted in a metric); idle entries are reused first and cleared on tick.

use crate::algorithm::{Limit, State, Verdict};
use crate::key::KeyDigest;
use meshward_filter_common::bytes::{read_array, read_u32, read_u64, write_at};
use meshward_filter_common::store::{SharedStore, StoreError};

/// Entries per page.
pub const WAYS: usize = 8;
/// digest(16) tag(1) reserved(3) owner(4) last_seen(8) state(24).
const ENTRY_LEN: usize = 56;
pub const PAGE_LEN: usize = WAYS * ENTRY_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    digest: KeyDigest,
    /// Algorithm tag; 0 marks an empty entry.
    tag: u8,
    /// Fingerprint of the limit that wrote the entry ([`Limit::fingerprint`]).
    owner: u32,
    last_seen: u64,
    state: State,
}

impl Entry {
    const EMPTY: Entry = Entry {
        digest: [0; 16],
        tag: 0,
        owner: 0,
        last_seen: 0,
        state: State { a: 0, b: 0, c: 0 },
    };

    fn decode(bytes: &[u8]) -> Entry {
        Entry {
            digest: read_array(bytes, 0),
            tag: bytes.get(16).copied().unwrap_or(0),
            owner: read_u32(bytes, 20),
            last_seen: read_u64(bytes, 24),
            state: State {
                a: read_u64(bytes, 32),
                b: read_u64(bytes, 40),
                c: read_u64(bytes, 48),
            },
        }
    }

    /// Writes the entry into its `ENTRY_LEN` bytes of a page (reserved bytes zeroed).
    fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        write_at(out, 0, &self.digest);
        write_at(out, 16, &[self.tag]);
        write_at(out, 20, &self.owner.to_le_bytes());
        write_at(out, 24, &self.last_seen.to_le_bytes());
        write_at(out, 32, &self.state.a.to_le_bytes());
        write_at(out, 40, &self.state.b.to_le_bytes());
        write_at(out, 48, &self.state.c.to_le_bytes());
    }
}

fn decode_page(value: &[u8]) -> [Entry; WAYS] {
    let mut entries = [Entry::EMPTY; WAYS];
    // A value of another size (older layout, corruption) is treated as an empty page.
    if value.len() == PAGE_LEN {
        for (entry, bytes) in entries.iter_mut().zip(value.chunks_exact(ENTRY_LEN)) {
            *entry = Entry::decode(bytes);
        }
    }
    entries
}

fn encode_page(entries: &[Entry; WAYS]) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_LEN];
    for (entry, bytes) in entries.iter().zip(out.chunks_exact_mut(ENTRY_LEN)) {
        entry.encode(bytes);
    }
    out
}

/// Outcome of charging one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub verdict: Verdict,
    /// A live entry of another key was evicted to make room.
    pub evicted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeError {
    /// Every attempt lost a compare-and-swap race.
    Contention {
        attempts: u32,
    },
    Store(StoreError),
}

impl std::fmt::Display for ChargeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChargeError::Contention { attempts } => write!(
                f,
                "shared-data contention: {attempts} compare-and-swap attempts failed"
            ),
            ChargeError::Store(err) => write!(f, "{err}"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub pages: u32,
    pub cleared: u32,
    pub live: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTable {
    rule: String,
    prefix: String,
    pages: u32,
}

impl KeyTable {
    /// `max_keys` is rounded up to whole pages. The page count is part of the prefix,
    /// so changing `maxKeys` starts a fresh table instead of misreading the old one.
    pub fn new(rule_name: &str, max_keys: u32) -> Self {
        let ways = u32::try_from(WAYS).unwrap_or(8);
        let pages = max_keys.div_ceil(ways).max(1);
        Self {
            rule: rule_name.to_owned(),
            prefix: format!("meshward.ratelimit/{rule_name}/{pages}/"),
            pages,
        }
    }

    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Upper bound of the bytes this table holds in shared data (values and keys).
    pub fn capacity_bytes(&self) -> usize {
        let pages = usize::try_from(self.pages).unwrap_or(usize::MAX);
        pages.saturating_mul(PAGE_LEN + self.prefix.len() + 10)
    }

    fn page_key(&self, page: u32) -> String {
        format!("{}{}", self.prefix, page)
    }

    fn page_of(&self, digest: &KeyDigest) -> u32 {
        read_u32(digest, 12) % self.pages
    }

    /// Creates the pages that do not exist yet. Envoy's shared data cannot create a key
    /// conditionally, so pages are created here — at `on_configure`, which Envoy runs on
    /// the main thread before workers take traffic with the new config — and the
    /// request path only ever does compare-and-swap on existing pages. Returns how
    /// many pages were created.
    /// A rule whose `maxKeys` changed gets a new table; the configuration that changes
    /// it empties the old pages' values (Envoy keeps keys, but their memory is given
    /// back). The old table's state is dropped, as documented.
    fn retire_previous_table(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        let geometry_key = format!("meshward.ratelimit/{}/pages", self.rule);
        let previous = store.get(&geometry_key)?.map(|v| read_u64(&v.value, 0));
        let current = u64::from(self.pages);
        if let Some(old_pages) = previous.filter(|old| *old != current && *old > 0) {
            for page in 0..old_pages.min(u64::from(u32::MAX)) {
                store.set(
                    &format!("meshward.ratelimit/{}/{old_pages}/{page}", self.rule),
                    &[],
                    None,
                )?;
            }
        }
        if previous != Some(current) {
            store.set(&geometry_key, &current.to_le_bytes(), None)?;
        }
        Ok(())
    }

    pub fn prepare(&self, store: &dyn SharedStore) -> Result<u32, StoreError> {
        self.retire_previous_table(store)?;
        let empty = encode_page(&[Entry::EMPTY; WAYS]);
        let mut created = 0;
        for page in 0..self.pages {
            let key = self.page_key(page);
            if store.get(&key)?.is_none() {
                store.set(&key, &empty, None)?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// Charges one request for `digest` under `limit`, retrying lost CAS races up to
    /// `retries` times.
    pub fn charge(
        &self,
        store: &dyn SharedStore,
        digest: &KeyDigest,
        limit: &Limit,
        now: u64,
        retries: u32,
    ) -> Result<Charge, ChargeError> {
        let key = self.page_key(self.page_of(digest));
        let tag = limit.algorithm.tag();
        let owner = limit.fingerprint();
        for _ in 0..=retries {
            let stored = store.get(&key).map_err(ChargeError::Store)?;
            let cas = stored.as_ref().map(|versioned| versioned.cas);
            let mut entries = stored.map_or([Entry::EMPTY; WAYS], |versioned| {
                decode_page(&versioned.value)
            });
            let (slot, existing, evicted) = choose_slot(&entries, digest, tag, owner, limit, now);
            let verdict = limit.check(existing, now);
            let Some(next) = verdict.next else {
                return Ok(Charge {
                    verdict,
                    evicted: false,
                });
            };
            if let Some(entry) = entries.get_mut(slot) {
                *entry = Entry {
                    digest: *digest,
                    tag,
                    owner,
                    last_seen: now,
                    state: next,
                };
            }
            match store.set(&key, &encode_page(&entries), cas) {
                Ok(()) => return Ok(Charge { verdict, evicted }),
                Err(StoreError::CasMismatch) => continue,
                Err(err) => return Err(ChargeError::Store(err)),
            }
        }
        Err(ChargeError::Contention {
            attempts: retries.saturating_add(1),
        })
    }

    /// Clears idle entries in `count` pages starting at `first` (wrapping), and counts
    /// the live ones. A page that changes under the sweep is left for the next one.
    pub fn sweep(
        &self,
        store: &dyn SharedStore,
        limit: &Limit,
        now: u64,
        first: u32,
        count: u32,
    ) -> Result<SweepStats, StoreError> {
        let mut stats = SweepStats::default();
        let tag = limit.algorithm.tag();
        let owner = limit.fingerprint();
        for offset in 0..count.min(self.pages) {
            let page = first.wrapping_add(offset) % self.pages;
            let key = self.page_key(page);
            let Some(stored) = store.get(&key)? else {
                continue;
            };
            let mut entries = decode_page(&stored.value);
            let mut changed = false;
            for entry in entries.iter_mut().filter(|entry| entry.tag != 0) {
                let mine = entry.tag == tag && entry.owner == owner;
                // Another configuration's entries are only cleared once abandoned.
                if (mine && limit.is_idle(entry.state, now)) || (!mine && abandoned(entry, now)) {
                    *entry = Entry::EMPTY;
                    changed = true;
                    stats.cleared += 1;
                } else {
                    stats.live += 1;
                }
            }
            stats.pages += 1;
            if changed {
                match store.set(&key, &encode_page(&entries), Some(stored.cas)) {
                    Ok(()) | Err(StoreError::CasMismatch) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(stats)
    }
}

/// Entries another configuration (another limit for this rule name: a config push, a
/// second listener) has not touched for this long count as abandoned: Envoy drains an
/// old listener for 10 minutes by default.
const ABANDONED_NANOS: u64 = 600 * 1_000_000_000;

fn abandoned(entry: &Entry, now: u64) -> bool {
    now.saturating_sub(entry.last_seen) >= ABANDONED_NANOS
}

/// The entry for `digest` under this limit if present; otherwise a free entry (empty,
/// idle under this limit, or abandoned by another configuration); otherwise the least
/// recently seen entry, evicted.
fn choose_slot(
    entries: &[Entry; WAYS],
    digest: &KeyDigest,
    tag: u8,
    owner: u32,
    limit: &Limit,
    now: u64,
) -> (usize, Option<State>, bool) {
    let mut free = None;
    let mut oldest = (0usize, u64::MAX);
    for (index, entry) in entries.iter().enumerate() {
        let mine = entry.tag == tag && entry.owner == owner;
        if mine && entry.digest == *digest {
            return (index, Some(entry.state), false);
        }
        let reusable = entry.tag == 0
            || (mine && limit.is_idle(entry.state, now))
            || (!mine && abandoned(entry, now));
        if reusable && free.is_none() {
            free = Some(index);
        }
        if entry.last_seen < oldest.1 {
            oldest = (index, entry.last_seen);
        }
    }
    match free {
        Some(index) => (index, None, false),
        None => (oldest.0, None, true),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::algorithm::test_util::*;
    use crate::algorithm::Algorithm;
    use meshward_filter_common::store::InMemoryStore;

    fn digest(n: u32) -> KeyDigest {
        let mut d = [0u8; 16];
        for (slot, byte) in d.iter_mut().zip(n.to_le_bytes().iter().cycle()) {
            *slot = *byte;
        }
        d
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        let entry = Entry {
            digest: digest(7),
            tag: 3,
            owner: 0xdead_beef,
            last_seen: 42,
            state: State {
                a: 1,
                b: u64::MAX,
                c: 9,
            },
        };
        let mut page = [Entry::EMPTY; WAYS];
        page[5] = entry;
        assert_eq!(decode_page(&encode_page(&page)), page);
        assert_eq!(decode_page(b"short"), [Entry::EMPTY; WAYS]);
    }

    #[test]
    fn charges_are_exact_per_key() {
        let store = InMemoryStore::new();
        let table = KeyTable::new("r", 64);
        table.prepare(&store).unwrap();
        let limit = limit(Algorithm::TokenBucket, 1, 3600, 3);
        for key in [1, 2] {
            let allowed = (0..5)
                .filter(|_| {
                    table
                        .charge(&store, &digest(key), &limit, T0, 4)
                        .unwrap()
                        .verdict
                        .allowed
                })
                .count();
            assert_eq!(allowed, 3, "key {key}");
        }
    }

    // Threads do not exist on wasm32-unknown-unknown (Envoy gives each worker its own VM).
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn concurrent_workers_admit_exactly_the_capacity() {
        let store = std::sync::Arc::new(InMemoryStore::new());
        let table = std::sync::Arc::new(KeyTable::new("burst", 16));
        table.prepare(store.as_ref()).unwrap();
        let limit = limit(Algorithm::TokenBucket, 1, 3600, 50);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, table) = (store.clone(), table.clone());
                std::thread::spawn(move || {
                    (0..40)
                        .filter(|_| {
                            table
                                .charge(store.as_ref(), &digest(1), &limit, T0, 1000)
                                .unwrap()
                                .verdict
                                .allowed
                        })
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 50);
    }

    #[test]
    fn memory_stays_bounded_under_100k_distinct_keys() {
        let store = InMemoryStore::new();
        let table = KeyTable::new("flood", 1000);
        table.prepare(&store).unwrap();
        let before = (store.key_count(), store.byte_count());
        let limit = limit(Algorithm::TokenBucket, 10, 1, 10);
        let mut evictions = 0;
        for key in 0..100_000u32 {
            let charge = table.charge(&store, &digest(key), &limit, T0, 4).unwrap();
            assert!(charge.verdict.allowed, "a fresh key always has budget");
            evictions += usize::from(charge.evicted);
        }
        assert_eq!(
            store.key_count(),
            before.0,
            "no key is ever added after prepare"
        );
        assert_eq!(store.byte_count(), before.1, "pages never grow");
        assert!(store.byte_count() <= table.capacity_bytes());
        assert_eq!(table.pages(), 125);
        assert!(
            evictions >= 99_000 - 1000,
            "the table holds at most 1000 keys, so the rest evict ({evictions})"
        );
    }

    #[test]
    fn idle_entries_are_reused_before_live_ones_are_evicted() {
        let store = InMemoryStore::new();
        let table = KeyTable::new("one-page", 8);
        table.prepare(&store).unwrap();
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        for key in 0..8 {
            assert!(
                !table
                    .charge(&store, &digest(key), &limit, T0, 4)
                    .unwrap()
                    .evicted
            );
        }
        // All 8 live: the 9th evicts.
        assert!(
            table
                .charge(&store, &digest(100), &limit, T0, 4)
                .unwrap()
                .evicted
        );
        // A second later all are idle: no eviction, and a sweep clears them.
        assert!(
            !table
                .charge(&store, &digest(200), &limit, T0 + SECOND, 4)
                .unwrap()
                .evicted
        );
        let stats = table.sweep(&store, &limit, T0 + 2 * SECOND, 0, 10).unwrap();
        assert_eq!(
            stats,
            SweepStats {
                pages: 1,
                cleared: 8,
                live: 0
            }
        );
    }

    #[test]
    fn another_configurations_sweep_leaves_this_ones_state_alone() {
        // The same rule name under an old limit (still ticking while its listener
        // drains) and a new one.
        let store = InMemoryStore::new();
        let table = KeyTable::new("r", 8);
        table.prepare(&store).unwrap();
        let old_limit = limit(Algorithm::TokenBucket, 10, 1, 10);
        let new_limit = Limit {
            algorithm: Algorithm::TokenBucket,
            requests: 1,
            per_nanos: 60 * SECOND,
            burst: 5,
        };
        for _ in 0..5 {
            assert!(
                table
                    .charge(&store, &digest(1), &new_limit, T0, 4)
                    .unwrap()
                    .verdict
                    .allowed
            );
        }
        assert!(
            !table
                .charge(&store, &digest(1), &new_limit, T0, 4)
                .unwrap()
                .verdict
                .allowed
        );
        let swept = table
            .sweep(&store, &old_limit, T0 + 2 * SECOND, 0, 1)
            .unwrap();
        assert_eq!(
            swept.cleared, 0,
            "the old limit must not judge the new limit's state"
        );
        assert!(
            !table
                .charge(&store, &digest(1), &new_limit, T0 + 2 * SECOND, 4)
                .unwrap()
                .verdict
                .allowed,
            "still exhausted"
        );
        // Abandoned for 10 minutes: now anyone may clear it.
        let later = T0 + 11 * 60 * SECOND;
        assert_eq!(
            table
                .sweep(&store, &old_limit, later, 0, 1)
                .unwrap()
                .cleared,
            1
        );
    }

    #[test]
    fn a_new_max_keys_empties_the_old_table() {
        let store = InMemoryStore::new();
        let old = KeyTable::new("r", 16);
        old.prepare(&store).unwrap();
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        old.charge(&store, &digest(1), &limit, T0, 4).unwrap();
        assert_eq!(
            store
                .get("meshward.ratelimit/r/2/0")
                .unwrap()
                .unwrap()
                .value
                .len(),
            PAGE_LEN
        );
        let new = KeyTable::new("r", 64);
        new.prepare(&store).unwrap();
        for page in 0..2 {
            assert!(store
                .get(&format!("meshward.ratelimit/r/2/{page}"))
                .unwrap()
                .unwrap()
                .value
                .is_empty());
        }
        assert_eq!(
            store
                .get("meshward.ratelimit/r/8/0")
                .unwrap()
                .unwrap()
                .value
                .len(),
            PAGE_LEN,
            "new table intact"
        );
    }

    #[test]
    fn a_store_failure_is_reported_not_swallowed() {
        struct Broken;
        impl SharedStore for Broken {
            fn get(
                &self,
                _: &str,
            ) -> Result<Option<meshward_filter_common::store::Versioned>, StoreError> {
                Err(StoreError::Unavailable("down".into()))
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
                Err(StoreError::Unavailable("down".into()))
            }
        }
        let table = KeyTable::new("r", 8);
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        assert!(matches!(
            table.charge(&Broken, &digest(1), &limit, T0, 4),
            Err(ChargeError::Store(_))
        ));
    }

    #[test]
    fn endless_contention_gives_up_after_the_retry_budget() {
        /// Every write loses the race.
        struct AlwaysRaced(InMemoryStore);
        impl SharedStore for AlwaysRaced {
            fn get(
                &self,
                key: &str,
            ) -> Result<Option<meshward_filter_common::store::Versioned>, StoreError> {
                self.0.get(key)
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
                Err(StoreError::CasMismatch)
            }
        }
        let store = AlwaysRaced(InMemoryStore::new());
        let table = KeyTable::new("r", 8);
        let limit = limit(Algorithm::Gcra, 10, 1, 5);
        assert_eq!(
            table.charge(&store, &digest(1), &limit, T0, 3),
            Err(ChargeError::Contention { attempts: 4 })
        );
    }
}
