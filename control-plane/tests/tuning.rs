//! Runtime tuning end to end against an in-process control plane (docs/adr/0007): HTTP
//! reports and long-poll settings, the ADS resource type (SotW and Delta), gRPC reports,
//! the heap-pressure flag and metric, and the refusals.
//!
//! Every wait is bounded; "nothing arrives" is a short wait that receives nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value as PbValue};
use meshward_control_plane::server::{start, ModuleMode, Options, Running};
use meshward_proto::tuning::v1::runtime_reports_client::RuntimeReportsClient;
use meshward_proto::tuning::v1::{RuntimeReport, RuntimeTuning, RUNTIME_TUNING_TYPE_URL};
use prost::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------
// Server and policies

async fn server(dir: &Path) -> Running {
    start(Options {
        policy_dir: dir.to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        wasm_dir: None,
        modules: ModuleMode::Local {
            dir: "/etc/meshward".into(),
        },
        poll_interval: Duration::from_millis(50),
    })
    .await
    .unwrap()
}

/// A RuntimeTuning for shop/orders with this `gogc`.
fn tuning_policy(gogc: &str) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RuntimeTuning
metadata: {{name: orders-gc, namespace: shop}}
spec:
  selector: {{workloads: [orders]}}
  memoryLimitRatio: 0.9
  gogc: {gogc}
"#
    )
}

const ADAPTIVE: &str = "{adaptive: {min: 50, max: 400}}";
const FIXED: &str = "{fixed: 200}";

fn write_policy(dir: &Path, gogc: &str) {
    std::fs::write(dir.join("tuning.yaml"), tuning_policy(gogc)).unwrap();
}

/// A report for shop/orders (L = 1000 → GOMEMLIMIT 900, T = 800).
fn report(node: &str, heap: u64) -> Value {
    json!({
        "nodeId": node, "namespace": "shop", "workload": "orders",
        "labels": {"app": "orders"}, "pod": format!("{node}-pod"), "container": "app",
        "memoryLimitBytes": 1000, "liveHeapBytes": heap, "agent": "test/1"
    })
}

