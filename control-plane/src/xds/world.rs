//! What every xDS stream shares: the policies in force, the connected proxies per
//! workload (replica counts for `scope: workload`), a generation number that moves on
//! every change (streams watch it and recompute), and the status the HTTP endpoint
//! reports (pushed/ACKed versions, NACK messages, modules being fetched).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{Metrics, WorkloadLabels};
use crate::policy::compile::{filter_config, Replica};
use crate::policy::model::{Kind, Policy, Workload};
use crate::policy::sources::{Source, Sources};
use crate::xds::resources::{build, Built, ModuleSource};

/// A proxy as identified by its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub workload: Workload,
}

/// Workload identity from the node: Istio's metadata (`NAMESPACE`, `WORKLOAD_NAME`,
/// `LABELS`), which plain Envoy bootstraps set the same way (examples/); without it,
/// the workload is the node's `cluster` (or id) in namespace `default`.
pub fn node_info(node: &Node) -> NodeInfo {
    let fields = node.metadata.as_ref().map(|m| &m.fields);
    let text = |key: &str| {
        fields.and_then(|f| f.get(key)).and_then(|v| match &v.kind {
            Some(ValueKind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
    };
    let labels = fields
        .and_then(|f| f.get("LABELS"))
        .and_then(|v| match &v.kind {
            Some(ValueKind::StructValue(s)) => Some(
                s.fields
                    .iter()
                    .filter_map(|(k, v)| match &v.kind {
                        Some(ValueKind::StringValue(s)) => Some((k.clone(), s.clone())),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    let fallback = if node.cluster.is_empty() {
        node.id.clone()
    } else {
        node.cluster.clone()
    };
    NodeInfo {
        id: node.id.clone(),
        workload: Workload {
            namespace: text("NAMESPACE").unwrap_or_else(|| "default".into()),
            name: text("WORKLOAD_NAME").unwrap_or(fallback),
            labels,
        },
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub pushed_version: Option<String>,
    pub acked_version: Option<String>,
    pub nack: Option<Nack>,
    /// The proxy NACKed `version` because it has not fetched its (remote) module yet: a
    /// transient state, the version is sent again (`super::code_cache`). Not a rejection.
    pub fetching: Option<Fetching>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    pub version: String,
    pub message: String,
    pub at_unix: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetching {
    pub version: String,
    /// Envoy's message.
    pub message: String,
    /// Re-sends so far for this version, counting the one scheduled.
    pub attempt: u32,
    pub retry_in_ms: u64,
    pub at_unix: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub namespace: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub streams: usize,
    pub connected_at_unix: u64,
    pub resources: BTreeMap<String, ResourceStatus>,
}

pub struct World {
    /// Each source's last policies; `policies` is their merge.
    sources: Mutex<Sources>,
    policies: RwLock<Arc<Vec<Policy>>>,
    policy_errors: RwLock<Vec<String>>,
    /// workload key → node id → open streams.
    replicas: Mutex<BTreeMap<String, BTreeMap<String, usize>>>,
    generation: watch::Sender<u64>,
    /// Moves when what a policy's `Programmed` status depends on changes (ACK, NACK,
    /// proxies coming and going), for the Kubernetes status writer.
    delivery: watch::Sender<u64>,
    modules: ModuleSource,
    proxies: Mutex<BTreeMap<String, ProxyStatus>>,
    pub metrics: Metrics,
    /// Runtime tuning instances and their documents (docs/adr/0007).
    pub tuning: crate::tuning::state::Tuning,
    pub started: Instant,
    closing: std::sync::atomic::AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn labels(node: &NodeInfo) -> WorkloadLabels {
    WorkloadLabels {
        namespace: node.workload.namespace.clone(),
        workload: node.workload.name.clone(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl World {
    pub fn new(modules: ModuleSource) -> Arc<Self> {
        let metrics = Metrics::default();
        Arc::new(Self {
            sources: Mutex::new(Sources::default()),
            policies: RwLock::new(Arc::new(Vec::new())),
            policy_errors: RwLock::new(Vec::new()),
            replicas: Mutex::new(BTreeMap::new()),
            generation: watch::channel(0).0,
            delivery: watch::channel(0).0,
            modules,
            proxies: Mutex::new(BTreeMap::new()),
            tuning: crate::tuning::state::Tuning::new(metrics.tuning.clone()),
            metrics,
            started: Instant::now(),
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Wakes on ACKs, NACKs, connects and disconnects (see `delivery`).
    pub fn subscribe_delivery(&self) -> watch::Receiver<u64> {
        self.delivery.subscribe()
    }

    fn delivery_changed(&self) {
        self.delivery.send_modify(|g| *g += 1);
    }

    /// A source's new policies and errors; the merge of all sources goes into force.
    pub fn set_source(&self, source: Source, policies: Vec<Policy>, errors: Vec<String>) {
        let (policies, errors) = {
            let mut sources = lock(&self.sources);
            sources.set(source, policies, errors);
            sources.merged()
        };
        self.set_policies(policies, errors);
    }

    /// A source's errors changed but its policies did not (no push).
    pub fn set_source_errors(&self, source: Source, errors: Vec<String>) {
        let (_, errors) = {
            let mut sources = lock(&self.sources);
            sources.set_errors(source, errors);
            sources.merged()
        };
        self.set_policy_errors(errors);
    }

    /// Shutting down: every stream ends at its next wake-up (now).
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.bump();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Puts `policies` in force as they are (tests; sources use [`World::set_source`]).
    pub fn set_policies(&self, policies: Vec<Policy>, errors: Vec<String>) {
        self.metrics
            .policies
            .set(i64::try_from(policies.len()).unwrap_or(i64::MAX));
        self.metrics
            .policy_errors
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        let policies = Arc::new(policies);
        // Tuning documents follow the policies (recomputed, pollers woken).
        self.tuning.set_policies(policies.clone());
        *self
            .policies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policies;
        *self
            .policy_errors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = errors;
        self.bump();
    }

    pub fn set_policy_errors(&self, errors: Vec<String>) {
        self.metrics
            .policy_errors
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        *self
            .policy_errors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = errors;
    }

    pub fn policy_errors(&self) -> Vec<String> {
        self.policy_errors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The policies in force (all sources merged).
    pub fn policies(&self) -> Arc<Vec<Policy>> {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A stream for `node` opened; replicas are re-counted and everyone recomputes.
    pub fn connect(&self, node: &NodeInfo) {
        let first_stream = {
            let mut replicas = lock(&self.replicas);
            let streams = replicas
                .entry(node.workload.key())
                .or_default()
                .entry(node.id.clone())
                .or_default();
            *streams += 1;
            *streams == 1
        };
        {
            let mut proxies = lock(&self.proxies);
            let status = proxies
                .entry(node.id.clone())
                .or_insert_with(|| ProxyStatus {
                    namespace: node.workload.namespace.clone(),
                    workload: node.workload.name.clone(),
                    labels: node.workload.labels.clone(),
                    streams: 0,
                    connected_at_unix: unix_now(),
                    resources: BTreeMap::new(),
                });
            status.streams += 1;
        }
        if first_stream {
            self.metrics
                .connected_proxies
                .get_or_create(&labels(node))
                .inc();
        }
        self.bump();
        self.delivery_changed();
    }

    pub fn disconnect(&self, node: &NodeInfo) {
        let key = node.workload.key();
        let last_stream = {
            let mut replicas = lock(&self.replicas);
            let mut last = false;
            if let Some(nodes) = replicas.get_mut(&key) {
                if let Some(count) = nodes.get_mut(&node.id) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        nodes.remove(&node.id);
                        last = true;
                    }
                }
                if nodes.is_empty() {
                    replicas.remove(&key);
                }
            }
            last
        };
        {
            // Keyed by node id alone: the entry goes with the id's last stream, whatever
            // workload each stream claimed.
            let mut proxies = lock(&self.proxies);
            if let Some(status) = proxies.get_mut(&node.id) {
                status.streams = status.streams.saturating_sub(1);
                if status.streams == 0 {
                    proxies.remove(&node.id);
                }
            }
        }
        if last_stream {
            let labels = labels(node);
            // The guard from `get_or_create` must be gone before `remove` locks again.
            let gone = self.metrics.connected_proxies.get_or_create(&labels).dec() <= 1;
            if gone {
                // No series left behind for workloads that are gone.
                self.metrics.connected_proxies.remove(&labels);
            }
        }
        self.bump();
        self.delivery_changed();
    }

    /// This node's position among its workload's connected replicas.
    pub fn replica(&self, node: &NodeInfo) -> Replica {
        let replicas = lock(&self.replicas);
        let nodes = replicas.get(&node.workload.key());
        let count = nodes.map_or(1, |n| n.len().max(1));
        let index = nodes
            .and_then(|n| n.keys().position(|id| id == &node.id))
            .unwrap_or(0);
        Replica { index, count }
    }

    /// The resource `name` for `node`, or `None` when no such resource exists.
    pub fn resource(&self, name: &str, node: &NodeInfo) -> Option<Built> {
        let kind = Kind::from_resource_name(name)?;
        let config = filter_config(&self.policies(), kind, &node.workload, self.replica(node));
        Some(build(kind, &config.to_string(), &self.modules))
    }

    pub fn on_push(&self, node: &NodeInfo, resources: &[(String, String)]) {
        self.metrics.pushes.inc();
        let mut proxies = lock(&self.proxies);
        if let Some(status) = proxies.get_mut(&node.id) {
            for (name, version) in resources {
                status
                    .resources
                    .entry(name.clone())
                    .or_default()
                    .pushed_version = Some(version.clone());
            }
        }
    }

    pub fn on_ack(
        &self,
        node: &NodeInfo,
        resources: &[(String, String)],
        latency_secs: Option<f64>,
    ) {
        self.metrics.acks.inc();
        if let Some(latency) = latency_secs {
            self.metrics.push_to_ack.observe(latency);
        }
        let mut proxies = lock(&self.proxies);
        if let Some(status) = proxies.get_mut(&node.id) {
            for (name, version) in resources {
                let entry = status.resources.entry(name.clone()).or_default();
                entry.acked_version = Some(version.clone());
                entry.nack = None;
                entry.fetching = None;
            }
        }
        drop(proxies);
        self.delivery_changed();
    }

    pub fn on_nack(&self, node: &NodeInfo, resources: &[(String, String)], message: &str) {
        self.metrics.nacks.inc();
        eprintln!(
            "meshward-control-plane: proxy {} ({}) rejected {}: {message}",
            node.id,
            node.workload.key(),
            resources
                .iter()
                .map(|(n, v)| format!("{n}@{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut proxies = lock(&self.proxies);
        if let Some(status) = proxies.get_mut(&node.id) {
            for (name, version) in resources {
                let entry = status.resources.entry(name.clone()).or_default();
                entry.nack = Some(Nack {
                    version: version.clone(),
                    message: message.into(),
                    at_unix: unix_now(),
                });
                entry.fetching = None;
            }
        }
        drop(proxies);
        self.delivery_changed();
    }

    /// The proxy NACKed these (name, version) for a wasm module it has not fetched yet;
    /// they are sent again after `retry_in` (re-send `attempt`). Transient: recorded as
    /// `fetching`, not as a NACK (so `Programmed` stays pending, not rejected).
    pub fn on_module_fetch(
        &self,
        node: &NodeInfo,
        resources: &[(String, String)],
        message: &str,
        attempt: u32,
        retry_in: std::time::Duration,
    ) {
        eprintln!(
            "meshward-control-plane: proxy {} ({}) is fetching the module of {} (Envoy: \
             {message}); sending it again in {retry_in:?} (re-send {attempt} of {})",
            node.id,
            node.workload.key(),
            resources
                .iter()
                .map(|(n, v)| format!("{n}@{v}"))
                .collect::<Vec<_>>()
                .join(", "),
            crate::xds::code_cache::MAX_ATTEMPTS,
        );
        let mut proxies = lock(&self.proxies);
        if let Some(status) = proxies.get_mut(&node.id) {
            for (name, version) in resources {
                status.resources.entry(name.clone()).or_default().fetching = Some(Fetching {
                    version: version.clone(),
                    message: message.into(),
                    attempt,
                    retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                    at_unix: unix_now(),
                });
            }
        }
        drop(proxies);
        self.delivery_changed();
    }

    /// Every connected proxy with what it was sent and accepted (for `Programmed`).
    pub fn proxies(&self) -> BTreeMap<String, ProxyStatus> {
        lock(&self.proxies).clone()
    }

    /// The status document served at `/status`.
    pub fn status(&self) -> serde_json::Value {
        let proxies = lock(&self.proxies).clone();
        let replicas: BTreeMap<String, usize> = lock(&self.replicas)
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        let policies: Vec<serde_json::Value> = self
            .policies()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "kind": p.kind.document_kind(),
                    "namespace": p.namespace,
                    "name": p.name,
                    "source": p.source,
                })
            })
            .collect();
        serde_json::json!({
            "uptimeSeconds": self.started.elapsed().as_secs(),
            "policies": policies,
            "policyErrors": self.policy_errors(),
            "workloads": replicas,
            "proxies": proxies,
            "tuning": self.tuning.status(),
        })
    }
}
