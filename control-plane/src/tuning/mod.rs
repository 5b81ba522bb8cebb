//! Runtime tuning for applications (Go: GOMEMLIMIT, GOGC), see docs/adr/0007: the
//! policy settings ([`spec`]), the numbers ([`formula`]), the per-instance state and
//! documents ([`state`]), and their delivery: HTTP ([`http`]) and gRPC heap reports
//! ([`grpc`]); the xDS resource type is served by the ADS streams (`xds::types`).

pub mod formula;
pub mod grpc;
pub mod http;
pub mod spec;
pub mod state;
