//! [`RecordStore`] over proxy-wasm shared data, exact across worker threads and
//! bounded in memory.
//!
//! Envoy never frees a shared-data key, so the key space is fixed up front, as for the
//! rate limiter (docs/adr/0001): `ceil(maxEntries / 8)` index pages of 8 entries, each
//! read and written as one value with compare-and-swap, plus one body key per entry
//! (created on first use, overwritten on reuse) and one counter of stored body bytes,
//! capped at `maxStoredBytes`. An entry's generation, bumped on every claim, ties a body
//! to the claim that wrote it, so a late writer whose lock expired can never attach its
//! response to someone else's record.

use crate::fingerprint::Digest128;
use crate::response::StoredResponse;
use crate::store::{Finish, Lease, NotStored, RecordStore, Reservation};
use meshward_filter_common::bytes::{read_array, read_u32, read_u64, write_at};
use meshward_filter_common::store::{SharedStore, StoreError};

pub const WAYS: u32 = 8;
const ENTRY_LEN: usize = 64;
const PAGE_LEN: usize = ENTRY_LEN * 8;

const EMPTY: u8 = 0;
const IN_FLIGHT: u8 = 1;
const COMPLETED: u8 = 2;
const NOT_STORED: u8 = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    scope: Digest128,
    state: u8,
    reason: u8,
    generation: u32,
    fingerprint: Digest128,
    /// Lock expiry while in flight; record expiry after.
    expires_at: u64,
    last_used: u64,
    body_len: u32,
}

impl Entry {
    fn decode(bytes: &[u8]) -> Self {
        Self {
            scope: read_array(bytes, 0),
            state: bytes.get(16).copied().unwrap_or(EMPTY),
            reason: bytes.get(17).copied().unwrap_or(0),
            generation: read_u32(bytes, 20),
            fingerprint: read_array(bytes, 24),
            expires_at: read_u64(bytes, 40),
            last_used: read_u64(bytes, 48),
            body_len: read_u32(bytes, 56),
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        write_at(out, 0, &self.scope);
        write_at(out, 16, &[self.state, self.reason]);
        write_at(out, 20, &self.generation.to_le_bytes());
        write_at(out, 24, &self.fingerprint);
        write_at(out, 40, &self.expires_at.to_le_bytes());
        write_at(out, 48, &self.last_used.to_le_bytes());
        write_at(out, 56, &self.body_len.to_le_bytes());
    }

    fn live(&self, now: u64) -> bool {
        self.state != EMPTY && self.expires_at > now
    }
}

type Page = [Entry; 8];

/// A [`Lease`] of this table.
#[derive(Debug, Clone, Copy)]
struct Claim {
    slot: u32,
    generation: u32,
}

impl Claim {
    /// `None` for a lease of another store (it owns nothing here).
    fn of(lease: Lease) -> Option<Self> {
        match lease {
            Lease::Slot { slot, generation } => Some(Self { slot, generation }),
            Lease::Token(_) => None,
        }
    }
}

fn decode_page(value: &[u8]) -> Page {
    let mut page = [Entry::default(); 8];
    if value.len() == PAGE_LEN {
        for (entry, bytes) in page.iter_mut().zip(value.chunks_exact(ENTRY_LEN)) {
            *entry = Entry::decode(bytes);
        }
    }
    page
}

fn encode_page(page: &Page) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_LEN];
    for (entry, bytes) in page.iter().zip(out.chunks_exact_mut(ENTRY_LEN)) {
        entry.encode(bytes);
    }
    out
}

pub struct SharedDataRecords<'a> {
    store: &'a dyn SharedStore,
    prefix: String,
    pages: u32,
    max_stored_bytes: u64,
    retries: u32,
}

impl<'a> SharedDataRecords<'a> {
    /// `namespace` separates independent filter configurations sharing a VM.
    pub fn new(
        store: &'a dyn SharedStore,
        namespace: &str,
        max_entries: u32,
        max_stored_bytes: u64,
    ) -> Self {
        let pages = max_entries.div_ceil(WAYS).max(1);
        Self {
            store,
            prefix: format!("meshward.idempotency/{namespace}/{pages}/"),
            pages,
            max_stored_bytes,
            retries: 32,
        }
    }

