//! Meshward runtime-tuning agent for Rust applications (docs/adr/0007-runtime-tuning.md).
//!
//! The agent connects to the control plane's gRPC port, subscribes over ADS (xDS
//! state-of-the-world) to the [`RuntimeTuning`] document named after its node id, hands
//! every new document to the application's callback and ACKs it (NACKs what it cannot
//! decode), and reports the container memory limit and the live heap with
//! `meshward.tuning.v1.RuntimeReports/Report`, on an interval and on demand.
//!
//! Rust has no garbage collector, so there is no GOGC/GOMEMLIMIT to set: the callback is
//! where the application applies the numbers to whatever knobs it has (an allocator's
//! decay/purge settings, a cache size, a concurrency limit, ...). Likewise the "live
//! heap" is whatever the application passes to [`Reporter::report_heap`], typically
//! allocator statistics (e.g. jemalloc's `stats.allocated`); until it reports one the
//! heap is 0, which the control plane reads as "no heap report yet".
//!
//! ```no_run
//! # async fn example() -> Result<(), meshward_tuning_agent::BuildError> {
//! use meshward_tuning_agent::Agent;
//!
//! let agent = Agent::builder("http://meshward-control-plane.meshward:18000")
//!     .node("orders-7d9f.shop", "shop", "orders", [("app", "orders")])
//!     .pod("orders-7d9f", "app")
//!     .build()?;
//! let reporter = agent.reporter();
//! // Somewhere in the application, e.g. after a periodic allocator stats read:
//! reporter.report_heap(64 << 20);
//! agent
//!     .run(
//!         |tuning| println!("memory limit {:?}, gc percent {:?}", tuning.memory_limit_bytes, tuning.gc_percent),
//!         async { let _ = tokio::signal::ctrl_c().await; },
//!     )
//!     .await;
//! # Ok(()) }
//! ```
//!
//! Failure handling: when the connection or the stream fails the agent reconnects with
//! a bounded exponential backoff (default 200 ms doubling to 5 s, with jitter); every
//! RPC has a timeout (default 5 s; the ADS stream's timeout covers opening it, HTTP/2
//! keep-alive pings detect a dead peer afterwards). Nothing panics; what goes wrong is
//! reported through [`AgentBuilder::on_event`] and `tracing`.

mod backoff;
pub mod cgroup;
mod xds;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshward_proto::tuning::v1::runtime_reports_client::RuntimeReportsClient;
use meshward_proto::tuning::v1::{RuntimeReport, RUNTIME_TUNING_TYPE_URL};
use tokio::sync::{mpsc, Notify};
use tokio::time::{timeout, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub use meshward_proto::tuning::v1::RuntimeTuning;

use backoff::Backoff;
use xds::Identity;

/// Sent as the node's `user_agent_name`/version and as `agent` in reports.
const AGENT: &str = concat!("meshward-tuning-agent-rust/", env!("CARGO_PKG_VERSION"));
/// The heap moved by more than this fraction since the last report: report at once
/// (docs/adr/0007, "Agents report ...").
const HEAP_CHANGE_FRACTION: u64 = 10; // 1/10 = 10 %
/// How often an idle connection is pinged, to notice a control plane that vanished
/// without closing the connection.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest report interval accepted (an interval of zero cannot tick).
const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(10);

/// What happened, for the application's logs or metrics ([`AgentBuilder::on_event`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The ADS stream is open (also after every reconnection).
    Connected,
    /// The connection or stream failed; the next attempt is in `retry_in`.
    Disconnected { error: String, retry_in: Duration },
    /// A response could not be used and was NACKed (the previous settings stay).
    Nacked { version: String, error: String },
    /// A report went through; `current` is the control plane's document after it.
    Reported {
        live_heap_bytes: u64,
        current: Option<RuntimeTuning>,
    },
    /// A report failed; the next one is on the next interval or demand.
    ReportFailed { error: String },
}

type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

