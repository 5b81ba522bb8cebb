//! The instances runtime tuning knows (one per application process, keyed by node id):
//! who they are, what they reported, the document currently computed for them and the
//! version they last confirmed (ACK or fetch). Recomputes on reports, policy changes
//! and Pod changes; wakes waiters only when some document actually changed. Instances
//! that neither report nor hold a stream are forgotten after a TTL, and their number is
//! capped, so memory stays bounded whatever agents do.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use meshward_proto::tuning::v1::RuntimeTuning;
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{TuningMetrics, WorkloadLabels};
use crate::policy::compile::select;
use crate::policy::model::{Kind, Policy, Workload};
use crate::tuning::formula::{self, Last};
use crate::tuning::spec::TuningSettings;
use crate::xds::resources::short_hash;

/// Forgotten this long after the last report, fetch or stream (agents report every 5 s
/// by default; this is many missed reports, and a restarted agent simply re-reports).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// More instances than this are refused (a fleet this size wants several control planes).
pub const DEFAULT_MAX_INSTANCES: usize = 10_000;
/// Report strings (node id, names, labels) longer than this are refused.
pub const MAX_TEXT: usize = 256;
pub const MAX_LABELS: usize = 64;

/// Kubernetes Pod memory limits (`resources.limits.memory`), implemented from a Pods
/// reflector. Called with the tuning state locked: must not call back into [`Tuning`].
pub trait PodMemoryLimits: Send + Sync {
    /// `None`: the pod is unknown (the agent's report is used); `Some(None)`: the pod is
    /// known and the container has no limit; `Some(Some(bytes))`: its limit. `container`
    /// may be empty (the agent did not say): then the only container that is not
    /// `istio-proxy`.
    fn limit(&self, namespace: &str, pod: &str, container: &str) -> Option<Option<u64>>;
}

/// Who an instance is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub pod: String,
    pub container: String,
}

/// One report from an agent (HTTP or gRPC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub node_id: String,
    pub identity: Identity,
    /// The cgroup memory limit the agent sees; `None`/0: none.
    pub memory_limit_bytes: Option<u64>,
    /// Live heap after the last GC; `None`/0: not known yet.
    pub live_heap_bytes: Option<u64>,
    pub agent: String,
}

impl Report {
    /// Checks what a report must carry; errors name the field (as in the JSON body).
    pub fn check(&self) -> Result<(), String> {
        check_identity(&self.node_id, &self.identity)?;
        if self.agent.len() > MAX_TEXT {
            return Err(format!("agent: longer than {MAX_TEXT} bytes"));
        }
        Ok(())
    }
}

/// Checks a node id and identity, from a report or from xDS node metadata.
pub fn check_identity(node_id: &str, identity: &Identity) -> Result<(), String> {
    for (field, value, required) in [
        ("nodeId", node_id, true),
        ("namespace", identity.namespace.as_str(), true),
        ("workload", identity.workload.as_str(), true),
        ("pod", identity.pod.as_str(), false),
        ("container", identity.container.as_str(), false),
    ] {
        if required && value.is_empty() {
            return Err(format!("{field}: required, must not be empty"));
        }
        if value.len() > MAX_TEXT {
            return Err(format!("{field}: longer than {MAX_TEXT} bytes"));
        }
    }
    if identity.labels.len() > MAX_LABELS {
        return Err(format!("labels: more than {MAX_LABELS}"));
    }
    if let Some((key, _)) = identity
        .labels
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_TEXT || v.len() > MAX_TEXT)
    {
        return Err(format!(
            "labels: key {key:?} (or its value) is empty or longer than {MAX_TEXT} bytes"
        ));
    }
    Ok(())
}

/// The settings for one instance (docs/adr/0007 "Delivery"), as served over HTTP (JSON)
/// and xDS ([`RuntimeTuning`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningDocument {
    pub node_id: String,
    /// `namespace/name` of the selecting policy; empty when none selects the workload.
    pub policy: String,
    /// A hash of what the agent applies (node id, policy, values, flag) — not of
    /// `reason`, so a new explanation of the same values is no new version.
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_percent: Option<i32>,
    pub heap_near_limit: bool,
    pub reason: String,
}