    pub fn pages(&self) -> u32 {
        self.pages
    }

    fn page_key(&self, page: u32) -> String {
        format!("{}p/{page}", self.prefix)
    }

    fn body_key(&self, slot: u32) -> String {
        format!("{}b/{slot}", self.prefix)
    }

    fn bytes_key(&self) -> String {
        format!("{}bytes", self.prefix)
    }

    fn page_of(&self, scope: &Digest128) -> u32 {
        read_u32(scope, 12) % self.pages
    }

    /// Creates the index pages, the body keys and the byte counter (see the rate
    /// limiter's table for why creation happens at configure time only). Body keys exist
    /// from the start so every body write can be compare-and-swap.
    pub fn prepare(&self) -> Result<(), StoreError> {
        let empty = encode_page(&[Entry::default(); 8]);
        for page in 0..self.pages {
            let key = self.page_key(page);
            if self.store.get(&key)?.is_none() {
                self.store.set(&key, &empty, None)?;
            }
        }
        for slot in 0..self.pages.saturating_mul(WAYS) {
            let key = self.body_key(slot);
            if self.store.get(&key)?.is_none() {
                self.store.set(&key, &0u32.to_le_bytes(), None)?;
            }
        }
        if self.store.get(&self.bytes_key())?.is_none() {
            self.store
                .set(&self.bytes_key(), &0u64.to_le_bytes(), None)?;
        }
        Ok(())
    }

    /// Stored body bytes right now.
    pub fn stored_bytes(&self) -> u64 {
        self.store
            .get(&self.bytes_key())
            .ok()
            .flatten()
            .map_or(0, |v| read_u64(&v.value, 0))
    }

    fn read_page(&self, page: u32) -> Result<(Page, Option<u32>), StoreError> {
        let stored = self.store.get(&self.page_key(page))?;
        let cas = stored.as_ref().map(|v| v.cas);
        Ok((
            stored.map_or([Entry::default(); 8], |v| decode_page(&v.value)),
            cas,
        ))
    }