/// Why [`AgentBuilder::build`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The endpoint is not a URL tonic can connect to (e.g. `http://host:18000`).
    Endpoint(String),
    /// A required field is empty: `node id`, `namespace` or `workload`.
    Missing(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Endpoint(error) => write!(f, "control plane endpoint: {error}"),
            BuildError::Missing(field) => write!(f, "{field} is required"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Configures an [`Agent`]; see [`Agent::builder`].
pub struct AgentBuilder {
    endpoint: String,
    identity: Identity,
    /// `None`: read the cgroup limit at build time.
    memory_limit: Option<Option<u64>>,
    report_interval: Duration,
    rpc_timeout: Duration,
    backoff: (Duration, Duration),
    on_event: Option<EventHook>,
}

impl AgentBuilder {
    /// Who this process is: its node id (unique per process, e.g. `pod.namespace`), the
    /// workload's namespace, name and labels (policies select on them).
    pub fn node<K, V>(
        mut self,
        id: impl Into<String>,
        namespace: impl Into<String>,
        workload: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.identity.node_id = id.into();
        self.identity.namespace = namespace.into();
        self.identity.workload = workload.into();
        self.identity.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect::<BTreeMap<_, _>>();
        self
    }

    /// The Kubernetes pod and container: in Kubernetes mode the control plane reads the
    /// memory limit from the Pod spec.
    pub fn pod(mut self, pod: impl Into<String>, container: impl Into<String>) -> Self {
        self.identity.pod = pod.into();
        self.identity.container = container.into();
        self
    }

    /// Overrides the container memory limit (bytes; 0 = none) instead of reading the
    /// cgroup's (`memory.max` / `memory.limit_in_bytes`).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some((bytes > 0).then_some(bytes));
        self
    }

    /// How often the heap is reported without being asked (default 5 s; at least 10 ms).
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval.max(MIN_REPORT_INTERVAL);
        self
    }

    /// The timeout of every RPC: connecting, opening the stream, answering on it, a
    /// report (default 5 s).
    pub fn rpc_timeout(mut self, rpc_timeout: Duration) -> Self {
        self.rpc_timeout = rpc_timeout;
        self
    }

    /// Reconnection delays: from `initial`, doubling up to `max` (default 200 ms, 5 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max);
        self
    }

    /// Called for every [`Event`], from the agent's task: keep it short.
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// Checks the settings and, unless overridden, reads the cgroup memory limit (an
    /// unreadable one counts as none and is logged).
    pub fn build(self) -> Result<Agent, BuildError> {
        for (value, field) in [
            (&self.identity.node_id, "node id"),
            (&self.identity.namespace, "namespace"),
            (&self.identity.workload, "workload"),
        ] {
            if value.trim().is_empty() {
                return Err(BuildError::Missing(field));
            }
        }
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| BuildError::Endpoint(format!("{:?}: {e}", self.endpoint)))?
            .connect_timeout(self.rpc_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(self.rpc_timeout)
            .keep_alive_while_idle(true);
        let mut identity = self.identity;
        identity.memory_limit_bytes = match self.memory_limit {
            Some(limit) => limit,
            None => cgroup::detect_memory_limit().unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read the cgroup memory limit; reporting none");
                None
            }),
        };
        Ok(Agent {
            endpoint,
            identity,
            report_interval: self.report_interval,
            rpc_timeout: self.rpc_timeout,
            backoff: self.backoff,
            on_event: self.on_event,
            shared: Arc::new(Shared::default()),
        })
    }
}

/// State shared between the agent's loops and its [`Reporter`]s.
#[derive(Default)]
struct Shared {
    /// The live heap the application last gave.
    heap: AtomicU64,
    /// The live heap in the last report that went through.
    reported_heap: AtomicU64,
    /// Asks the report loop for a report now (a permit is kept if it is busy).
    report_now: Notify,
}

/// Hands the application's heap figure to a running [`Agent`]; cheap to clone, usable
/// from any thread.
#[derive(Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("heap", &self.shared.heap.load(Ordering::Relaxed))
            .finish()
    }
}