impl TuningDocument {
    fn new(
        node_id: &str,
        policy: String,
        memory_limit_bytes: Option<i64>,
        gc_percent: Option<i32>,
        heap_near_limit: bool,
        reason: String,
    ) -> Self {
        let content = format!(
            "{node_id}\n{policy}\n{memory_limit_bytes:?}\n{gc_percent:?}\n{heap_near_limit}"
        );
        Self {
            node_id: node_id.to_owned(),
            policy,
            version: short_hash(content.as_bytes()),
            memory_limit_bytes,
            gc_percent,
            heap_near_limit,
            reason,
        }
    }

    pub fn to_proto(&self) -> RuntimeTuning {
        RuntimeTuning {
            node_id: self.node_id.clone(),
            policy: self.policy.clone(),
            version: self.version.clone(),
            memory_limit_bytes: self.memory_limit_bytes,
            gc_percent: self.gc_percent,
            heap_near_limit: self.heap_near_limit,
            reason: self.reason.clone(),
        }
    }
}

/// For the `RuntimeTuning` resource status (the Kubernetes controller turns it into
/// `Programmed` and `HeapPressure` conditions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningPolicyStatus {
    /// Instances the policy selects.
    pub instances: usize,
    /// Of those, the ones whose last fetched or ACKed version is the current one.
    pub delivered: usize,
    /// Node ids of the instances whose GOGC is held at `min` (heap near the target).
    pub heap_near_limit: Vec<String>,
}

struct Instance {
    identity: Identity,
    reported_limit: Option<u64>,
    heap: Option<u64>,
    agent: String,
    document: TuningDocument,
    /// The version the agent last confirmed (xDS ACK, HTTP fetch).
    confirmed: Option<String>,
    /// Open xDS streams: held instances are never forgotten.
    streams: usize,
    last_seen: Instant,
}

impl Instance {
    fn workload(&self) -> Workload {
        Workload {
            namespace: self.identity.namespace.clone(),
            name: self.identity.workload.clone(),
            labels: self.identity.labels.clone(),
        }
    }

    /// The workload series this instance raises in `heap_near_limit`, if any.
    fn flag(&self) -> Option<WorkloadLabels> {
        self.document.heap_near_limit.then(|| WorkloadLabels {
            namespace: self.identity.namespace.clone(),
            workload: self.identity.workload.clone(),
        })
    }
}

struct Inner {
    policies: Arc<Vec<Policy>>,
    instances: HashMap<String, Instance>,
    /// Flagged instances per workload: the gauge series exists while this is > 0.
    flagged: HashMap<WorkloadLabels, usize>,
}

