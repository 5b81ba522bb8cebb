//! The xDS server: shared state ([`world`]), ECDS resources ([`resources`]), runtime
//! tuning documents ([`tuning`]), the served types ([`types`]), the SotW and Delta
//! stream protocols ([`sotw`], [`delta`]) on one stream loop ([`stream`]), re-sends after
//! a proxy's wasm code-cache miss ([`code_cache`]) and the gRPC services ([`service`]).

pub mod code_cache;
pub mod delta;
pub mod resources;
pub mod service;
pub mod sotw;
pub mod stream;
pub mod tuning;
pub mod types;
pub mod world;

use std::sync::atomic::{AtomicU64, Ordering};

/// A nonce no other response of this process carried.
pub fn next_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("n{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