impl Reporter {
    /// Sets the live heap (bytes; whatever the application measures, e.g. allocator
    /// statistics — Rust has no GC heap). It is reported on the next interval, or at once
    /// when it moved by more than 10 % since the last report (as the Go agent does), so
    /// calling this often is cheap.
    pub fn report_heap(&self, live_heap_bytes: u64) {
        self.shared.heap.store(live_heap_bytes, Ordering::Relaxed);
        let reported = self.shared.reported_heap.load(Ordering::Relaxed);
        if heap_moved(reported, live_heap_bytes) {
            self.shared.report_now.notify_one();
        }
    }

    /// Reports the current figures at once.
    pub fn report_now(&self) {
        self.shared.report_now.notify_one();
    }
}

/// More than 10 % away from the last reported heap (any change from 0).
fn heap_moved(reported: u64, now: u64) -> bool {
    u128::from(reported.abs_diff(now)) * u128::from(HEAP_CHANGE_FRACTION) > u128::from(reported)
        || (reported == 0 && now != 0)
}

/// A configured agent; [`Agent::run`] does the work.
pub struct Agent {
    endpoint: Endpoint,
    identity: Identity,
    report_interval: Duration,
    rpc_timeout: Duration,
    backoff: (Duration, Duration),
    on_event: Option<EventHook>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("endpoint", &self.endpoint.uri())
            .field("identity", &self.identity)
            .field("report_interval", &self.report_interval)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl Agent {
    /// Starts configuring an agent for the control plane's gRPC endpoint, e.g.
    /// `http://meshward-control-plane.meshward:18000` (plaintext HTTP/2).
    pub fn builder(endpoint: impl Into<String>) -> AgentBuilder {
        AgentBuilder {
            endpoint: endpoint.into(),
            identity: Identity {
                agent: AGENT.to_owned(),
                ..Identity::default()
            },
            memory_limit: None,
            report_interval: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(5),
            backoff: (Duration::from_millis(200), Duration::from_secs(5)),
            on_event: None,
        }
    }

    /// A handle to report the heap with, before or while the agent runs.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.identity.node_id
    }

    /// The memory limit reported (detected or overridden); `None`: none.
    pub fn memory_limit(&self) -> Option<u64> {
        self.identity.memory_limit_bytes
    }

    /// Runs until `shutdown` completes: keeps the ADS stream up (reconnecting with
    /// backoff), calls `on_apply` with every document that differs from the one applied
    /// last (so a reconnection that re-sends the same content does not call it again),
    /// and reports on the interval, on demand and after every (re)connection (a
    /// restarted control plane has lost the heap figures).
    ///
    /// `on_apply` runs on the agent's task: keep it short and do not block.
    pub async fn run<F, S>(self, mut on_apply: F, shutdown: S)
    where
        F: FnMut(&RuntimeTuning) + Send,
        S: Future<Output = ()> + Send,
    {
        let channel = self.endpoint.connect_lazy();
        let ads = self.ads_loop(channel.clone(), &mut on_apply);
        let reports = self.report_loop(channel);
        tokio::select! {
            () = shutdown => {}
            _ = async { tokio::join!(ads, reports) } => {}
        }
    }

    fn emit(&self, event: Event) {
        if let Some(hook) = &self.on_event {
            hook(&event);
        }
    }

    async fn ads_loop<F: FnMut(&RuntimeTuning)>(&self, channel: Channel, on_apply: &mut F) {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut state = AdsState::default();
        loop {
            let error = self
                .ads_session(channel.clone(), &mut state, &mut backoff, on_apply)
                .await;
            let retry_in = backoff.next_delay();
            tracing::warn!(%error, ?retry_in, "ADS stream ended; reconnecting");
            self.emit(Event::Disconnected { error, retry_in });
            tokio::time::sleep(retry_in).await;
        }
    }

