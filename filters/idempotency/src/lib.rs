//! Meshward idempotency filter: `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header)
//! gives a POST/PATCH exactly-once execution, and retries get the stored response.
//!
//! Core (no proxy-wasm): [`key`] (the header), [`fingerprint`] (payload and scope
//! digests), [`response`] (what is stored and replayed), [`store`] (the record store
//! trait), [`table`] (its bounded shared-data implementation), [`remote`] (the shared
//! store's messages, as [`store`] terms), [`machine`] (requests and responses →
//! decisions), [`config`]. Adapter: [`filter`].

pub mod config;
#[cfg(feature = "proxy-wasm")]
pub mod filter;
pub mod fingerprint;
pub mod key;
pub mod machine;
pub mod remote;
pub mod response;
pub mod store;
pub mod table;

#[cfg(all(feature = "module", target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::IdempotencyRoot::new(context_id))
    });
}}
