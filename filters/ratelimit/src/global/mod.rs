//! Global mode (docs/adr/0009): every rule is decided by a rate-limit service speaking
//! Envoy's RLS v3 API — exact across replicas. [`messages`] are the wire messages,
//! [`request`] builds the one `ShouldRateLimit` call of a request, [`answer`] turns the
//! service's answer — or its failure — into the same [`crate::limiter::Decision`] the
//! local mode produces, so replies, fields and metrics are shared.

pub mod answer;
pub mod messages;
pub mod request;

/// The gRPC service and method of Envoy's rate-limit API.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";