    /// One ADS stream, until it fails; returns why.
    async fn ads_session<F: FnMut(&RuntimeTuning)>(
        &self,
        channel: Channel,
        state: &mut AdsState,
        backoff: &mut Backoff,
        on_apply: &mut F,
    ) -> String {
        let node_id = self.identity.node_id.as_str();
        let (requests, outgoing) = mpsc::channel(4);
        if requests
            .try_send(xds::subscribe(&self.identity, &state.accepted_version))
            .is_err()
        {
            return "cannot queue the subscription".into();
        }
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let opened = timeout(
            self.rpc_timeout,
            client.stream_aggregated_resources(ReceiverStream::new(outgoing)),
        )
        .await;
        let mut responses = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return format!("opening the ADS stream: {status}"),
            Err(_) => {
                return format!(
                    "opening the ADS stream timed out after {:?}",
                    self.rpc_timeout
                )
            }
        };
        backoff.reset();
        self.emit(Event::Connected);
        self.shared.report_now.notify_one();
        loop {
            let response = match responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return "the control plane ended the ADS stream".into(),
                Err(status) => return format!("ADS stream: {status}"),
            };
            if response.type_url != RUNTIME_TUNING_TYPE_URL {
                // Not subscribed to: nothing to apply, and answering could subscribe to it.
                tracing::debug!(type_url = %response.type_url, "ignoring a response of another type");
                continue;
            }
            let answer = match xds::decode(node_id, &response) {
                Ok(tuning) => {
                    if let Some(tuning) = tuning {
                        if state.applied.as_ref() != Some(&tuning) {
                            on_apply(&tuning);
                            state.applied = Some(tuning);
                        }
                    }
                    state.accepted_version.clone_from(&response.version_info);
                    xds::ack(node_id, &response)
                }
                Err(error) => {
                    tracing::warn!(%error, version = %response.version_info, "NACK");
                    self.emit(Event::Nacked {
                        version: response.version_info.clone(),
                        error: error.clone(),
                    });
                    xds::nack(node_id, &response, &state.accepted_version, &error)
                }
            };
            match timeout(self.rpc_timeout, requests.send(answer)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return "the ADS request stream closed".into(),
                Err(_) => {
                    return format!(
                        "answering on the ADS stream timed out after {:?}",
                        self.rpc_timeout
                    )
                }
            }
        }
    }

    async fn report_loop(&self, channel: Channel) {
        let mut client = RuntimeReportsClient::new(channel);
        // The first report goes out when the ADS stream opens (it asks for one); the
        // interval is the fallback.
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.report_interval,
            self.report_interval,
        );
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.shared.report_now.notified() => ticks.reset(),
            }
            let heap = self.shared.heap.load(Ordering::Relaxed);
            let mut request = tonic::Request::new(report(&self.identity, heap));
            request.set_timeout(self.rpc_timeout);
            let event = match timeout(self.rpc_timeout, client.report(request)).await {
                Ok(Ok(reply)) => {
                    self.shared.reported_heap.store(heap, Ordering::Relaxed);
                    Event::Reported {
                        live_heap_bytes: heap,
                        current: reply.into_inner().current,
                    }
                }
                Ok(Err(status)) => Event::ReportFailed {
                    error: format!("report: {status}"),
                },
                Err(_) => Event::ReportFailed {
                    error: format!("report timed out after {:?}", self.rpc_timeout),
                },
            };
            if let Event::ReportFailed { error } = &event {
                tracing::warn!(%error, "heap report failed");
            }
            self.emit(event);
        }
    }
}

/// What survives a reconnection.
#[derive(Default)]
struct AdsState {
    /// `version_info` of the last ACKed response (sent again when reconnecting).
    accepted_version: String,
    /// The document last handed to the callback.
    applied: Option<RuntimeTuning>,
}

