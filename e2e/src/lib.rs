//! End-to-end harness shared by every Meshward e2e test (and the demo): starts a real
//! Envoy from `.venv/bin/envoy` with a per-test bootstrap, upstream servers that record
//! what reached them, a small HTTP/1.1 client that can choose its source address, and
//! helpers to read Envoy's stats. No mocks of Envoy.

pub mod apps;
pub mod bootstrap;
pub mod client;
pub mod control_plane;
pub mod demo;
pub mod envoy;
pub mod jwks_server;
pub mod packaging;
pub mod paths;
pub mod prometheus;
pub mod stats;
pub mod tuning;
pub mod upstream;
pub mod valkey;

pub use bootstrap::{Bootstrap, Listener};
pub use client::{Request, Response};
pub use envoy::{Envoy, EnvoyOptions};
pub use jwks_server::JwksServer;
pub use packaging::Packaging;
pub use upstream::{RecordedRequest, RecordingUpstream, Reply};
pub use valkey::Valkey;
