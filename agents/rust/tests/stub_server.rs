//! The agent against a scripted control plane on 127.0.0.1: the test plays the server
//! side of the ADS stream and `RuntimeReports/Report` message by message, so it can send
//! what the real control plane never would (an undecodable resource, a stream that
//! fails) and check every request the agent answers with. Every wait is bounded.

// Test code: a failed unwrap is a failed assertion (clippy.toml allows these inside
// `#[test]` functions only, not in this file's helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any};
use meshward_proto::tuning::v1::runtime_reports_server::{RuntimeReports, RuntimeReportsServer};
use meshward_proto::tuning::v1::{ReportReply, RuntimeReport, RUNTIME_TUNING_TYPE_URL};
use meshward_tuning_agent::{Agent, Event, RuntimeTuning};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(5);
const NODE: &str = "orders-1.shop";
const MIB: u64 = 1024 * 1024;

type Responses = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Hands every new ADS stream to the test.
struct Ads {
    streams: mpsc::UnboundedSender<(Streaming<DiscoveryRequest>, Responses)>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(8);
        self.streams
            .send((request.into_inner(), tx))
            .map_err(|_| Status::unavailable("the test is over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("the agent speaks SotW"))
    }
}

/// Hands every report to the test; replies without a document.
struct Reports {
    reports: mpsc::UnboundedSender<RuntimeReport>,
}

#[tonic::async_trait]
impl RuntimeReports for Reports {
    async fn report(
        &self,
        request: Request<RuntimeReport>,
    ) -> Result<Response<ReportReply>, Status> {
        let _ = self.reports.send(request.into_inner());
        Ok(Response::new(ReportReply { current: None }))
    }
}

struct Server {
    streams: mpsc::UnboundedReceiver<(Streaming<DiscoveryRequest>, Responses)>,
    reports: mpsc::UnboundedReceiver<RuntimeReport>,
}

async fn serve(listener: tokio::net::TcpListener) -> Server {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let router = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(Ads {
            streams: streams_tx,
        }))
        .add_service(RuntimeReportsServer::new(Reports {
            reports: reports_tx,
        }));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Server { streams, reports }
}

