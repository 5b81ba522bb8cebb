//! Key/value state shared by every worker thread of one Envoy, with compare-and-swap.
//!
//! The trait mirrors Envoy's proxy-wasm shared data exactly, because the algorithms'
//! correctness depends on those semantics:
//! - every successful write gives the entry a new, non-zero CAS token;
//! - a write with `cas = Some(token)` fails with [`StoreError::CasMismatch`] when the
//!   entry changed since `token` was read;
//! - a write with `cas = None` is unconditional (creation can therefore race, which is
//!   why callers create their entries up front; see the rate-limit table);
//! - keys are never freed by Envoy (only their values), so callers must bound the key
//!   space themselves.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The entry changed since it was read; re-read and retry.
    CasMismatch,
    /// The host refused the operation; the message says why.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("compare-and-swap mismatch"),
            StoreError::Unavailable(why) => write!(f, "shared store unavailable: {why}"),
        }
    }
}

/// A value and the CAS token it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub cas: u32,
}

pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// In-process store with Envoy's semantics, for tests and native tools.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    inner: Mutex<InMemoryInner>,
}

#[derive(Debug, Default)]
struct InMemoryInner {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys ever written (Envoy never frees keys, so neither does this).
    pub fn key_count(&self) -> usize {
        self.inner
            .lock()
            .map(|inner| inner.entries.len())
            .unwrap_or(0)
    }

    /// Total bytes held in keys and values.
    pub fn byte_count(&self) -> usize {
        self.inner
            .lock()
            .map(|inner| {
                inner
                    .entries
                    .iter()
                    .map(|(k, (v, _))| k.len() + v.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl SharedStore for InMemoryStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Unavailable("in-memory store lock poisoned".into()))?;
        Ok(inner.entries.get(key).map(|(value, cas)| Versioned {
            value: value.clone(),
            cas: *cas,
        }))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Unavailable("in-memory store lock poisoned".into()))?;
        if let (Some(expected), Some((_, current))) = (cas, inner.entries.get(key)) {
            if expected != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        let token = inner.next_cas;
        inner
            .entries
            .insert(key.to_owned(), (value.to_vec(), token));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn cas_write_fails_after_a_concurrent_change() {
        let store = InMemoryStore::new();
        store.set("k", b"1", None).ok();
        let first = store.get("k").unwrap().expect("value present after set");
        assert_eq!(first.value, b"1");
        assert_eq!(store.set("k", b"2", Some(first.cas)), Ok(()));
        assert_eq!(
            store.set("k", b"3", Some(first.cas)),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(
            store.get("k").ok().flatten().map(|v| v.value),
            Some(b"2".to_vec())
        );
    }

    #[test]
    fn missing_key_reads_as_none() {
        let store = InMemoryStore::new();
        assert_eq!(store.get("absent"), Ok(None));
        assert_eq!(store.key_count(), 0);
    }
}