/// The report for the current figures.
fn report(identity: &Identity, live_heap_bytes: u64) -> RuntimeReport {
    RuntimeReport {
        node_id: identity.node_id.clone(),
        namespace: identity.namespace.clone(),
        workload: identity.workload.clone(),
        labels: identity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        pod: identity.pod.clone(),
        container: identity.container.clone(),
        memory_limit_bytes: identity
            .memory_limit_bytes
            .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX)),
        live_heap_bytes: i64::try_from(live_heap_bytes).unwrap_or(i64::MAX),
        agent: identity.agent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> AgentBuilder {
        Agent::builder("http://127.0.0.1:18000").node(
            "orders-1.shop",
            "shop",
            "orders",
            [("app", "orders")],
        )
    }

    #[test]
    fn build_checks_required_fields_and_the_endpoint() {
        assert!(builder().memory_limit(1).build().is_ok());
        let missing = Agent::builder("http://127.0.0.1:1").build().unwrap_err();
        assert_eq!(missing, BuildError::Missing("node id"));
        let missing = Agent::builder("http://127.0.0.1:1")
            .node("n", "", "w", [("a", "b")])
            .build()
            .unwrap_err();
        assert_eq!(missing.to_string(), "namespace is required");
        let bad = Agent::builder("http://exa mple:1")
            .node("n", "ns", "w", Vec::<(String, String)>::new())
            .build()
            .unwrap_err();
        assert!(matches!(bad, BuildError::Endpoint(_)), "{bad:?}");
    }

    #[test]
    fn memory_limit_override_wins_and_zero_is_none() {
        assert_eq!(
            builder()
                .memory_limit(256 << 20)
                .build()
                .unwrap()
                .memory_limit(),
            Some(256 << 20)
        );
        assert_eq!(
            builder().memory_limit(0).build().unwrap().memory_limit(),
            None
        );
    }

    #[test]
    fn report_carries_identity_limit_and_heap() {
        let agent = builder()
            .pod("orders-7d9f", "app")
            .memory_limit(256 << 20)
            .build()
            .unwrap();
        let report = report(&agent.identity, 64 << 20);
        assert_eq!(report.node_id, "orders-1.shop");
        assert_eq!(report.namespace, "shop");
        assert_eq!(report.workload, "orders");
        assert_eq!(report.labels.get("app").map(String::as_str), Some("orders"));
        assert_eq!(report.pod, "orders-7d9f");
        assert_eq!(report.container, "app");
        assert_eq!(report.memory_limit_bytes, Some(256 << 20));
        assert_eq!(report.live_heap_bytes, 64 << 20);
        assert!(
            report.agent.starts_with("meshward-tuning-agent-rust/"),
            "{}",
            report.agent
        );
        // Out of i64 range: clamped, not wrapped to a negative number.
        assert_eq!(
            super::report(&agent.identity, u64::MAX).live_heap_bytes,
            i64::MAX
        );
    }

    #[test]
    fn heap_changes_over_ten_percent_trigger_a_report() {
        assert!(heap_moved(0, 1));
        assert!(!heap_moved(0, 0));
        assert!(!heap_moved(100, 110));
        assert!(heap_moved(100, 111));
        assert!(!heap_moved(100, 90));
        assert!(heap_moved(100, 89));
        assert!(heap_moved(u64::MAX, 0));
    }

    #[test]
    fn report_heap_wakes_the_report_loop_only_on_a_real_move() {
        let agent = builder().memory_limit(1).build().unwrap();
        let reporter = agent.reporter();
        agent
            .shared
            .reported_heap
            .store(100 << 20, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let woken = |reporter: &Reporter, heap| {
            reporter.report_heap(heap);
            runtime.block_on(async {
                timeout(
                    Duration::from_millis(20),
                    agent.shared.report_now.notified(),
                )
                .await
                .is_ok()
            })
        };
        assert!(!woken(&reporter, 105 << 20));
        assert_eq!(agent.shared.heap.load(Ordering::Relaxed), 105 << 20);
        assert!(woken(&reporter, 200 << 20));
        reporter.report_now();
        let forced = runtime.block_on(async {
            timeout(
                Duration::from_millis(20),
                agent.shared.report_now.notified(),
            )
            .await
        });
        assert!(forced.is_ok());
    }
}