async fn bounded<T>(what: &str, future: impl Future<Output = Option<T>>) -> T {
    match timeout(WAIT, future).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("{what}: the channel closed"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

async fn next_request(requests: &mut Streaming<DiscoveryRequest>, what: &str) -> DiscoveryRequest {
    bounded(what, async { requests.message().await.ok().flatten() }).await
}

fn tuning(version: &str, gc_percent: i32) -> RuntimeTuning {
    RuntimeTuning {
        node_id: NODE.into(),
        policy: "shop/orders-gc".into(),
        version: version.into(),
        memory_limit_bytes: Some(241_591_910),
        gc_percent: Some(gc_percent),
        heap_near_limit: false,
        reason: "test".into(),
    }
}

fn response(version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        type_url: RUNTIME_TUNING_TYPE_URL.into(),
        resources,
        ..Default::default()
    }
}

fn any(tuning: &RuntimeTuning) -> Any {
    Any {
        type_url: RUNTIME_TUNING_TYPE_URL.into(),
        value: tuning.encode_to_vec(),
    }
}

struct Running {
    applied: mpsc::UnboundedReceiver<RuntimeTuning>,
    events: mpsc::UnboundedReceiver<Event>,
    reporter: meshward_tuning_agent::Reporter,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_agent(addr: SocketAddr) -> Running {
    let (applied_tx, applied) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let agent = Agent::builder(format!("http://{addr}"))
        .node(NODE, "shop", "orders", [("app", "orders")])
        .pod("orders-1", "app")
        .memory_limit(256 * MIB)
        // Reports only on demand and on (re)connection, so each one is expected.
        .report_interval(Duration::from_secs(3600))
        .rpc_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(10), Duration::from_millis(80))
        .on_event(move |event| {
            let _ = events_tx.send(event.clone());
        })
        .build()
        .unwrap();
    let reporter = agent.reporter();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(agent.run(
        move |tuning| {
            let _ = applied_tx.send(tuning.clone());
        },
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        applied,
        events,
        reporter,
        stop,
        task,
    }
}

async fn stop(agent: Running) {
    let _ = agent.stop.send(());
    timeout(WAIT, agent.task)
        .await
        .expect("run() returns once shutdown completes")
        .unwrap();
}

#[tokio::test]
async fn acks_applies_nacks_dedupes_and_resubscribes_after_a_failed_stream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = serve(listener).await;
    let mut agent = start_agent(addr);

    // The subscription: node with metadata, the type, the node id as the resource name.
    let (mut requests, responses) = bounded("the first stream", server.streams.recv()).await;
    let first = next_request(&mut requests, "the subscription").await;
    assert_eq!(first.type_url, RUNTIME_TUNING_TYPE_URL);
    assert_eq!(first.resource_names, [NODE]);
    assert_eq!(
        (first.version_info.as_str(), first.response_nonce.as_str()),
        ("", "")
    );
    let node = first.node.expect("the first request carries the node");
    assert_eq!(node.id, NODE);
    let metadata = node.metadata.unwrap();
    let limit = metadata
        .fields
        .get("MEMORY_LIMIT_BYTES")
        .and_then(|v| v.kind.clone());
    assert_eq!(limit, Some(Kind::StringValue((256 * MIB).to_string())));
    // The stream opening asks for a report.
    let report = bounded("the report on connecting", server.reports.recv()).await;
    assert_eq!((report.node_id.as_str(), report.live_heap_bytes), (NODE, 0));
    assert_eq!(report.memory_limit_bytes, Some(256 * MIB as i64));
    assert_eq!(report.labels.get("app").map(String::as_str), Some("orders"));

    // A document: applied, then ACKed with its version and nonce.
    responses
        .send(Ok(response("v1", "n1", vec![any(&tuning("a", 150))])))
        .await
        .unwrap();
    let applied = bounded("the first document", agent.applied.recv()).await;
    assert_eq!(applied, tuning("a", 150));
    let ack = next_request(&mut requests, "the ACK of v1").await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v1", "n1")
    );
    assert!(ack.error_detail.is_none() && ack.node.is_none());

    // Undecodable bytes: NACKed with the version still in force, nothing applied.
    let garbage = Any {
        type_url: RUNTIME_TUNING_TYPE_URL.into(),
        value: vec![0xff; 3],
    };
    responses
        .send(Ok(response("v2", "n2", vec![garbage])))
        .await
        .unwrap();
    let nack = next_request(&mut requests, "the NACK of v2").await;
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("v1", "n2")
    );
    let detail = nack.error_detail.expect("a NACK says why");
    assert!(
        detail.message.contains("cannot decode RuntimeTuning"),
        "{}",
        detail.message
    );
    // The callback would have run before the answer went out.
    assert!(
        agent.applied.try_recv().is_err(),
        "nothing applied from a NACKed response"
    );
    let event = bounded("the NACK event", async {
        loop {
            match agent.events.recv().await? {
                nacked @ Event::Nacked { .. } => return Some(nacked),
                _ => continue,
            }
        }
    })
    .await;
    assert!(
        matches!(&event, Event::Nacked { version, .. } if version == "v2"),
        "{event:?}"
    );

    // A response of a type never subscribed to is not answered: the next answer is for n4.
    let mut foreign = response("x", "n3", vec![]);
    foreign.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    responses.send(Ok(foreign)).await.unwrap();
    // The same content under a new version: ACKed, the application is not called again.
    responses
        .send(Ok(response("v3", "n4", vec![any(&tuning("a", 150))])))
        .await
        .unwrap();
    let ack = next_request(&mut requests, "the ACK of v3").await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v3", "n4")
    );
    assert!(
        agent.applied.try_recv().is_err(),
        "same content, no second call"
    );

    // The stream fails: the agent comes back with a new stream that says what it has,
    // and reports again (a restarted control plane has lost the heap).
    responses
        .send(Err(Status::unavailable("restarting")))
        .await
        .unwrap();
    drop(responses);
    let (mut requests, responses) = bounded("the second stream", server.streams.recv()).await;
    let again = next_request(&mut requests, "the resubscription").await;
    assert_eq!(again.version_info, "v3");
    assert_eq!(again.response_nonce, "");
    assert_eq!(again.node.map(|n| n.id), Some(NODE.to_owned()));
    bounded("the report after reconnecting", server.reports.recv()).await;
    // A change on the new stream is applied.
    responses
        .send(Ok(response("v4", "n5", vec![any(&tuning("b", 200))])))
        .await
        .unwrap();
    assert_eq!(
        bounded("the new document", agent.applied.recv()).await,
        tuning("b", 200)
    );
    let ack = next_request(&mut requests, "the ACK of v4").await;
    assert_eq!(ack.response_nonce, "n5");

    // On demand: a heap move over 10 % is reported at once.
    agent.reporter.report_heap(64 * MIB);
    let report = bounded("the heap report", server.reports.recv()).await;
    assert_eq!(report.live_heap_bytes, 64 * MIB as i64);

    stop(agent).await;
}

#[tokio::test]
async fn an_unreachable_control_plane_is_retried_with_bounded_backoff_until_it_is_up() {
    // A port that was free a moment ago; nothing listens on it yet.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut agent = start_agent(addr);
    let mut delays = Vec::new();
    while delays.len() < 5 {
        match bounded("a failed attempt", agent.events.recv()).await {
            Event::Disconnected { retry_in, error } => {
                assert!(error.contains("opening the ADS stream"), "{error}");
                delays.push(retry_in);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // 10 ms doubling to 80 ms, each within [step/2, step].
    assert!(
        delays.iter().all(|d| *d <= Duration::from_millis(80)),
        "{delays:?}"
    );
    assert!(delays[4] >= Duration::from_millis(40), "{delays:?}");

    // The control plane comes up: the agent connects and subscribes.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut server = serve(listener).await;
    let (mut requests, _responses) = bounded("the stream", server.streams.recv()).await;
    let first = next_request(&mut requests, "the subscription").await;
    assert_eq!(first.resource_names, [NODE]);
    stop(agent).await;
}
