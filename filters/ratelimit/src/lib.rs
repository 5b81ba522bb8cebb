//! Meshward rate-limit filter.
//!
//! Core (no proxy-wasm): [`algorithm`] (token bucket, sliding window, GCRA),
//! [`key`] (what a request is charged to), [`table`] (fixed-size key table in shared
//! data, CAS across worker threads), [`limiter`] (all rules for one request),
//! [`headers`] (RateLimit fields and the 429 body), [`config`] (JSON schema and
//! validation), [`global`] (decisions by a rate-limit service over Envoy's RLS API).
//! Adapter: [`filter`].

pub mod algorithm;
pub mod config;
#[cfg(feature = "proxy-wasm")]
pub mod filter;
pub mod global;
pub mod headers;
pub mod key;
pub mod limiter;
pub mod table;

#[cfg(all(feature = "module", target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::RateLimitRoot::default())
    });
}}
