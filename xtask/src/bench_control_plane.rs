//! `cargo xtask bench control-plane`: how fast one policy edit reaches N proxies.
//!
//! The control plane runs as its own process (release build, pinned to CPU 0) with a
//! temporary policy directory. This command, run from its own release build (pinned to
//! CPU 1; a debug xtask builds it and hands over), is the load: N SotW ADS
//! streams over a few HTTP/2 connections, each with its own node (N/W replicas of W
//! workloads in namespace `bench`), subscribed to `meshward.ratelimit` and ACKing every
//! response like Envoy does. One RateLimitPolicy, the namespace default with
//! `scope: workload`, configures all of them; every edit renames its rule to
//! `bench-round-<k>`, so every proxy's config changes and each response says which edit
//! it carries. Per edit: the time from the file write to each client receiving it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::run::{cargo, output, root, step};
use crate::setup;

const USAGE: &str = "usage: cargo xtask bench control-plane [--clients N] [--rounds N] [--connections N] [--workloads N]";
const TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const RESOURCE: &str = "meshward.ratelimit";
const NAMESPACE: &str = "bench";
/// The rule name in the policy: `bench-round-<k>` after edit k (0: the initial file).
const MARKER: &[u8] = b"bench-round-";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// No response for this long: the control plane has settled.
const QUIET: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
struct Options {
    clients: usize,
    rounds: usize,
    connections: usize,
    workloads: usize,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        clients: 1000,
        rounds: 5,
        connections: 50,
        workloads: 100,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|v| *v > 0)
            .ok_or(format!("{flag} needs a positive number\n{USAGE}"))?;
        match flag.as_str() {
            "--clients" => options.clients = value,
            "--rounds" => options.rounds = value,
            "--connections" => options.connections = value,
            "--workloads" => options.workloads = value,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    options.connections = options.connections.min(options.clients);
    options.workloads = options.workloads.min(options.clients);
    Ok(options)
}

/// The policy after edit `round`: one namespace default, split over each workload's
/// replicas, whose rule name and figure change with every edit.
fn policy(round: usize) -> String {
    format!(
        "apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: bench-default, namespace: {NAMESPACE}}}
spec:
  scope: workload
  config:
    rules:
      - name: bench-round-{round}
        key: [{{type: clientAddress}}]
        limit: {{algorithm: tokenBucket, requests: {requests}, per: 1s, burst: {requests}}}
",
        requests = 1000 * (round + 1)
    )
}