/// Runtime-tuning state shared by the HTTP endpoints, the xDS streams and the status.
pub struct Tuning {
    inner: Mutex<Inner>,
    pods: RwLock<Option<Arc<dyn PodMemoryLimits>>>,
    /// Moves whenever some document changed (what waiters watch).
    changes: watch::Sender<u64>,
    /// Moves whenever a [`Tuning::policy_status`] may have changed (documents,
    /// confirmations, instances coming and going), for the status writer.
    status_changes: watch::Sender<u64>,
    metrics: TuningMetrics,
    ttl: Duration,
    max_instances: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tuning {
    pub fn new(metrics: TuningMetrics) -> Self {
        Self::with_limits(metrics, DEFAULT_TTL, DEFAULT_MAX_INSTANCES)
    }

    pub fn with_limits(metrics: TuningMetrics, ttl: Duration, max_instances: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                policies: Arc::new(Vec::new()),
                instances: HashMap::new(),
                flagged: HashMap::new(),
            }),
            pods: RwLock::new(None),
            changes: watch::channel(0).0,
            status_changes: watch::channel(0).0,
            metrics,
            ttl,
            max_instances,
        }
    }

    /// Moves whenever some instance's document changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Moves whenever some [`Tuning::policy_status`] may have changed.
    pub fn subscribe_status(&self) -> watch::Receiver<u64> {
        self.status_changes.subscribe()
    }

    /// Kubernetes mode: memory limits from the Pod spec (the agents' reports are the
    /// fallback for pods not in the cache). Recomputes every document.
    pub fn set_pod_memory_limits(&self, pods: Arc<dyn PodMemoryLimits>) {
        *self.pods.write().unwrap_or_else(PoisonError::into_inner) = Some(pods);
        self.recompute();
    }

    /// The policies in force changed (called by `World::set_policies`).
    pub fn set_policies(&self, policies: Arc<Vec<Policy>>) {
        lock(&self.inner).policies = policies;
        self.recompute();
    }

    /// Recomputes every document, e.g. after Pods changed; wakes waiters if any changed.
    pub fn recompute(&self) {
        let pods = self.pods();
        let changed = {
            let mut inner = lock(&self.inner);
            let ids: Vec<String> = inner.instances.keys().cloned().collect();
            let mut changed = false;
            for id in ids {
                changed |= self.update(&mut inner, pods.as_deref(), &id, false, |_| {});
            }
            changed
        };
        if changed {
            self.wake();
        }
    }

    /// Records a report and returns the instance's document after it. Refuses a report
    /// that fails [`Report::check`] and a new instance beyond the cap.
    pub fn report(&self, report: Report) -> Result<TuningDocument, String> {
        self.metrics.reports.inc();
        report.check()?;
        let pods = self.pods();
        let (document, changed) = {
            let mut inner = lock(&self.inner);
            let new = self.admit(&mut inner, &report.node_id, &report.identity)?;
            let changed = self.update(&mut inner, pods.as_deref(), &report.node_id, new, |i| {
                i.identity = report.identity.clone();
                i.reported_limit = report.memory_limit_bytes.filter(|l| *l > 0);
                i.heap = report.live_heap_bytes.filter(|h| *h > 0);
                i.agent = report.agent.clone();
                i.last_seen = Instant::now();
            });
            let document = inner
                .instances
                .get(&report.node_id)
                .map(|i| i.document.clone())
                .ok_or_else(|| format!("instance {} vanished", report.node_id))?;
            (document, changed)
        };
        if changed {
            self.wake();
        }
        Ok(document)
    }

    /// An xDS stream of this instance opened (identity and limit from its node
    /// metadata); the instance is kept until [`Tuning::detach`] and the TTL after it.
    pub fn attach(
        &self,
        node_id: &str,
        identity: Identity,
        memory_limit_bytes: Option<u64>,
    ) -> Result<TuningDocument, String> {
        check_identity(node_id, &identity)?;
        let pods = self.pods();
        let (document, changed) = {
            let mut inner = lock(&self.inner);
            let new = self.admit(&mut inner, node_id, &identity)?;
            let changed = self.update(&mut inner, pods.as_deref(), node_id, new, |i| {
                i.identity = identity.clone();
                if memory_limit_bytes.is_some() {
                    i.reported_limit = memory_limit_bytes.filter(|l| *l > 0);
                }
                i.streams += 1;
                i.last_seen = Instant::now();
            });
            let document = inner
                .instances
                .get(node_id)
                .map(|i| i.document.clone())
                .ok_or_else(|| format!("instance {node_id} vanished"))?;
            (document, changed)
        };
        if changed {
            self.wake();
        }
        Ok(document)
    }

    /// The stream opened by [`Tuning::attach`] ended.
    pub fn detach(&self, node_id: &str) {
        if let Some(instance) = lock(&self.inner).instances.get_mut(node_id) {
            instance.streams = instance.streams.saturating_sub(1);
            instance.last_seen = Instant::now();
        }
    }

    /// The instance's current document (`None`: unknown, it must report first).
    pub fn document(&self, node_id: &str) -> Option<TuningDocument> {
        lock(&self.inner)
            .instances
            .get(node_id)
            .map(|i| i.document.clone())
    }

    /// Like [`Tuning::document`] for an agent asking: counts as a sign of life.
    pub fn fetch(&self, node_id: &str) -> Option<TuningDocument> {
        let mut inner = lock(&self.inner);
        let instance = inner.instances.get_mut(node_id)?;
        instance.last_seen = Instant::now();
        Some(instance.document.clone())
    }

    /// The agent has `version` (it ACKed it, or fetched it).
    pub fn confirm(&self, node_id: &str, version: &str) {
        let mut inner = lock(&self.inner);
        let Some(instance) = inner.instances.get_mut(node_id) else {
            return;
        };
        if instance.confirmed.as_deref() != Some(version) {
            instance.confirmed = Some(version.to_owned());
            self.status_changed();
        }
    }

    /// A document went out to an agent.
    pub fn on_sent(&self) {
        self.metrics.pushes.inc();
    }

    /// Forgets instances that neither reported, fetched nor held a stream within the TTL.
    pub fn sweep(&self) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        let stale: Vec<String> = inner
            .instances
            .iter()
            .filter(|(_, i)| i.streams == 0 && now.duration_since(i.last_seen) > self.ttl)
            .map(|(id, _)| id.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        for id in stale {
            if let Some(instance) = inner.instances.remove(&id) {
                self.reflag(&mut inner, instance.flag(), None);
            }
        }
        self.count(&inner);
        self.status_changed();
    }

    pub fn policy_status(&self, policy_namespace: &str, policy_name: &str) -> TuningPolicyStatus {
        let id = format!("{policy_namespace}/{policy_name}");
        let inner = lock(&self.inner);
        let mut status = TuningPolicyStatus::default();
        for (node_id, instance) in &inner.instances {
            if instance.document.policy != id {
                continue;
            }
            status.instances += 1;
            if instance.confirmed.as_deref() == Some(instance.document.version.as_str()) {
                status.delivered += 1;
            }
            if instance.document.heap_near_limit {
                status.heap_near_limit.push(node_id.clone());
            }
        }
        status.heap_near_limit.sort();
        status
    }

    /// The `tuning` section of `/status`: node id → instance.
    pub fn status(&self) -> serde_json::Value {
        let inner = lock(&self.inner);
        let instances: BTreeMap<&String, serde_json::Value> = inner
            .instances
            .iter()
            .map(|(id, i)| {
                let d = &i.document;
                (
                    id,
                    serde_json::json!({
                        "namespace": i.identity.namespace,
                        "workload": i.identity.workload,
                        "pod": i.identity.pod,
                        "container": i.identity.container,
                        "agent": i.agent,
                        "reportedMemoryLimitBytes": i.reported_limit,
                        "liveHeapBytes": i.heap,
                        "streams": i.streams,
                        "policy": d.policy,
                        "version": d.version,
                        "memoryLimitBytes": d.memory_limit_bytes,
                        "gcPercent": d.gc_percent,
                        "heapNearLimit": d.heap_near_limit,
                        "reason": d.reason,
                        "delivered": i.confirmed.as_deref() == Some(d.version.as_str()),
                    }),
                )
            })
            .collect();
        serde_json::json!(instances)
    }

    fn pods(&self) -> Option<Arc<dyn PodMemoryLimits>> {
        self.pods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn wake(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.status_changed();
    }

    fn status_changed(&self) {
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Creates `node_id` unless it exists (`false`) or the cap is reached.
    fn admit(&self, inner: &mut Inner, node_id: &str, identity: &Identity) -> Result<bool, String> {
        if inner.instances.contains_key(node_id) {
            return Ok(false);
        }
        if inner.instances.len() >= self.max_instances {
            return Err(format!(
                "instance {node_id} refused: {} runtime-tuning instances are already tracked \
                 (the limit); instances are forgotten {}s after their last report — check for \
                 agents using a new node id on every report",
                self.max_instances,
                self.ttl.as_secs()
            ));
        }
        let node = node_id.to_owned();
        let instance = Instance {
            identity: identity.clone(),
            reported_limit: None,
            heap: None,
            agent: String::new(),
            document: TuningDocument::new(node_id, String::new(), None, None, false, String::new()),
            confirmed: None,
            streams: 0,
            last_seen: Instant::now(),
        };
        inner.instances.insert(node, instance);
        self.count(inner);
        self.status_changed();
        Ok(true)
    }

    /// Applies `change` to the instance and recomputes its document; `true` when the
    /// document changed (the old one is kept, reason included, when the values are the
    /// same; `new`: the placeholder document is always replaced).
    fn update(
        &self,
        inner: &mut Inner,
        pods: Option<&dyn PodMemoryLimits>,
        node_id: &str,
        new: bool,
        change: impl FnOnce(&mut Instance),
    ) -> bool {
        let policies = inner.policies.clone();
        let Some(instance) = inner.instances.get_mut(node_id) else {
            return false;
        };
        let before = instance.flag();
        change(instance);
        let document = compute(&policies, pods, node_id, instance);
        let changed = new || document.version != instance.document.version;
        if changed {
            instance.document = document;
        }
        let after = instance.flag();
        self.reflag(inner, before, after);
        changed
    }

    /// Moves one instance's contribution to the `heap_near_limit` series.
    fn reflag(
        &self,
        inner: &mut Inner,
        before: Option<WorkloadLabels>,
        after: Option<WorkloadLabels>,
    ) {
        if before == after {
            return;
        }
        if let Some(labels) = before {
            let left = inner.flagged.get_mut(&labels).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left == Some(0) {
                inner.flagged.remove(&labels);
                // No series left behind for a workload that is fine again.
                self.metrics.heap_near_limit.remove(&labels);
            }
        }
        if let Some(labels) = after {
            let count = inner.flagged.entry(labels.clone()).or_default();
            *count += 1;
            if *count == 1 {
                self.metrics.heap_near_limit.get_or_create(&labels).set(1);
            }
        }
    }

    fn count(&self, inner: &Inner) {
        self.metrics
            .instances
            .set(i64::try_from(inner.instances.len()).unwrap_or(i64::MAX));
    }
}

/// The document for `instance` now: the selecting policy, the memory limit (Pod spec,
/// else the report), the heap, and what it was last given under the same policy.
fn compute(
    policies: &[Policy],
    pods: Option<&dyn PodMemoryLimits>,
    node_id: &str,
    instance: &Instance,
) -> TuningDocument {
    let workload = instance.workload();
    let Some(policy) = select(policies, Kind::Tuning, &workload) else {
        return TuningDocument::new(
            node_id,
            String::new(),
            None,
            None,
            false,
            format!(
                "no RuntimeTuning policy selects {}: nothing set",
                workload.key()
            ),
        );
    };
    let id = format!("{}/{}", policy.namespace, policy.name);
    let settings = match TuningSettings::from_config(&policy.config) {
        Ok(settings) => settings,
        // Sources refuse invalid policies; should one get through, set nothing.
        Err(err) => {
            return TuningDocument::new(
                node_id,
                id,
                None,
                None,
                false,
                format!("invalid policy, nothing set: {err}"),
            )
        }
    };
    let identity = &instance.identity;
    let from_pod = pods
        .filter(|_| !identity.pod.is_empty())
        .and_then(|p| p.limit(&identity.namespace, &identity.pod, &identity.container));
    let (limit, source) = match from_pod {
        Some(limit) => (limit, "Pod spec"),
        None => (instance.reported_limit, "agent report"),
    };
    let previous = &instance.document;
    let last = (previous.policy == id).then_some(Last {
        gc_percent: previous.gc_percent,
        heap_near_limit: previous.heap_near_limit,
    });
    let out = formula::compute(&settings, limit, instance.heap, last);
    TuningDocument::new(
        node_id,
        id,
        out.memory_limit_bytes,
        out.gc_percent,
        out.heap_near_limit,
        format!("{} (limit from the {source})", out.reason),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Scope, Selector};
    use serde_json::json;

    fn policy(name: &str, selector: Selector, config: serde_json::Value) -> Policy {
        Policy {
            kind: Kind::Tuning,
            namespace: "shop".into(),
            name: name.into(),
            selector,
            scope: Scope::PerReplica,
            config,
            source: format!("{name}.yaml"),
        }
    }

    fn adaptive() -> serde_json::Value {
        json!({"gogc": {"adaptive": {"min": 50, "max": 400}}})
    }

    fn report(node: &str, limit: Option<u64>, heap: Option<u64>) -> Report {
        Report {
            node_id: node.into(),
            identity: Identity {
                namespace: "shop".into(),
                workload: "orders".into(),
                labels: [("app".to_string(), "orders".to_string())].into(),
                pod: format!("{node}-pod"),
                container: "app".into(),
            },
            memory_limit_bytes: limit,
            live_heap_bytes: heap,
            agent: "test/1".into(),
        }
    }

    fn tuning() -> Tuning {
        let t = Tuning::new(TuningMetrics::default());
        t.set_policies(Arc::new(vec![policy(
            "orders-gc",
            Selector::default(),
            adaptive(),
        )]));
        t
    }

    #[test]
    fn a_report_gets_a_document_and_the_same_values_keep_the_version() {
        let t = tuning();
        let mut changes = t.subscribe();
        let doc = t.report(report("a", Some(1000), Some(320))).unwrap();
        assert_eq!(doc.policy, "shop/orders-gc");
        assert_eq!(doc.memory_limit_bytes, Some(900));
        assert_eq!(doc.gc_percent, Some(150));
        assert_eq!(doc.version.len(), 16);
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        // Within the step: same document, reason included, no wake-up.
        let again = t.report(report("a", Some(1000), Some(310))).unwrap();
        assert_eq!(again, doc);
        assert!(!changes.has_changed().unwrap());
        // A real move: new version, wake-up.
        let moved = t.report(report("a", Some(1000), Some(200))).unwrap();
        assert_eq!(moved.gc_percent, Some(300));
        assert_ne!(moved.version, doc.version);
        assert!(changes.has_changed().unwrap());
    }

    #[test]
    fn unselected_workloads_get_an_empty_document() {
        let t = Tuning::new(TuningMetrics::default());
        let doc = t.report(report("a", Some(1000), Some(320))).unwrap();
        assert_eq!(doc.policy, "");
        assert_eq!((doc.memory_limit_bytes, doc.gc_percent), (None, None));
        assert!(doc
            .reason
            .contains("no RuntimeTuning policy selects shop/orders"));
        // A policy appears: recomputed, waiters woken.
        let changes = t.subscribe();
        t.set_policies(Arc::new(vec![policy(
            "orders-gc",
            Selector::default(),
            json!({"gogc": {"fixed": 200}}),
        )]));
        assert!(changes.has_changed().unwrap());
        assert_eq!(t.document("a").unwrap().gc_percent, Some(200));
        // Another namespace's policy does not select it.
        let mut other = policy("x", Selector::default(), adaptive());
        other.namespace = "billing".into();
        t.set_policies(Arc::new(vec![other]));
        assert_eq!(t.document("a").unwrap().policy, "");
    }

    struct Pods;
    impl PodMemoryLimits for Pods {
        fn limit(&self, _: &str, pod: &str, _: &str) -> Option<Option<u64>> {
            match pod {
                "a-pod" => Some(Some(2000)),
                "b-pod" => Some(None),
                _ => None,
            }
        }
    }

    #[test]
    fn pod_limits_win_over_reports_and_unknown_pods_fall_back() {
        let t = tuning();
        t.report(report("a", Some(1000), Some(320))).unwrap();
        t.report(report("b", Some(1000), Some(320))).unwrap();
        t.report(report("c", Some(1000), Some(320))).unwrap();
        let changes = t.subscribe();
        t.set_pod_memory_limits(Arc::new(Pods));
        assert!(changes.has_changed().unwrap());
        let a = t.document("a").unwrap();
        assert_eq!(a.memory_limit_bytes, Some(1800));
        assert!(a.reason.contains("limit from the Pod spec"), "{}", a.reason);
        let b = t.document("b").unwrap();
        assert_eq!(b.memory_limit_bytes, None);
        assert_eq!(b.gc_percent, Some(100));
        let c = t.document("c").unwrap();
        assert_eq!(c.memory_limit_bytes, Some(900));
        assert!(
            c.reason.contains("limit from the agent report"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn confirmations_and_policy_status() {
        let t = tuning();
        let a = t.report(report("a", Some(1000), Some(320))).unwrap();
        t.report(report("b", Some(1000), Some(900))).unwrap();
        let status = t.policy_status("shop", "orders-gc");
        assert_eq!(status.instances, 2);
        assert_eq!(status.delivered, 0);
        assert_eq!(status.heap_near_limit, vec!["b".to_string()]);
        let mut status_changes = t.subscribe_status();
        t.confirm("a", &a.version);
        assert!(status_changes.has_changed().unwrap());
        status_changes.borrow_and_update();
        t.confirm("a", &a.version);
        assert!(!status_changes.has_changed().unwrap(), "nothing new");
        t.confirm("b", "an-old-version");
        assert_eq!(t.policy_status("shop", "orders-gc").delivered, 1);
        assert_eq!(
            t.policy_status("shop", "other"),
            TuningPolicyStatus::default()
        );
        let status = t.status();
        assert_eq!(status["a"]["delivered"], true);
        assert_eq!(status["b"]["delivered"], false);
        assert_eq!(status["b"]["heapNearLimit"], true);
        assert_eq!(status["a"]["gcPercent"], 150);
    }

    #[test]
    fn the_heap_near_limit_series_follows_the_flagged_instances() {
        let metrics = TuningMetrics::default();
        let t = Tuning::new(metrics.clone());
        t.set_policies(Arc::new(vec![policy("g", Selector::default(), adaptive())]));
        let labels = WorkloadLabels {
            namespace: "shop".into(),
            workload: "orders".into(),
        };
        let series = |m: &TuningMetrics| {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("h", "h", m.heap_near_limit.clone());
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out.contains("h{namespace=\"shop\",workload=\"orders\"} 1")
        };
        t.report(report("a", Some(1000), Some(900))).unwrap();
        t.report(report("b", Some(1000), Some(900))).unwrap();
        assert_eq!(metrics.heap_near_limit.get_or_create(&labels).get(), 1);
        t.report(report("a", Some(1000), Some(100))).unwrap();
        assert!(series(&metrics), "b is still flagged");
        t.report(report("b", Some(1000), Some(100))).unwrap();
        assert!(!series(&metrics), "no instance flagged: series removed");
        assert_eq!(metrics.instances.get(), 2);
    }

    #[test]
    fn idle_instances_are_forgotten_but_streams_hold_them() {
        let metrics = TuningMetrics::default();
        let t = Tuning::with_limits(metrics.clone(), Duration::ZERO, 10);
        t.set_policies(Arc::new(vec![policy("g", Selector::default(), adaptive())]));
        t.report(report("a", Some(1000), Some(900))).unwrap();
        let held = report("b", None, None);
        t.attach("b", held.identity, Some(1000)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        t.sweep();
        assert!(t.document("a").is_none());
        assert!(t.document("b").is_some());
        assert_eq!(metrics.instances.get(), 1);
        assert!(t.policy_status("shop", "g").heap_near_limit.is_empty());
        t.detach("b");
        std::thread::sleep(Duration::from_millis(5));
        t.sweep();
        assert!(t.document("b").is_none());
        assert_eq!(metrics.instances.get(), 0);
    }

    #[test]
    fn the_number_of_instances_is_capped() {
        let t = Tuning::with_limits(TuningMetrics::default(), DEFAULT_TTL, 2);
        t.report(report("a", None, None)).unwrap();
        t.report(report("b", None, None)).unwrap();
        let err = t.report(report("c", None, None)).unwrap_err();
        assert!(
            err.contains("instance c refused: 2 runtime-tuning instances"),
            "{err}"
        );
        // Known instances keep reporting.
        t.report(report("a", Some(1000), Some(10))).unwrap();
    }

    #[test]
    fn reports_are_checked_field_by_field() {
        let mut r = report("a", None, None);
        assert_eq!(r.check(), Ok(()));
        r.identity.workload.clear();
        assert_eq!(
            r.check().unwrap_err(),
            "workload: required, must not be empty"
        );
        let mut r = report("", None, None);
        assert!(r.check().unwrap_err().starts_with("nodeId:"));
        r = report("a", None, None);
        r.identity.pod = "p".repeat(300);
        assert_eq!(r.check().unwrap_err(), "pod: longer than 256 bytes");
        r = report("a", None, None);
        r.identity.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(r.check().unwrap_err(), "labels: more than 64");
    }

    #[test]
    fn documents_convert_to_the_xds_message() {
        let t = tuning();
        let doc = t.report(report("a", Some(1000), Some(320))).unwrap();
        let message = doc.to_proto();
        assert_eq!(message.node_id, "a");
        assert_eq!(message.version, doc.version);
        assert_eq!(message.gc_percent, Some(150));
        assert_eq!(message.memory_limit_bytes, Some(900));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["nodeId"], "a");
        assert_eq!(json["gcPercent"], 150);
        let empty = Tuning::new(TuningMetrics::default())
            .report(report("a", None, None))
            .unwrap();
        let json = serde_json::to_value(&empty).unwrap();
        assert!(json.get("gcPercent").is_none() && json.get("memoryLimitBytes").is_none());
    }
}