    /// Adds (positive) or removes (negative) stored bytes; refuses an addition that
    /// would pass the cap.
    fn account(&self, delta: i64) -> Result<bool, StoreError> {
        for _ in 0..=self.retries {
            let Some(current) = self.store.get(&self.bytes_key())? else {
                return Ok(false);
            };
            let value = read_u64(&current.value, 0);
            let next = if delta >= 0 {
                let next = value.saturating_add(delta.unsigned_abs());
                if next > self.max_stored_bytes {
                    return Ok(false);
                }
                next
            } else {
                value.saturating_sub(delta.unsigned_abs())
            };
            match self
                .store
                .set(&self.bytes_key(), &next.to_le_bytes(), Some(current.cas))
            {
                Ok(()) => return Ok(true),
                Err(StoreError::CasMismatch) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::CasMismatch)
    }

    /// Drops the body written by `generation` (and only that one, so a newer claim's
    /// body is never touched), and takes its bytes off the counter. Best effort: it runs
    /// after the index changed, so a failure is absorbed here instead of becoming an
    /// error that would orphan the record.
    fn free_body(&self, slot: u32, generation: u32, len: u32) {
        if len == 0 {
            return;
        }
        let key = self.body_key(slot);
        if let Ok(Some(body)) = self.store.get(&key) {
            let written_by = read_u32(&body.value, 0);
            if written_by == generation
                && self
                    .store
                    .set(&key, &generation.to_le_bytes(), Some(body.cas))
                    .is_ok()
            {
                let _ = self.account(-i64::from(len));
            }
        }
    }

    /// Updates one entry of a page with compare-and-swap, retrying on races.
    /// `change` returns `None` to leave the page alone.
    fn update_entry<T>(
        &self,
        page: u32,
        mut change: impl FnMut(&mut Page) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        for _ in 0..=self.retries {
            let (mut entries, cas) = self.read_page(page)?;
            let Some(result) = change(&mut entries) else {
                return Ok(None);
            };
            match self
                .store
                .set(&self.page_key(page), &encode_page(&entries), cas)
            {
                Ok(()) => return Ok(Some(result)),
                Err(StoreError::CasMismatch) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::CasMismatch)
    }

    /// Clears expired records in `count` pages from `first` (wrapping). Returns how
    /// many were cleared. A page that fails is skipped; the others are still swept.
    pub fn sweep(&self, now: u64, first: u32, count: u32) -> Result<u32, StoreError> {
        let mut cleared = 0;
        for offset in 0..count.min(self.pages) {
            let page = first.wrapping_add(offset) % self.pages;
            let freed = self
                .update_entry(page, |entries| {
                    let mut freed = Vec::new();
                    for (way, entry) in entries.iter_mut().enumerate() {
                        if entry.state != EMPTY && entry.expires_at <= now {
                            freed.push((way, entry.generation, entry.body_len));
                            *entry = Entry {
                                generation: entry.generation,
                                ..Entry::default()
                            };
                        }
                    }
                    (!freed.is_empty()).then_some(freed)
                })
                .unwrap_or(None);
            for (way, generation, len) in freed.unwrap_or_default() {
                cleared += 1;
                self.free_body(
                    page * WAYS + u32::try_from(way).unwrap_or(0),
                    generation,
                    len,
                );
            }
        }
        Ok(cleared)
    }
}

impl RecordStore for SharedDataRecords<'_> {
    fn reserve(
        &self,
        scope: &Digest128,
        fingerprint: &Digest128,
        now: u64,
        lock_nanos: u64,
    ) -> Result<Reservation, StoreError> {
        let page = self.page_of(scope);
        for _ in 0..=self.retries {
            let (mut entries, cas) = self.read_page(page)?;
            if let Some((way, found)) = entries
                .iter()
                .enumerate()
                .find(|(_, e)| e.live(now) && e.scope == *scope)
            {
                if found.fingerprint != *fingerprint {
                    return Ok(Reservation::Mismatch);
                }
                return Ok(match found.state {
                    IN_FLIGHT => Reservation::InFlight,
                    NOT_STORED => Reservation::CompletedNotStored(
                        NotStored::from_code(found.reason).unwrap_or(NotStored::TooLarge),
                    ),
                    _ => {
                        let slot = page * WAYS + u32::try_from(way).unwrap_or(0);
                        let body = self.store.get(&self.body_key(slot))?;
                        let response = body
                            .filter(|b| read_u32(&b.value, 0) == found.generation)
                            .and_then(|b| b.value.get(4..).and_then(StoredResponse::decode));
                        // A body not (yet) matching the record means a completion is
                        // being written right now.
                        response.map_or(Reservation::InFlight, Reservation::Completed)
                    }
                });
            }
            // Claim: a free or expired entry, else the least recently used completed one.
            let free = entries.iter().position(|e| !e.live(now));
            let oldest_done = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.state == COMPLETED || e.state == NOT_STORED)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(way, _)| way);
            let (way, evicted) = match (free, oldest_done) {
                (Some(way), _) => (way, false),
                (None, Some(way)) => (way, true),
                (None, None) => return Ok(Reservation::Full),
            };
            let Some(entry) = entries.get_mut(way) else {
                return Ok(Reservation::Full);
            };
            let previous = *entry;
            let generation = previous.generation.wrapping_add(1);
            *entry = Entry {
                scope: *scope,
                state: IN_FLIGHT,
                reason: 0,
                generation,
                fingerprint: *fingerprint,
                expires_at: now.saturating_add(lock_nanos),
                last_used: now,
                body_len: 0,
            };
            match self
                .store
                .set(&self.page_key(page), &encode_page(&entries), cas)
            {
                Ok(()) => {
                    let slot = page * WAYS + u32::try_from(way).unwrap_or(0);
                    self.free_body(slot, previous.generation, previous.body_len);
                    return Ok(Reservation::Execute {
                        lease: Lease::Slot { slot, generation },
                        evicted: evicted && previous.live(now),
                    });
                }
                Err(StoreError::CasMismatch) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::CasMismatch)
    }

