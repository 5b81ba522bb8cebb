//! Meshward bundle: trace-inject → authz → ratelimit → idempotency in one proxy-wasm
//! module and one HTTP context per request, from one JSON configuration with a
//! section per filter (each optional). Every wasm filter in an Envoy chain pays a
//! fixed toll per request (context creation, host-call crossings); the bundle pays it
//! once and behaves exactly as the filters configured one after the other.
//!
//! Core (no proxy-wasm): [`config`] (sections, validated by each filter's parser),
//! [`chain`] (stage order, where a paused stream resumes), [`ticks`] (one root tick
//! for all stages). Adapter: [`filter`].

pub mod chain;
pub mod config;
#[cfg(feature = "proxy-wasm")]
pub mod filter;
pub mod ticks;

#[cfg(all(feature = "module", target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::BundleRoot::new(context_id))
    });
}}