/// Which edit a resource carries (the digits after the marker in its bytes: the filter
/// JSON is embedded verbatim in the encoded TypedExtensionConfig).
fn round_of(bytes: &[u8]) -> Option<usize> {
    let at = bytes
        .windows(MARKER.len())
        .position(|window| window == MARKER)?
        + MARKER.len();
    let digits: String = bytes
        .get(at..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    digits.parse().ok()
}

/// Writes the policy file atomically (the poller never sees half a file).
fn write_policy(dir: &Path, round: usize) -> Result<(), String> {
    let temporary = dir.join(".ratelimit.yaml.tmp");
    let path = dir.join("ratelimit.yaml");
    std::fs::write(&temporary, policy(round))
        .map_err(|e| format!("write {}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, &path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

fn clock_ticks() -> f64 {
    output("getconf", &["CLK_TCK"])
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(14) + field(15)) / ticks
}

/// Time on CPU of a process's live threads (`/proc/<pid>/task/*/schedstat`), in
/// seconds: nanosecond resolution for the short edit rounds, where clock ticks (10 ms)
/// are too coarse.
fn thread_cpu_seconds(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// A `/proc/<pid>/status` figure in kB (VmHWM, VmRSS).
fn status_kb(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(':')?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// The control plane process; killed when dropped.
struct ControlPlane {
    child: Child,
    pid: String,
    xds_addr: String,
    /// When its log said it saw a policy change.
    detections: Arc<Mutex<Vec<Instant>>>,
}

impl ControlPlane {
    fn start(binary: &Path, policy_dir: &Path, pin: bool) -> Result<Self, String> {
        let mut command = if pin {
            let mut command = Command::new("taskset");
            command.args(["-c", "0"]).arg(binary);
            command
        } else {
            Command::new(binary)
        };
        command
            .arg("--policy-dir")
            .arg(policy_dir)
            .args(["--xds-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().to_string();
        let detections = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let detections = detections.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("policies changed") {
                        let mut seen = detections
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        seen.push(Instant::now());
                    } else {
                        println!("    [control plane] {line}");
                    }
                }
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or("the control plane's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut xds_addr, mut http_addr) = (None, None);
        while xds_addr.is_none() || http_addr.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!(
                    "the control plane exited ({status}) before printing its addresses"
                ));
            };
            if let Some(addr) = line.strip_prefix("xds ") {
                xds_addr = Some(addr.trim().to_string());
            } else if let Some(addr) = line.strip_prefix("http ") {
                http_addr = Some(addr.trim().to_string());
            }
        }
        // Nothing more is expected on stdout; keep draining it anyway.
        std::thread::spawn(move || lines.for_each(drop));
        println!(
            "control plane pid {pid}: xds {} http {}",
            xds_addr.as_deref().unwrap_or_default(),
            http_addr.as_deref().unwrap_or_default()
        );
        Ok(Self {
            child,
            pid,
            xds_addr: xds_addr.unwrap_or_default(),
            detections,
        })
    }

    /// The first detection at or after `since`.
    fn detected_after(&self, since: Instant) -> Option<Instant> {
        self.detections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .find(|at| *at >= since)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Event {
    Response {
        client: usize,
        round: Option<usize>,
        at: Instant,
    },
    Ended {
        client: usize,
        error: String,
    },
}

fn node(client: usize, workloads: usize) -> Node {
    let text = |s: String| Value {
        kind: Some(value::Kind::StringValue(s)),
    };
    let workload = format!("w{}", client % workloads);
    let labels = Struct {
        fields: [("app".to_string(), text(workload.clone()))].into(),
    };
    Node {
        id: format!("bench-{client}.{NAMESPACE}"),
        cluster: workload.clone(),
        metadata: Some(Struct {
            fields: [
                ("NAMESPACE".to_string(), text(NAMESPACE.into())),
                ("WORKLOAD_NAME".to_string(), text(workload)),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(value::Kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

/// One simulated proxy: subscribes, reports every response, ACKs it.
async fn client(
    index: usize,
    channel: Channel,
    node: Node,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let (requests, outgoing) = mpsc::channel(4);
    let request = |version_info: String, response_nonce: String| DiscoveryRequest {
        version_info,
        resource_names: vec![RESOURCE.into()],
        type_url: TYPE_URL.into(),
        response_nonce,
        ..Default::default()
    };
    let first = DiscoveryRequest {
        node: Some(node),
        ..request(String::new(), String::new())
    };
    requests
        .send(first)
        .await
        .map_err(|_| "request stream closed".to_string())?;
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(outgoing))
        .await
        .map_err(|status| format!("open stream: {status}"))?
        .into_inner();
    while let Some(response) = responses
        .message()
        .await
        .map_err(|status| format!("stream: {status}"))?
    {
        let at = Instant::now();
        let round = response.resources.iter().find_map(|r| round_of(&r.value));
        let _ = events.send(Event::Response {
            client: index,
            round,
            at,
        });
        requests
            .send(request(response.version_info, response.nonce))
            .await
            .map_err(|_| "request stream closed".to_string())?;
    }
    Err("the server ended the stream".into())
}

/// What the clients have, fed by their events.
struct Tracker {
    latest: Vec<Option<usize>>,
    /// First arrival of the round being waited for, per client.
    arrivals: Vec<Option<Instant>>,
    target: usize,
    responses: u64,
    reached: usize,
}

impl Tracker {
    fn new(clients: usize) -> Self {
        Self {
            latest: vec![None; clients],
            arrivals: vec![None; clients],
            target: 0,
            responses: 0,
            reached: 0,
        }
    }

    fn expect(&mut self, round: usize) {
        self.target = round;
        self.arrivals.iter_mut().for_each(|a| *a = None);
        self.responses = 0;
        self.reached = self.latest.iter().filter(|r| **r >= Some(round)).count();
    }

    fn apply(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Response { client, round, at } => {
                self.responses += 1;
                let Some(latest) = self.latest.get_mut(client) else {
                    return Ok(());
                };
                if round > *latest {
                    let before = *latest;
                    *latest = round;
                    if round == Some(self.target) && before < round {
                        self.reached += 1;
                        if let Some(arrival) = self.arrivals.get_mut(client) {
                            *arrival = Some(at);
                        }
                    }
                }
                Ok(())
            }
            Event::Ended { client, error } => Err(format!("client {client}: {error}")),
        }
    }

    fn done(&self) -> bool {
        self.reached == self.latest.len()
    }
}

/// Applies events until every client has the target round, printing progress each
/// second.
async fn wait_all(
    events: &mut mpsc::UnboundedReceiver<Event>,
    tracker: &mut Tracker,
    timeout: Duration,
    label: &str,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    while !tracker.done() {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                format!(
                    "{label}: only {}/{} clients got round {} within {} s",
                    tracker.reached,
                    tracker.latest.len(),
                    tracker.target,
                    timeout.as_secs()
                )
            })?
            .ok_or("every client ended")?;
        tracker.apply(event)?;
        if Instant::now() >= next_progress {
            println!(
                "    {label}: {}/{} clients have it",
                tracker.reached,
                tracker.latest.len()
            );
            next_progress += Duration::from_secs(1);
        }
    }
    Ok(())
}

/// Applies events until none came for `QUIET`; the number of responses seen.
async fn settle(
    events: &mut mpsc::UnboundedReceiver<Event>,
    tracker: &mut Tracker,
    limit: Duration,
) -> Result<u64, String> {
    let before = tracker.responses;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match tokio::time::timeout(QUIET, events.recv()).await {
            Ok(Some(event)) => tracker.apply(event)?,
            Ok(None) => return Err("every client ended".into()),
            Err(_) => break,
        }
    }
    Ok(tracker.responses - before)
}

struct Round {
    /// Edit → the control plane logged the change (its poll).
    detected: Option<Duration>,
    /// Edit → each client had the new config, sorted.
    latencies: Vec<Duration>,
    /// Responses received until every client had it, and in the quiet after.
    responses: u64,
    extra_responses: u64,
    cpu: f64,
    load_cpu: f64,
}

impl Round {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// Nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or_default()
}

struct Results {
    connect: Duration,
    connect_responses: u64,
    connect_settle_responses: u64,
    connect_cpu: f64,
    rss_after_connect_kb: u64,
    rounds: Vec<Round>,
    rounds_cpu: f64,
    peak_rss_kb: u64,
    rss_end_kb: u64,
    load_cpu: f64,
}

async fn measure(
    options: &Options,
    control_plane: &mut ControlPlane,
    policy_dir: &Path,
    ticks: f64,
) -> Result<Results, String> {
    let pid = control_plane.pid.clone();
    let load_started = cpu_seconds("self", ticks);
    let cpu_before = cpu_seconds(&pid, ticks);
    let started = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{}", control_plane.xds_addr))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| format!("connect to {}: {e}", control_plane.xds_addr))?,
        );
    }
    let (sender, mut events) = mpsc::unbounded_channel();
    for index in 0..options.clients {
        let channel = channels
            .get(index % options.connections)
            .cloned()
            .ok_or("no channel")?;
        let node = node(index, options.workloads);
        let sender = sender.clone();
        tokio::spawn(async move {
            if let Err(error) = client(index, channel, node, sender.clone()).await {
                let _ = sender.send(Event::Ended {
                    client: index,
                    error,
                });
            }
        });
    }
    drop(sender);
    let mut tracker = Tracker::new(options.clients);
    tracker.expect(0);
    wait_all(
        &mut events,
        &mut tracker,
        CONNECT_TIMEOUT,
        "connect + first config",
    )
    .await?;
    let connect = started.elapsed();
    let connect_responses = tracker.responses;
    println!(
        "all {} clients have a config after {:.2} s ({connect_responses} responses); waiting for quiet",
        options.clients,
        connect.as_secs_f64()
    );
    // `scope: workload` shares change as replicas join: later pushes follow.
    let connect_settle_responses = settle(&mut events, &mut tracker, CONNECT_TIMEOUT).await?;
    let connect_cpu = cpu_seconds(&pid, ticks) - cpu_before;
    let rss_after_connect_kb = status_kb(&pid, "VmHWM");
    println!(
        "settled: {connect_settle_responses} more responses; control plane CPU {connect_cpu:.2} s, peak RSS {:.1} MiB",
        rss_after_connect_kb as f64 / 1024.0
    );

    let rounds_before = cpu_seconds(&pid, ticks);
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        if !control_plane.alive() {
            return Err("the control plane exited".into());
        }
        tracker.expect(round);
        // Out of step with the 200 ms poll: a pseudo-random pause first.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        tokio::time::sleep(Duration::from_millis(u64::from(nanos % 200))).await;
        let cpu = thread_cpu_seconds(&pid);
        let load_cpu = thread_cpu_seconds("self");
        let edited = Instant::now();
        write_policy(policy_dir, round)?;
        wait_all(
            &mut events,
            &mut tracker,
            ROUND_TIMEOUT,
            &format!("edit {round}"),
        )
        .await?;
        let cpu = thread_cpu_seconds(&pid) - cpu;
        let load_cpu = thread_cpu_seconds("self") - load_cpu;
        let responses = tracker.responses;
        let mut latencies: Vec<Duration> = tracker
            .arrivals
            .iter()
            .map(|a| a.map_or(Duration::MAX, |at| at.saturating_duration_since(edited)))
            .collect();
        latencies.sort();
        let extra_responses = settle(&mut events, &mut tracker, ROUND_TIMEOUT).await?;
        let result = Round {
            detected: control_plane
                .detected_after(edited)
                .map(|at| at.saturating_duration_since(edited)),
            latencies,
            responses,
            extra_responses,
            cpu,
            load_cpu,
        };
        println!(
            "edit {round}/{}: detected {} ms; p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; {} responses (+{} after); CPU: control plane {:.1} ms, load {:.1} ms",
            options.rounds,
            result.detected.map_or("?".into(), |d| format!("{:.1}", ms(d))),
            ms(result.percentile(50.0)),
            ms(result.percentile(99.0)),
            ms(result.percentile(100.0)),
            result.responses,
            result.extra_responses,
            result.cpu * 1000.0,
            result.load_cpu * 1000.0,
        );
        rounds.push(result);
    }
    let rounds_cpu = cpu_seconds(&pid, ticks) - rounds_before;
    Ok(Results {
        connect,
        connect_responses,
        connect_settle_responses,
        connect_cpu,
        rss_after_connect_kb,
        rounds,
        rounds_cpu,
        peak_rss_kb: status_kb(&pid, "VmHWM"),
        rss_end_kb: status_kb(&pid, "VmRSS"),
        load_cpu: cpu_seconds("self", ticks) - load_started,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    crate::bench::median(&mut values)
}

/// CPU model and count, memory and kernel, for benchmark reports.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = output("uname", &["-r"]).unwrap_or_default();
    format!(
        "{cpus} × {model}, {memory_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn report(options: &Options, results: &Results, machine: &str, pinned: bool) -> String {
    let command = format!(
        "cargo xtask bench control-plane --clients {} --rounds {} --connections {} --workloads {}",
        options.clients, options.rounds, options.connections, options.workloads
    );
    let placement = if pinned {
        "control plane pinned to CPU 0, load generator to CPU 1"
    } else {
        "not pinned (one CPU)"
    };
    let mut out = format!(
        "## control-plane benchmark\n\n\
         Machine: {}. Command: `{command}`.\n\n\
         `meshward-control-plane` (release build, default 200 ms policy poll) as its own process; {placement}. \
         Load: {} SotW ADS streams (tonic, in a release build of xtask, one thread) over {} HTTP/2 connections, \
         one node each: {} workloads × {} replicas in namespace `{NAMESPACE}` (Istio metadata NAMESPACE, \
         WORKLOAD_NAME, LABELS app=w<i>), each subscribed to `{RESOURCE}` ({TYPE_URL}) and ACKing every response. \
         One RateLimitPolicy, the namespace default with `scope: workload` (its figure split over each workload's \
         replicas, so every proxy has its own config); each edit renames its rule and changes its figure, \
         so every proxy's config changes. The file is replaced atomically (write + rename); latency is from the \
         rename to the response arriving at the client, after a random 0–200 ms pause so that \
         edits do not fall in step with the poll.\n\n",
        machine,
        options.clients,
        options.connections,
        options.workloads,
        options.clients.div_ceil(options.workloads),
    );
    out.push_str(&format!(
        "### Connect\n\nAll {} clients connected and had their first config after **{:.2} s** \
         ({} responses by then, {} more until quiet: `scope: workload` re-splits a workload's figure as each \
         replica joins). Control plane CPU for the connect phase: **{:.2} s**; peak RSS after connect: \
         **{:.1} MiB**.\n\n",
        options.clients,
        results.connect.as_secs_f64(),
        results.connect_responses,
        results.connect_settle_responses,
        results.connect_cpu,
        results.rss_after_connect_kb as f64 / 1024.0,
    ));
    out.push_str(
        "### One edit → every client updated\n\n\
         | edit | edit → detected (poll) ms | p50 ms | p99 ms | max (all updated) ms | detected → all ms | responses | control plane CPU ms |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let detected_to_all =
        |round: &Round| round.detected.map(|d| ms(round.percentile(100.0)) - ms(d));
    for (index, round) in results.rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {}{} | {:.1} |\n",
            index + 1,
            round
                .detected
                .map_or("?".into(), |d| format!("{:.1}", ms(d))),
            ms(round.percentile(50.0)),
            ms(round.percentile(99.0)),
            ms(round.percentile(100.0)),
            detected_to_all(round).map_or("?".into(), |d| format!("{d:.1}")),
            round.responses,
            if round.extra_responses > 0 {
                format!(" (+{} late)", round.extra_responses)
            } else {
                String::new()
            },
            round.cpu * 1000.0,
        ));
    }
    let column = |f: &dyn Fn(&Round) -> f64| median(results.rounds.iter().map(f).collect());
    out.push_str(&format!(
        "| **median** | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | | {:.1} |\n\n",
        column(&|r| r.detected.map_or(0.0, ms)),
        column(&|r| ms(r.percentile(50.0))),
        column(&|r| ms(r.percentile(99.0))),
        column(&|r| ms(r.percentile(100.0))),
        column(&|r| detected_to_all(r).unwrap_or(0.0)),
        column(&|r| r.cpu * 1000.0),
    ));
    out.push_str(&format!(
        "The edit → detected time is the policy poll (uniform over 0–200 ms by design); detected → all is the \
         push to every stream. Control plane CPU (utime + stime from /proc/<pid>/stat): connect {:.2} s, the {} \
         edit rounds {:.2} s in all (including the quiet waits between them); per edit (the table, from the \
         edit to the last client updated) it is the threads' schedstat run time. Peak RSS (VmHWM): **{:.1} MiB**; \
         RSS at the end {:.1} MiB. The load generator ({} build) used {:.2} s CPU in all ({:.1} ms median per edit).\n",
        results.connect_cpu,
        results.rounds.len(),
        results.rounds_cpu,
        results.peak_rss_kb as f64 / 1024.0,
        results.rss_end_kb as f64 / 1024.0,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        results.load_cpu,
        column(&|r| r.load_cpu * 1000.0),
    ));
    out
}

/// Pins this process (its threads to come) to `cpu`.
fn pin_self(cpu: &str) -> bool {
    let pid = std::process::id().to_string();
    output("taskset", &["-p", "-c", cpu, &pid]).is_some()
}

/// Set when a debug xtask hands over to the release one it built.
const BUILT: &str = "MESHWARD_BENCH_CONTROL_PLANE_BUILT";

pub fn run(args: &[String]) -> Result<(), String> {
    let options = parse_args(args)?;
    if cfg!(debug_assertions) && std::env::var_os(BUILT).is_none() {
        // An unoptimised load generator takes longer to take in 1,000 responses than
        // the control plane takes to send them: run the release build of this command.
        step(
            "build the control plane and the load generator (release)",
            cargo().args([
                "build",
                "--release",
                "-p",
                "meshward-control-plane",
                "-p",
                "xtask",
            ]),
        )?;
        let xtask = root().join("target/release/xtask");
        let status = Command::new(&xtask)
            .args(["bench", "control-plane"])
            .args(args)
            .env(BUILT, "1")
            .status()
            .map_err(|e| format!("cannot run {}: {e}", xtask.display()))?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("{} bench control-plane: {status}", xtask.display()))
        };
    }
    let machine = machine();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cpus >= 2;
    if pin {
        setup::require_debian_tool("taskset", "util-linux")?;
    } else {
        println!("warning: {cpus} CPU available; the control plane and the load share it");
    }
    if std::env::var_os(BUILT).is_none() {
        step(
            "build the control plane (release)",
            cargo().args(["build", "--release", "-p", "meshward-control-plane"]),
        )?;
    }
    let binary = root().join("target/release/meshward-control-plane");
    let fd_limit = output("sh", &["-c", "ulimit -n"]).unwrap_or_default();
    println!(
        "\n{} clients over {} connections (open-file limit {})",
        options.clients,
        options.connections,
        fd_limit.trim()
    );
    let policy_dir: PathBuf = root()
        .join("target/tmp")
        .join(format!("bench-control-plane-{}", std::process::id()));
    std::fs::create_dir_all(&policy_dir)
        .map_err(|e| format!("create {}: {e}", policy_dir.display()))?;
    write_policy(&policy_dir, 0)?;
    let result = (|| {
        let mut control_plane = ControlPlane::start(&binary, &policy_dir, pin)?;
        if pin && !pin_self("1") {
            println!("warning: could not pin the load generator to CPU 1");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let ticks = clock_ticks();
        runtime.block_on(measure(&options, &mut control_plane, &policy_dir, ticks))
    })();
    let _ = std::fs::remove_dir_all(&policy_dir);
    let results = result?;
    let report = report(&options, &results, &machine, pin);
    println!("\n{report}");
    let out = root().join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join("control-plane.md");
    std::fs::write(&path, &report).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_round_from_the_encoded_resource() {
        let json = br#"junk{"rules":[{"name":"bench-round-12","key":[]}]}"#;
        assert_eq!(round_of(json), Some(12));
        assert_eq!(round_of(b"no marker"), None);
        assert!(policy(3).contains("bench-round-3"));
        assert!(policy(3).contains("requests: 4000"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(500));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(990));
        assert_eq!(percentile(&values, 100.0), Duration::from_millis(1000));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn options_default_and_parse() {
        let defaults = parse_args(&[]).unwrap();
        assert_eq!((defaults.clients, defaults.rounds), (1000, 5));
        let args: Vec<String> = ["--clients", "10", "--rounds", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parsed = parse_args(&args).unwrap();
        assert_eq!(
            (parsed.clients, parsed.rounds, parsed.connections),
            (10, 2, 10)
        );
        assert!(parse_args(&["--clients".to_string(), "0".to_string()]).is_err());
    }
}
