//! Runtime tuning for applications (Go: GOMEMLIMIT, GOGC), see docs/adr/0007: the
//! policy settings ([`spec`]).

pub mod spec;