    fn complete(
        &self,
        lease: Lease,
        response: Result<&StoredResponse, NotStored>,
        now: u64,
        ttl_nanos: u64,
    ) -> Result<Finish, StoreError> {
        let Some(lease) = Claim::of(lease) else {
            return Ok(Finish::LeaseLost);
        };
        let (page, way) = (
            lease.slot / WAYS,
            usize::try_from(lease.slot % WAYS).unwrap_or(0),
        );
        let owns = |entries: &Page| {
            entries
                .get(way)
                .is_some_and(|e| e.generation == lease.generation && e.state == IN_FLIGHT)
        };
        // Read the body key first: the CAS write below then fails if anyone (a newer
        // claim of this slot) wrote it after we checked ownership.
        let body_key = self.body_key(lease.slot);
        let body_cas = self.store.get(&body_key)?.map(|b| b.cas);
        if !owns(&self.read_page(page)?.0) {
            return Ok(Finish::LeaseLost);
        }
        let mut outcome = response.map(|r| r.encode());
        if let Ok(encoded) = &outcome {
            let len = i64::try_from(encoded.len()).unwrap_or(i64::MAX);
            if self.account(len)? {
                let mut value = lease.generation.to_le_bytes().to_vec();
                value.extend_from_slice(encoded);
                match self.store.set(&body_key, &value, body_cas) {
                    Ok(()) => {}
                    Err(StoreError::CasMismatch) => {
                        let _ = self.account(-len);
                        return Ok(Finish::LeaseLost);
                    }
                    Err(_) => {
                        let _ = self.account(-len);
                        outcome = Err(NotStored::StoreFailed);
                    }
                }
            } else {
                outcome = Err(NotStored::StoreFull);
            }
        }
        let body_len = outcome
            .as_ref()
            .map_or(0, |e| u32::try_from(e.len()).unwrap_or(u32::MAX));
        let updated = self.update_entry(page, |entries| {
            if !owns(entries) {
                return None;
            }
            let entry = entries.get_mut(way)?;
            entry.state = if outcome.is_ok() {
                COMPLETED
            } else {
                NOT_STORED
            };
            entry.reason = outcome.as_ref().err().map_or(0, |r| r.code());
            entry.expires_at = now.saturating_add(ttl_nanos);
            entry.last_used = now;
            entry.body_len = body_len;
            Some(())
        });
        match (updated, outcome) {
            (Ok(Some(())), Ok(_)) => Ok(Finish::Stored),
            (Ok(Some(())), Err(reason)) => Ok(Finish::NotStored(reason)),
            (Ok(None), Ok(_)) => {
                // Lost the record while writing: take the body back out.
                self.free_body(lease.slot, lease.generation, body_len);
                Ok(Finish::LeaseLost)
            }
            (Ok(None), Err(_)) => Ok(Finish::LeaseLost),
            (Err(err), written) => {
                if written.is_ok() {
                    self.free_body(lease.slot, lease.generation, body_len);
                }
                Err(err)
            }
        }
    }

    fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let Some(lease) = Claim::of(lease) else {
            return Ok(());
        };
        let (page, way) = (
            lease.slot / WAYS,
            usize::try_from(lease.slot % WAYS).unwrap_or(0),
        );
        self.update_entry(page, |entries| {
            let entry = entries.get_mut(way)?;
            if entry.generation != lease.generation || entry.state != IN_FLIGHT {
                return None;
            }
            *entry = Entry {
                generation: entry.generation,
                ..Entry::default()
            };
            Some(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use meshward_filter_common::store::InMemoryStore;

    #[test]
    fn a_new_page_count_leaves_the_old_table_alone() {
        // Old-configuration workers may still use it while their listener drains;
        // wiping it could let a retry execute twice.
        let store = InMemoryStore::new();
        let old = SharedDataRecords::new(&store, "ns", 16, 1 << 20);
        old.prepare().unwrap();
        let scope = [7u8; 16];
        let Reservation::Execute { lease, .. } = old.reserve(&scope, &[1u8; 16], 1, 1_000).unwrap()
        else {
            panic!()
        };
        let response = StoredResponse {
            status: 200,
            headers: vec![],
            body: b"done".to_vec(),
        };
        old.complete(lease, Ok(&response), 2, 1_000_000).unwrap();
        SharedDataRecords::new(&store, "ns", 64, 1 << 20)
            .prepare()
            .unwrap();
        assert_eq!(
            old.reserve(&scope, &[1u8; 16], 3, 1_000).unwrap(),
            Reservation::Completed(response)
        );
    }
}
