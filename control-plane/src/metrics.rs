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
    pub push_to_ack: Histogram,
    pub policy_errors: Gauge,
    pub policies: Gauge,
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
        Self {
            registry,
            connected_proxies,
            pushes,
            acks,
            nacks,
            push_to_ack,
            policy_errors,
            policies,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
