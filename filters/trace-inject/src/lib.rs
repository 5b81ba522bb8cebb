//! Meshward trace-inject filter: every request leaves this sidecar with valid, standard
//! trace context, and the sidecar is a participant (its own span id) at every hop.
//!
//! Core (no proxy-wasm): [`ids`], [`traceparent`] and [`tracestate`] (W3C Trace Context
//! Level 2), [`b3`], [`baggage`] (W3C Baggage), [`config`], and [`propagate`] (the
//! processing model for one hop). Adapter: [`filter`].

pub mod b3;
pub mod baggage;
pub mod config;
#[cfg(feature = "proxy-wasm")]
pub mod filter;
pub mod ids;
pub mod propagate;
pub mod traceparent;
pub mod tracestate;

#[cfg(all(feature = "module", target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::TraceInjectRoot::default())
    });
}}
