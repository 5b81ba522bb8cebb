//! The control plane's Prometheus metrics (`/metrics` on the HTTP port).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub workload: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub connected_proxies: Family<WorkloadLabels, Gauge>,
    pub pushes: Counter,
    pub acks: Counter,
    pub nacks: Counter,
    /// Responses sent again after a code-cache-miss NACK (remote modules).
    pub module_fetch_retries: Counter,
    pub push_to_ack: Histogram,
    pub policy_errors: Gauge,
    pub policies: Gauge,
    /// Runtime tuning (docs/adr/0007), named `meshward_control_plane_tuning_*` (the control plane prefix, ADR 0007).
    pub tuning: TuningMetrics,
    tuning_registry: Registry,
    /// Redis/Valkey commands (docs/adr/0009): `redis_seconds{op}`, `redis_errors_total{op}`.
    pub redis: RedisMetrics,
    /// The rate-limit service: `rls_decisions_total{code}`.
    pub rls: RlsMetrics,
    /// The idempotency store: `store_reservations_total{outcome}`,
    /// `store_completions_total{outcome}`.
    pub store: StoreMetrics,
}

/// One Redis operation kind (`rls_token_bucket`, `store_reserve`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
}

/// Latency and errors of Redis commands; clones share the series.
#[derive(Clone, Debug)]
pub struct RedisMetrics {
    /// Every command, successful or not, timed until its answer or its timeout.
    pub seconds: Family<OpLabels, Histogram>,
    /// Commands that failed or timed out.
    pub errors: Family<OpLabels, Counter>,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        Self {
            // 100 µs .. ~1.6 s.
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
            errors: Family::default(),
        }
    }
}

/// A rate-limit decision's outcome: `ok`, `over_limit`, `unknown` (no global policy or
/// rule for the descriptor: nothing enforced), `error` (Redis failed: `UNAVAILABLE`),
/// `invalid` (over the cardinality bounds: `INVALID_ARGUMENT`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// The rate-limit service's metrics; clones share the series.
#[derive(Clone, Debug, Default)]
pub struct RlsMetrics {
    /// Per descriptor (one per rule of a request).
    pub decisions: Family<CodeLabels, Counter>,
}

/// An idempotency store call's outcome. Reservations: `new`, `in_flight`, `completed`,
/// `mismatch`, `error` (Redis failed: `UNAVAILABLE`), `invalid` (`INVALID_ARGUMENT`).
/// Completions (`Complete` and `Release`): `stored`, `not_stored`, `released`,
/// `lease_lost` (the caller's lock had expired: nothing written), `error`, `invalid`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The idempotency store's metrics; clones share the series.
#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    pub reservations: Family<OutcomeLabels, Counter>,
    pub completions: Family<OutcomeLabels, Counter>,
}

/// The runtime-tuning metrics; clones share the series.
#[derive(Clone, Debug, Default)]
pub struct TuningMetrics {
    /// Application instances known (reporting or holding a stream).
    pub instances: Gauge,
    /// Tuning documents sent to agents (xDS responses, HTTP settings answers with a body).
    pub pushes: Counter,
    /// Heap reports received (HTTP and gRPC).
    pub reports: Counter,
    /// 1 while any instance of the workload has its GOGC held at the minimum because
    /// the heap is near the target; no series otherwise.
    pub heap_near_limit: Family<WorkloadLabels, Gauge>,
}

impl TuningMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "instances",
            "Application instances known to runtime tuning",
            self.instances.clone(),
        );
        registry.register(
            "pushes",
            "Runtime tuning documents sent to agents",
            self.pushes.clone(),
        );
        registry.register(
            "reports",
            "Runtime reports (live heap, memory limit) received from agents",
            self.reports.clone(),
        );
        registry.register(
            "heap_near_limit",
            "1 while an instance of the workload has GOGC held at its minimum (heap near the target)",
            self.heap_near_limit.clone(),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshward_control_plane");
        let connected_proxies = Family::<WorkloadLabels, Gauge>::default();
        registry.register(
            "connected_proxies",
            "Envoy proxies with an open xDS stream, per workload",
            connected_proxies.clone(),
        );
        let pushes = Counter::default();
        registry.register("pushes", "xDS responses sent", pushes.clone());
        let acks = Counter::default();
        registry.register("acks", "xDS responses acknowledged", acks.clone());
        let nacks = Counter::default();
        registry.register(
            "nacks",
            "xDS responses rejected by a proxy (see /status for messages)",
            nacks.clone(),
        );
        let module_fetch_retries = Counter::default();
        registry.register(
            "module_fetch_retries",
            "xDS responses sent again after a proxy NACKed them for a wasm module it had not fetched yet (remote modules; not counted in nacks)",
            module_fetch_retries.clone(),
        );
        let push_to_ack = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "push_to_ack_seconds",
            "Time from sending a response to the proxy's ACK",
            push_to_ack.clone(),
        );
        let policy_errors = Gauge::default();
        registry.register(
            "policy_errors",
            "Policy files or documents currently refused",
            policy_errors.clone(),
        );
        let policies = Gauge::default();
        registry.register("policies", "Policies in force", policies.clone());
        let redis = RedisMetrics::default();
        registry.register(
            "redis_seconds",
            "Redis/Valkey command latency, per operation (including failures and timeouts)",
            redis.seconds.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis/Valkey commands that failed or timed out, per operation",
            redis.errors.clone(),
        );
        let rls = RlsMetrics::default();
        registry.register(
            "rls_decisions",
            "Rate-limit service decisions per descriptor, by outcome (ok, over_limit, unknown, error, invalid)",
            rls.decisions.clone(),
        );
        let store = StoreMetrics::default();
        registry.register(
            "store_reservations",
            "Idempotency store reservations, by outcome (new, in_flight, completed, mismatch, error, invalid)",
            store.reservations.clone(),
        );
        registry.register(
            "store_completions",
            "Idempotency store completions and releases, by outcome (stored, not_stored, released, lease_lost, error, invalid)",
            store.completions.clone(),
        );
        let tuning = TuningMetrics::default();
        let mut tuning_registry = Registry::with_prefix("meshward_control_plane_tuning");
        tuning.register(&mut tuning_registry);
        Self {
            registry,
            connected_proxies,
            pushes,
            acks,
            nacks,
            module_fetch_retries,
            push_to_ack,
            policy_errors,
            policies,
            tuning,
            tuning_registry,
            redis,
            rls,
            store,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        // Two prefixes, one exposition: a single `# EOF` at the end.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.tuning_registry);
        let _ = encode_eof(&mut out);
        out
    }
}
