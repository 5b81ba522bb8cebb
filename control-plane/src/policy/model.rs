//! The policy model, independent of where policies come from (YAML files today,
//! Kubernetes custom resources next): a kind (which filter), an identity
//! (namespace/name), a workload selector, a scope for rate limits, and the filter's own
//! JSON configuration, which the filter validates (an invalid one is NACKed by Envoy
//! and shown in the status).

use std::collections::BTreeMap;

use serde_json::Value;

/// What a policy configures: one of the four filters, or an application's runtime
/// (`RuntimeTuning`, delivered to agents rather than to Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    RateLimit,
    Authz,
    Idempotency,
    Trace,
    Tuning,
}

impl Kind {
    /// The filter kinds: one ECDS resource each.
    pub const FILTERS: [Kind; 4] = [Kind::RateLimit, Kind::Authz, Kind::Idempotency, Kind::Trace];
    pub const ALL: [Kind; 5] = [
        Kind::RateLimit,
        Kind::Authz,
        Kind::Idempotency,
        Kind::Trace,
        Kind::Tuning,
    ];

    /// The policy document's `kind`.
    pub fn document_kind(self) -> &'static str {
        match self {
            Kind::RateLimit => "RateLimitPolicy",
            Kind::Authz => "AuthPolicy",
            Kind::Idempotency => "IdempotencyPolicy",
            Kind::Trace => "TracePolicy",
            Kind::Tuning => "RuntimeTuning",
        }
    }

    pub fn from_document_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.document_kind() == kind)
    }

    /// The ECDS resource name Envoy's `config_discovery` asks for (`Tuning` has none:
    /// its documents are per instance, see `tuning`).
    pub fn resource_name(self) -> &'static str {
        match self {
            Kind::RateLimit => "meshward.ratelimit",
            Kind::Authz => "meshward.authz",
            Kind::Idempotency => "meshward.idempotency",
            Kind::Trace => "meshward.trace-inject",
            Kind::Tuning => "",
        }
    }

    pub fn from_resource_name(name: &str) -> Option<Kind> {
        Kind::FILTERS
            .into_iter()
            .find(|k| k.resource_name() == name)
    }

    /// The wasm module (file stem, `root_id` and `vm_id`); empty for `Tuning`.
    pub fn module(self) -> &'static str {
        match self {
            Kind::RateLimit => "meshward_ratelimit",
            Kind::Authz => "meshward_authz",
            Kind::Idempotency => "meshward_idempotency",
            Kind::Trace => "meshward_trace_inject",
            Kind::Tuning => "",
        }
    }

    /// What a workload that no policy of this kind selects gets: the filter stays in
    /// the chain and does nothing (trace-inject: its defaults).
    pub fn pass_through(self) -> Value {
        match self {
            Kind::RateLimit => serde_json::json!({"rules": []}),
            Kind::Authz => serde_json::json!({
                "providers": [],
                "rules": [{"name": "no-policy", "action": "allow", "require": "anonymous"}]
            }),
            Kind::Idempotency => serde_json::json!({"routes": []}),
            Kind::Trace | Kind::Tuning => serde_json::json!({}),
        }
    }
}

/// How a rate-limit policy's figures apply across the replicas of a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// The limit as written, in each sidecar.
    #[default]
    PerReplica,
    /// One figure for the workload, split over the replicas connected to this control
    /// plane (re-pushed when replicas join or leave).
    Workload,
    /// Exact across replicas: every request is decided by the rate-limit service
    /// (Envoy's RLS API, on Redis/Valkey; docs/adr/0009).
    Global,
}

/// A workload as identified from an Envoy node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// `namespace/name`, the key replicas are counted under.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Like Istio's `selector`: all `matchLabels` must be on the workload, and when
/// `workloads` is given, the workload's name must be listed. Empty: every workload of
/// the policy's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub workloads: Vec<String>,
}

impl Selector {
    pub fn matches(&self, workload: &Workload) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| workload.labels.get(key) == Some(value))
            && (self.workloads.is_empty() || self.workloads.contains(&workload.name))
    }

    /// Higher is more specific: a named workload beats labels, more labels beat fewer,
    /// an empty selector (the namespace default) is the least specific.
    pub fn specificity(&self) -> (bool, usize) {
        (!self.workloads.is_empty(), self.match_labels.len())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub selector: Selector,
    pub scope: Scope,
    /// The filter's JSON configuration.
    pub config: Value,
    /// Where it came from (`file.yaml#2`), for status and errors.
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(labels: &[(&str, &str)]) -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "orders".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn selectors_match_labels_and_names() {
        let orders = workload(&[("app", "orders"), ("tier", "api")]);
        let by_label = Selector {
            match_labels: [("app".to_string(), "orders".to_string())].into(),
            workloads: vec![],
        };
        assert!(by_label.matches(&orders));
        assert!(!by_label.matches(&workload(&[("app", "billing")])));
        assert!(Selector::default().matches(&orders));
        let by_name = Selector {
            match_labels: Default::default(),
            workloads: vec!["payments".into()],
        };
        assert!(!by_name.matches(&orders));
        assert!(by_name.specificity() > by_label.specificity());
        assert!(by_label.specificity() > Selector::default().specificity());
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_document_kind(kind.document_kind()), Some(kind));
        }
        for kind in Kind::FILTERS {
            assert_eq!(Kind::from_resource_name(kind.resource_name()), Some(kind));
        }
        assert_eq!(Kind::from_resource_name(""), None);
    }
}