async fn await_status(running: &Running, what: &str, predicate: impl Fn(&Value) -> bool) {
    let reached = timeout(WAIT, async {
        loop {
            if predicate(&running.world.status()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "status never showed {what}: {}",
        running.world.status()
    );
}

// ---------------------------------------------------------------------------------
// HTTP

struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.head, self.body))
    }

    fn etag(&self) -> String {
        self.header("etag")
            .unwrap_or_else(|| panic!("no ETag: {}", self.head))
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> HttpResponse {
    let text = timeout(limit, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        String::from_utf8(bytes).unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within {limit:?}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn post_report(addr: SocketAddr, report: &Value) -> HttpResponse {
    http(
        addr,
        "POST",
        "/tuning/v1/report",
        &[("Content-Type", "application/json")],
        report.to_string().as_bytes(),
        WAIT,
    )
    .await
}

async fn get_settings(
    addr: SocketAddr,
    node: &str,
    query: &str,
    etag: Option<&str>,
) -> HttpResponse {
    let headers: Vec<(&str, &str)> = etag.map(|e| ("If-None-Match", e)).into_iter().collect();
    http(
        addr,
        "GET",
        &format!("/tuning/v1/settings/{node}{query}"),
        &headers,
        b"",
        Duration::from_secs(65),
    )
    .await
}

// ---------------------------------------------------------------------------------
// ADS clients

fn text(s: &str) -> PbValue {
    PbValue {
        kind: Some(value::Kind::StringValue(s.into())),
    }
}

/// A tuning agent's node: Istio-style identity plus pod, container and cgroup limit.
fn agent_node(id: &str, limit: &str) -> Node {
    let labels = Struct {
        fields: HashMap::from([("app".to_string(), text("orders"))]),
    };
    Node {
        id: id.into(),
        metadata: Some(Struct {
            fields: HashMap::from([
                ("NAMESPACE".to_string(), text("shop")),
                ("WORKLOAD_NAME".to_string(), text("orders")),
                (
                    "LABELS".to_string(),
                    PbValue {
                        kind: Some(value::Kind::StructValue(labels)),
                    },
                ),
                ("POD_NAME".to_string(), text(&format!("{id}-pod"))),
                ("CONTAINER_NAME".to_string(), text("app")),
                ("MEMORY_LIMIT_BYTES".to_string(), text(limit)),
            ]),
        }),
        ..Default::default()
    }
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(addr: SocketAddr) -> Self {
        let (tx, requests) = mpsc::channel(16);
        let rx = timeout(WAIT, async {
            AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
                .stream_aggregated_resources(ReceiverStream::new(requests))
                .await
                .unwrap()
                .into_inner()
        })
        .await
        .expect("opening the stream timed out");
        Self { tx, rx }
    }

    async fn request(&self, node: Option<Node>, name: &str, version: &str, nonce: &str) {
        self.tx
            .send(DiscoveryRequest {
                version_info: version.into(),
                node,
                resource_names: vec![name.into()],
                type_url: RUNTIME_TUNING_TYPE_URL.into(),
                response_nonce: nonce.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> (DiscoveryResponse, RuntimeTuning) {
        let response = timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .expect("stream failed")
            .expect("stream ended");
        assert_eq!(response.type_url, RUNTIME_TUNING_TYPE_URL);
        assert_eq!(response.resources.len(), 1);
        let any = &response.resources[0];
        assert_eq!(any.type_url, RUNTIME_TUNING_TYPE_URL);
        let document = RuntimeTuning::decode(any.value.as_slice()).unwrap();
        (response, document)
    }

    async fn quiet(&mut self, what: &str) {
        if let Ok(got) = timeout(QUIET, self.rx.message()).await {
            panic!("expected nothing ({what}), got {got:?}");
        }
    }
}

async fn grpc_report(
    addr: SocketAddr,
    node: &str,
    heap: i64,
) -> Result<RuntimeTuning, tonic::Status> {
    let mut client = timeout(
        WAIT,
        RuntimeReportsClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect timed out")
    .unwrap();
    let reply = timeout(
        WAIT,
        client.report(RuntimeReport {
            node_id: node.into(),
            namespace: "shop".into(),
            workload: "orders".into(),
            labels: HashMap::from([("app".to_string(), "orders".to_string())]),
            pod: format!("{node}-pod"),
            container: "app".into(),
            memory_limit_bytes: Some(1000),
            live_heap_bytes: heap,
            agent: "test-grpc/1".into(),
        }),
    )
    .await
    .expect("report timed out")?;
    Ok(reply
        .into_inner()
        .current
        .expect("the reply carries the document"))
}

// ---------------------------------------------------------------------------------
// HTTP agents

#[tokio::test]
async fn http_report_then_settings_with_etag() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let addr = running.http_addr;

    let reported = post_report(addr, &report("orders-1", 320)).await;
    assert_eq!(reported.status, 200, "{}", reported.body);
    let document = reported.json();
    assert_eq!(document["nodeId"], "orders-1");
    assert_eq!(document["policy"], "shop/orders-gc");
    assert_eq!(document["memoryLimitBytes"], 900); // ⌊0.9 × 1000⌋
    assert_eq!(document["gcPercent"], 150); // ⌊(800 − 320)/320 · 100⌋
    assert_eq!(document["heapNearLimit"], false);
    assert!(
        document["reason"]
            .as_str()
            .unwrap()
            .contains("T=800 H=320 → 150"),
        "{document}"
    );
    let version = document["version"].as_str().unwrap().to_owned();
    assert_eq!(reported.etag(), format!("\"{version}\""));

    // Without If-None-Match: at once, the same document, counted as delivered.
    let fetched = get_settings(addr, "orders-1", "", None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.etag(), format!("\"{version}\""));
    assert_eq!(fetched.json(), document);
    let status = running.world.status();
    let instance = &status["tuning"]["orders-1"];
    assert_eq!(instance["policy"], "shop/orders-gc");
    assert_eq!(instance["version"], version.as_str());
    assert_eq!(instance["gcPercent"], 150);
    assert_eq!(instance["memoryLimitBytes"], 900);
    assert_eq!(instance["delivered"], true, "{status}");
    let policy = running.world.tuning.policy_status("shop", "orders-gc");
    assert_eq!((policy.instances, policy.delivered), (1, 1));
    // A tuning agent is no proxy: no replica of its workload.
    assert_eq!(status["workloads"], json!({}), "{status}");
    running.stop().await;
}

#[tokio::test]
async fn long_poll_304_after_wait_and_200_promptly_after_a_policy_edit() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let addr = running.http_addr;
    let etag = post_report(addr, &report("orders-1", 320)).await.etag();

    let started = Instant::now();
    let unchanged = get_settings(addr, "orders-1", "?wait=300ms", Some(&etag)).await;
    assert_eq!(unchanged.status, 304, "{}", unchanged.head);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(unchanged.etag(), etag);
    assert!(unchanged.body.is_empty());

    let poll = tokio::spawn({
        let etag = etag.clone();
        async move { get_settings(addr, "orders-1", "?wait=30s", Some(&etag)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poll.is_finished(), "the poll must wait for a change");
    write_policy(dir.path(), FIXED);
    let edited = Instant::now();
    let changed = timeout(WAIT, poll).await.expect("poll not woken").unwrap();
    // Two identical reads at 50 ms apply the edit; then the poll answers at once.
    assert!(
        edited.elapsed() < Duration::from_secs(1),
        "{:?}",
        edited.elapsed()
    );
    assert_eq!(changed.status, 200);
    let document = changed.json();
    assert_eq!(document["gcPercent"], 200);
    assert_ne!(changed.etag(), etag);
    assert_eq!(
        changed.etag(),
        format!("\"{}\"", document["version"].as_str().unwrap())
    );
    running.stop().await;
}

#[tokio::test]
async fn heap_reports_move_adaptive_gogc_but_a_wobble_does_not() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let addr = running.http_addr;
    let first = post_report(addr, &report("orders-1", 320)).await.json();
    let etag = format!("\"{}\"", first["version"].as_str().unwrap());

    let poll = tokio::spawn({
        let etag = etag.clone();
        async move { get_settings(addr, "orders-1", "?wait=20s", Some(&etag)).await }
    });
    // ±3 % around 320 → 142…157: within the step of 10, the same document.
    for heap in [311, 329, 315, 325, 320, 330, 310] {
        let again = post_report(addr, &report("orders-1", heap)).await.json();
        assert_eq!(again["version"], first["version"], "H={heap}: {again}");
        assert_eq!(again["gcPercent"], 150);
    }
    tokio::time::sleep(QUIET).await;
    assert!(!poll.is_finished(), "a wobble woke the poll");

    // The heap falls to 200: ⌊600/200 · 100⌋ = 300, pushed to the waiting poll.
    let moved = post_report(addr, &report("orders-1", 200)).await.json();
    assert_eq!(moved["gcPercent"], 300);
    let answered = timeout(WAIT, poll).await.expect("poll not woken").unwrap();
    assert_eq!(answered.status, 200);
    assert_eq!(answered.json(), moved);
    running.stop().await;
}

#[tokio::test]
async fn heap_near_the_limit_is_flagged_with_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let addr = running.http_addr;
    let series =
        "meshward_control_plane_tuning_heap_near_limit{namespace=\"shop\",workload=\"orders\"} 1";

    // H = 900 > T = 800: GOGC held at min 50, flagged.
    let document = post_report(addr, &report("orders-1", 900)).await.json();
    assert_eq!(document["gcPercent"], 50);
    assert_eq!(document["heapNearLimit"], true);
    assert_eq!(document["memoryLimitBytes"], 900);
    post_report(addr, &report("orders-2", 100)).await;
    let metrics = http(addr, "GET", "/metrics", &[], b"", WAIT).await;
    for needle in [
        series,
        "meshward_control_plane_tuning_instances 2",
        "meshward_control_plane_tuning_reports_total 2",
        "meshward_control_plane_tuning_pushes_total 0",
        // The existing metrics are still there, and one EOF ends it all.
        "meshward_control_plane_policies 1",
    ] {
        assert!(
            metrics.body.contains(needle),
            "no {needle:?} in\n{}",
            metrics.body
        );
    }
    assert_eq!(metrics.body.matches("# EOF").count(), 1, "{}", metrics.body);
    assert!(metrics.body.trim_end().ends_with("# EOF"));
    let policy = running.world.tuning.policy_status("shop", "orders-gc");
    assert_eq!(policy.heap_near_limit, vec!["orders-1".to_string()]);
    assert_eq!(
        running.world.status()["tuning"]["orders-1"]["heapNearLimit"],
        true
    );

    // Back to a small heap: the flag and the series go.
    let document = post_report(addr, &report("orders-1", 100)).await.json();
    assert_eq!(document["heapNearLimit"], false);
    assert_eq!(document["gcPercent"], 400);
    let metrics = http(addr, "GET", "/metrics", &[], b"", WAIT).await;
    assert!(
        !metrics
            .body
            .contains("meshward_control_plane_tuning_heap_near_limit{"),
        "{}",
        metrics.body
    );
    running.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_400_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let addr = running.http_addr;
    let post = |body: Vec<u8>| async move {
        http(addr, "POST", "/tuning/v1/report", &[], &body, WAIT).await
    };

    let mut negative = report("orders-1", 1);
    negative["liveHeapBytes"] = json!(-5);
    let mut no_node = report("orders-1", 1);
    no_node.as_object_mut().unwrap().remove("nodeId");
    let mut empty_workload = report("orders-1", 1);
    empty_workload["workload"] = json!("");
    let mut wrong_type = report("orders-1", 1);
    wrong_type["memoryLimitBytes"] = json!("1Gi");
    for (body, message) in [
        (b"{\"nodeId\":".to_vec(), "EOF while parsing"),
        (
            no_node.to_string().into_bytes(),
            "invalid report: missing field `nodeId`",
        ),
        (
            negative.to_string().into_bytes(),
            "invalid report: liveHeapBytes: invalid value: integer `-5`",
        ),
        (
            empty_workload.to_string().into_bytes(),
            "invalid report: workload: required",
        ),
        (
            wrong_type.to_string().into_bytes(),
            "invalid report: memoryLimitBytes: invalid type: string \"1Gi\"",
        ),
    ] {
        let response = post(body.clone()).await;
        assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(
            response.body.contains(message),
            "{}: {}",
            String::from_utf8_lossy(&body),
            response.body
        );
    }
    // Too large a body.
    let huge = post(vec![b' '; 70 * 1024]).await;
    assert_eq!(huge.status, 413);

    // Unknown node: 404 saying what to do.
    let unknown = get_settings(addr, "nobody", "", None).await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown
            .body
            .contains("POST a report to /tuning/v1/report first"),
        "{}",
        unknown.body
    );
    // Bad wait.
    post_report(addr, &report("orders-1", 320)).await;
    let bad_wait = get_settings(addr, "orders-1", "?wait=soon", None).await;
    assert_eq!(bad_wait.status, 400);
    assert!(
        bad_wait
            .body
            .contains("wait: expected a duration such as 30s or 500ms"),
        "{}",
        bad_wait.body
    );
    running.stop().await;
}

#[tokio::test]
async fn shutdown_ends_a_waiting_poll() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let addr = running.http_addr;
    let etag = post_report(addr, &report("orders-1", 320)).await.etag();
    let poll =
        tokio::spawn(async move { get_settings(addr, "orders-1", "?wait=60s", Some(&etag)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    running.stop().await;
    let answered = timeout(WAIT, poll)
        .await
        .expect("poll outlived shutdown")
        .unwrap();
    assert_eq!(answered.status, 304);
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// gRPC agents

#[tokio::test]
async fn ads_agent_gets_acks_and_follows_reports_and_policy_edits() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr).await;
    ads.request(Some(agent_node("orders-1", "1000")), "orders-1", "", "")
        .await;
    let (response, document) = ads.recv().await;
    assert_eq!(document.node_id, "orders-1");
    assert_eq!(document.policy, "shop/orders-gc");
    assert_eq!(document.memory_limit_bytes, Some(900));
    assert_eq!(document.gc_percent, Some(100)); // no heap report yet: Go's default
    assert!(!document.version.is_empty());
    assert_eq!(
        running
            .world
            .tuning
            .policy_status("shop", "orders-gc")
            .delivered,
        0
    );
    ads.request(None, "orders-1", &response.version_info, &response.nonce)
        .await;
    await_status(&running, "the ACK as a delivery", |s| {
        s["tuning"]["orders-1"]["delivered"] == true
    })
    .await;
    let status = running.world.status();
    assert_eq!(status["tuning"]["orders-1"]["pod"], "orders-1-pod");
    assert_eq!(
        status["workloads"],
        json!({}),
        "an agent is no proxy: {status}"
    );
    ads.quiet("nothing changed").await;

    // A gRPC heap report moves GOGC: pushed over ADS.
    let reported = grpc_report(running.xds_addr, "orders-1", 320)
        .await
        .unwrap();
    assert_eq!(reported.gc_percent, Some(150));
    let (response, document) = ads.recv().await;
    assert_eq!(document, reported);
    ads.request(None, "orders-1", &response.version_info, &response.nonce)
        .await;
    // A wobble: nothing.
    grpc_report(running.xds_addr, "orders-1", 325)
        .await
        .unwrap();
    ads.quiet("a wobble").await;

    // A policy edit: pushed.
    write_policy(dir.path(), FIXED);
    let (_, document) = ads.recv().await;
    assert_eq!(document.gc_percent, Some(200));
    assert_eq!(document.memory_limit_bytes, Some(900));
    running.stop().await;
}

#[tokio::test]
async fn ads_agent_sees_only_its_own_document_and_bad_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    grpc_report(running.xds_addr, "orders-2", 320)
        .await
        .unwrap();
    let mut ads = Sotw::open(running.xds_addr).await;
    ads.request(Some(agent_node("orders-1", "")), "orders-2", "", "")
        .await;
    ads.quiet("another node's document").await;
    drop(ads);

    let mut bad = Sotw::open(running.xds_addr).await;
    bad.request(Some(agent_node("orders-3", "lots")), "orders-3", "", "")
        .await;
    let error = timeout(WAIT, bad.rx.message())
        .await
        .expect("no answer")
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error
            .message()
            .contains("MEMORY_LIMIT_BYTES: expected a byte count"),
        "{}",
        error.message()
    );
    running.stop().await;
}

async fn recv(rx: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    timeout(WAIT, rx.message())
        .await
        .expect("no response in time")
        .unwrap()
        .expect("stream ended")
}

#[tokio::test]
async fn delta_agent_gets_its_document() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let (tx, requests) = mpsc::channel(16);
    let mut rx = AggregatedDiscoveryServiceClient::connect(format!("http://{}", running.xds_addr))
        .await
        .unwrap()
        .delta_aggregated_resources(ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    tx.send(DeltaDiscoveryRequest {
        node: Some(agent_node("orders-1", "1000")),
        type_url: RUNTIME_TUNING_TYPE_URL.into(),
        resource_names_subscribe: vec!["orders-1".into(), "orders-2".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let response = recv(&mut rx).await;
    assert_eq!(response.resources.len(), 1);
    let resource = &response.resources[0];
    assert_eq!(resource.name, "orders-1");
    let document =
        RuntimeTuning::decode(resource.resource.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(resource.version, document.version);
    assert_eq!(document.gc_percent, Some(100));
    tx.send(DeltaDiscoveryRequest {
        type_url: RUNTIME_TUNING_TYPE_URL.into(),
        response_nonce: response.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    await_status(&running, "the Delta ACK", |s| {
        s["tuning"]["orders-1"]["delivered"] == true
    })
    .await;
    grpc_report(running.xds_addr, "orders-1", 320)
        .await
        .unwrap();
    let response = recv(&mut rx).await;
    let document = RuntimeTuning::decode(
        response.resources[0]
            .resource
            .as_ref()
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(document.gc_percent, Some(150));
    running.stop().await;
}

#[tokio::test]
async fn grpc_report_returns_the_document_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), ADAPTIVE);
    let running = server(dir.path()).await;
    let document = grpc_report(running.xds_addr, "orders-1", 320)
        .await
        .unwrap();
    assert_eq!(document.node_id, "orders-1");
    assert_eq!(document.memory_limit_bytes, Some(900));
    assert_eq!(document.gc_percent, Some(150));
    // The same document over HTTP.
    let fetched = get_settings(running.http_addr, "orders-1", "", None).await;
    assert_eq!(fetched.json()["version"], document.version.as_str());

    let error = grpc_report(running.xds_addr, "", 320).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("nodeId: required"),
        "{}",
        error.message()
    );
    let error = grpc_report(running.xds_addr, "orders-1", -1)
        .await
        .unwrap_err();
    assert!(
        error.message().contains("liveHeapBytes: -1 is negative"),
        "{}",
        error.message()
    );
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// The example

/// examples/policies/ is what `cargo xtask demo` serves: every file stays valid, and the
/// runtime-tuning example is a RuntimeTuning the formula accepts.
#[test]
fn the_example_policies_are_valid() {
    use meshward_control_plane::policy::file_source::parse_file;
    use meshward_control_plane::policy::model::Kind;
    use meshward_control_plane::tuning::spec::TuningSettings;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut tuning = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let policies = parse_file(&name, &std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        tuning.extend(policies.into_iter().filter(|p| p.kind == Kind::Tuning));
    }
    assert_eq!(tuning.len(), 1, "{tuning:?}");
    assert_eq!(
        (tuning[0].namespace.as_str(), tuning[0].name.as_str()),
        ("demo", "echo-gc")
    );
    let settings = TuningSettings::from_config(&tuning[0].config).unwrap();
    assert!(settings.gogc.unwrap().adaptive.is_some());
}
