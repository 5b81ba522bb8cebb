//! Everything two Meshward filters would otherwise write twice.
//!
//! The modules at the top level are host-agnostic (no `proxy_wasm` import): request
//! matchers, the [`store::SharedStore`] abstraction, [`clock::Clock`], 128-bit request
//! digests, fixed-offset record bytes, RFC 9651
//! structured-field serialisation, RFC 9457 problem+json bodies, duration parsing and
//! configuration errors that name their JSON path. They are unit-tested natively and
//! under Node as `wasm32-unknown-unknown` (each test module imports
//! `wasm_bindgen_test as test` on that target, so one `#[test]` serves both).
//!
//! [`host`] holds the thin proxy-wasm implementations of those abstractions (shared
//! data, host clock, metrics) that filter adapters plug in.

pub mod bytes;
pub mod clock;
pub mod config_error;
pub mod digest;
pub mod duration;
pub mod grpc_target;
#[cfg(feature = "proxy-wasm")]
pub mod host;
pub mod matcher;
pub mod problem;
pub mod random;
pub mod request;
pub mod sf;
pub mod store;
