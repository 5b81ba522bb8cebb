//! proxy-wasm implementations of the host-agnostic abstractions. Filter adapters use
//! these; filter cores never do.

pub mod clock;
pub mod flow;
pub mod grpc;
pub mod log;
pub mod metrics;
pub mod plugin;
pub mod random;
pub mod request;
pub mod shared_data;
