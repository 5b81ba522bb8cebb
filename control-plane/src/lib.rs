//! Meshward control plane: compiles policies into per-workload filter configurations and
//! pushes them to Envoy over xDS (ADS and ECDS, SotW and Delta); serves the wasm modules
//! and a status/metrics endpoint over HTTP.
//!
//! [`policy`] is the source-independent model with the file source; [`xds`] the server;
//! [`http`] the status, metrics and module endpoints; [`tuning`] runtime tuning
//! (GOMEMLIMIT, GOGC) for application agents; [`server`] wires them together.

pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod policy;
pub mod redis;
pub mod rls;
pub mod server;
pub mod store;
pub mod tuning;
pub mod xds;
