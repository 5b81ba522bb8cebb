//! xDS protocol tests: a real tonic client against an in-process control plane.
//!
//! Every wait is bounded; "nothing is sent" is asserted by a short wait that receives
//! nothing ([`QUIET`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Node, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{value, Any, StringValue, Struct, Value as PbValue};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use meshward_control_plane::server::{start, ModuleMode, Options, Running};
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const RATELIMIT: &str = "meshward.ratelimit";
const AUTHZ: &str = "meshward.authz";
const IDEMPOTENCY: &str = "meshward.idempotency";
const TRACE: &str = "meshward.trace-inject";

/// How long a response may take (policy edits go through the 50 ms poller).
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
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

/// A rate-limit policy for workload `orders` in namespace `shop`.
fn ratelimit_policy(name: &str, requests: u64, scope: &str) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{workloads: [orders]}}
  scope: {scope}
  config:
    rules:
      - {{name: per-client, limit: {{algorithm: tokenBucket, requests: {requests}, per: 1s}}}}
"#
    )
}

fn auth_policy(name: &str, namespace: &str, rule: &str) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: AuthPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  config:
    providers: []
    rules: [{{name: {rule}, action: allow, require: anonymous}}]
"#
    )
}

fn write(dir: &Path, file: &str, content: &str) {
    std::fs::write(dir.join(file), content).unwrap();
}

/// Waits (bounded) until the world holds `count` policies: the poller has applied an
/// edit, so a following quiet wait is meaningful.
async fn await_policy_count(running: &Running, count: usize) {
    let polled = timeout(WAIT, async {
        loop {
            let status = running.world.status();
            if status["policies"].as_array().map(Vec::len) == Some(count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "policies never reached {count}: {}",
        running.world.status()
    );
}

/// Waits (bounded) until `predicate` holds for the status document.
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
// Nodes and resources

fn text(s: &str) -> PbValue {
    PbValue {
        kind: Some(value::Kind::StringValue(s.into())),
    }
}

/// A node with Istio-style workload metadata.
fn node(id: &str, namespace: &str, workload: &str) -> Node {
    let labels = Struct {
        fields: HashMap::from([("app".to_string(), text(workload))]),
    };
    Node {
        id: id.into(),
        cluster: workload.into(),
        metadata: Some(Struct {
            fields: HashMap::from([
                ("NAMESPACE".to_string(), text(namespace)),
                ("WORKLOAD_NAME".to_string(), text(workload)),
                (
                    "LABELS".to_string(),
                    PbValue {
                        kind: Some(value::Kind::StructValue(labels)),
                    },
                ),
            ]),
        }),
        ..Default::default()
    }
}

fn orders(id: &str) -> Node {
    node(id, "shop", "orders")
}

/// The resource's name and the filter JSON inside TypedExtensionConfig → Wasm →
/// PluginConfig.configuration (StringValue).
fn decode(any: &Any) -> (String, Value) {
    assert_eq!(any.type_url, TYPE);
    let typed = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
    let wasm_any = typed.typed_config.unwrap();
    assert_eq!(
        wasm_any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    );
    let wasm = Wasm::decode(wasm_any.value.as_slice()).unwrap();
    let configuration = wasm.config.unwrap().configuration.unwrap();
    assert_eq!(
        configuration.type_url,
        "type.googleapis.com/google.protobuf.StringValue"
    );
    let json = StringValue::decode(configuration.value.as_slice()).unwrap();
    (typed.name, serde_json::from_str(&json.value).unwrap())
}

fn names(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| decode(r).0).collect()
}

/// The filter JSON of the only resource of a SotW response.
fn only_config(response: &DiscoveryResponse) -> Value {
    assert_eq!(response.resources.len(), 1, "{:?}", names(response));
    decode(&response.resources[0]).1
}

fn requests_limit(config: &Value) -> u64 {
    config["rules"][0]["limit"]["requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rules[0].limit.requests in {config}"))
}

fn nack_detail(message: &str) -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: message.into(),
        details: vec![],
    })
}

// ---------------------------------------------------------------------------------
// SotW client

#[derive(Clone, Copy)]
enum Service {
    Ads,
    Ecds,
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(addr: SocketAddr, service: Service) -> Self {
        let url = format!("http://{addr}");
        let (tx, requests) = mpsc::channel(16);
        let requests = ReceiverStream::new(requests);
        let rx = timeout(WAIT, async {
            match service {
                Service::Ads => AggregatedDiscoveryServiceClient::connect(url)
                    .await
                    .unwrap()
                    .stream_aggregated_resources(requests)
                    .await
                    .unwrap()
                    .into_inner(),
                Service::Ecds => ExtensionConfigDiscoveryServiceClient::connect(url)
                    .await
                    .unwrap()
                    .stream_extension_configs(requests)
                    .await
                    .unwrap()
                    .into_inner(),
            }
        })
        .await
        .expect("opening the stream timed out");
        Self { tx, rx }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    /// A request of the ECDS type.
    async fn request(
        &self,
        node: Option<Node>,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<RpcStatus>,
    ) {
        self.send(DiscoveryRequest {
            version_info: version.into(),
            node,
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            type_url: TYPE.into(),
            response_nonce: nonce.into(),
            error_detail: error,
            ..Default::default()
        })
        .await;
    }

    /// ACKs `response` keeping the subscription `names`.
    async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.request(None, names, &response.version_info, &response.nonce, None)
            .await;
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        let response = timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .expect("stream failed")
            .expect("stream ended");
        assert_eq!(response.type_url, TYPE);
        assert!(!response.nonce.is_empty(), "empty nonce");
        assert!(!response.version_info.is_empty(), "empty version");
        response
    }

    async fn quiet(&mut self, what: &str) {
        if let Ok(got) = timeout(QUIET, self.rx.message()).await {
            panic!("expected nothing ({what}), got {got:?}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Delta client

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(addr: SocketAddr, service: Service) -> Self {
        let url = format!("http://{addr}");
        let (tx, requests) = mpsc::channel(16);
        let requests = ReceiverStream::new(requests);
        let rx = timeout(WAIT, async {
            match service {
                Service::Ads => AggregatedDiscoveryServiceClient::connect(url)
                    .await
                    .unwrap()
                    .delta_aggregated_resources(requests)
                    .await
                    .unwrap()
                    .into_inner(),
                Service::Ecds => ExtensionConfigDiscoveryServiceClient::connect(url)
                    .await
                    .unwrap()
                    .delta_extension_configs(requests)
                    .await
                    .unwrap()
                    .into_inner(),
            }
        })
        .await
        .expect("opening the stream timed out");
        Self { tx, rx }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    async fn subscribe(&self, node: Option<Node>, subscribe: &[&str], unsubscribe: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            node,
            type_url: TYPE.into(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse, error: Option<RpcStatus>) {
        self.send(DeltaDiscoveryRequest {
            type_url: TYPE.into(),
            response_nonce: response.nonce.clone(),
            error_detail: error,
            ..Default::default()
        })
        .await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        let response = timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .expect("stream failed")
            .expect("stream ended");
        assert_eq!(response.type_url, TYPE);
        assert!(!response.nonce.is_empty(), "empty nonce");
        response
    }

    async fn quiet(&mut self, what: &str) {
        if let Ok(got) = timeout(QUIET, self.rx.message()).await {
            panic!("expected nothing ({what}), got {got:?}");
        }
    }
}

/// (name, version, filter JSON) of each resource of a Delta response.
fn delta_resources(response: &DeltaDiscoveryResponse) -> Vec<(String, String, Value)> {
    response
        .resources
        .iter()
        .map(|r| {
            let (name, config) = decode(r.resource.as_ref().expect("resource body"));
            assert_eq!(name, r.name, "Resource.name and the config's name differ");
            assert!(!r.version.is_empty(), "empty resource version");
            (r.name.clone(), r.version.clone(), config)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. SotW basics

#[tokio::test]
async fn sotw_first_response_ack_unchanged_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 10, "perReplica"),
    );
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;

    ads.request(Some(orders("orders-1")), &[RATELIMIT], "", "", None)
        .await;
    let first = ads.recv().await;
    assert_eq!(names(&first), [RATELIMIT]);
    assert_eq!(requests_limit(&only_config(&first)), 10);
    await_status(&running, "the push", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["pushedVersion"].is_string()
    })
    .await;

    // ACK: same version and nonce, not answered.
    ads.ack(&first, &[RATELIMIT]).await;
    ads.quiet("after an ACK").await;
    let proxy = &running.world.status()["proxies"]["orders-1"]["resources"][RATELIMIT];
    assert!(proxy["nack"].is_null(), "{proxy}");

    // Rewriting identical bytes: the poller sees no change.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 10, "perReplica"),
    );
    ads.quiet("identical content rewritten").await;
    // Different bytes, same policies (a comment): no change either.
    write(
        dir.path(),
        "limits.yaml",
        &format!(
            "# a comment\n{}",
            ratelimit_policy("orders", 10, "perReplica")
        ),
    );
    ads.quiet("a comment added").await;
    // A real world change that does not concern this node: recomputed, nothing sent.
    write(
        dir.path(),
        "other.yaml",
        &auth_policy("billing-auth", "billing", "x"),
    );
    await_policy_count(&running, 2).await;
    ads.quiet("a policy for another namespace").await;
    // Another node connecting moves the world too.
    let mut other = Sotw::open(running.xds_addr, Service::Ads).await;
    other
        .request(
            Some(node("billing-1", "billing", "billing")),
            &[AUTHZ],
            "",
            "",
            None,
        )
        .await;
    let _ = other.recv().await;
    ads.quiet("another workload's node connected").await;

    // An edit: a new version with a new nonce.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 20, "perReplica"),
    );
    let second = ads.recv().await;
    assert_eq!(requests_limit(&only_config(&second)), 20);
    assert_ne!(second.version_info, first.version_info);
    assert_ne!(second.nonce, first.nonce);
    ads.ack(&second, &[RATELIMIT]).await;
    ads.quiet("after the second ACK").await;
    await_status(&running, "the ACK", |s| {
        let r = &s["proxies"]["orders-1"]["resources"][RATELIMIT];
        r["ackedVersion"].is_string() && r["ackedVersion"] == r["pushedVersion"]
    })
    .await;

    running.stop().await;
}

#[tokio::test]
async fn sotw_first_request_without_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    ads.request(None, &[RATELIMIT], "", "", None).await;
    let outcome = timeout(WAIT, ads.rx.message())
        .await
        .expect("no answer in time");
    let status = outcome.expect_err("a response to a request without node");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        running.world.status()["proxies"]
            .as_object()
            .unwrap()
            .is_empty(),
        "{}",
        running.world.status()
    );
    running.stop().await;
}

#[tokio::test]
async fn sotw_reconnect_with_current_version_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    ads.request(Some(orders("orders-1")), &[RATELIMIT, AUTHZ], "", "", None)
        .await;
    let first = ads.recv().await;
    assert_eq!(names(&first), [AUTHZ, RATELIMIT]);
    drop(ads);

    // Reconnect with the version it has: no need to send it again.
    let mut again = Sotw::open(running.xds_addr, Service::Ads).await;
    again
        .request(
            Some(orders("orders-1")),
            &[RATELIMIT, AUTHZ],
            &first.version_info,
            "",
            None,
        )
        .await;
    again.quiet("reconnected with the current version").await;
    // Reconnect with an old version: sent.
    let mut old = Sotw::open(running.xds_addr, Service::Ads).await;
    old.request(
        Some(orders("orders-2")),
        &[RATELIMIT, AUTHZ],
        "stale",
        "",
        None,
    )
    .await;
    let fresh = old.recv().await;
    assert_eq!(fresh.version_info, first.version_info);
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// 2. NACK

#[tokio::test]
async fn sotw_nack_is_recorded_and_that_version_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ecds = Sotw::open(running.xds_addr, Service::Ecds).await;
    ecds.request(Some(orders("orders-1")), &[RATELIMIT], "", "", None)
        .await;
    let pass_through = ecds.recv().await;
    assert_eq!(only_config(&pass_through), serde_json::json!({"rules": []}));
    ecds.ack(&pass_through, &[RATELIMIT]).await;

    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 5, "perReplica"),
    );
    let bad = ecds.recv().await;
    assert_eq!(requests_limit(&only_config(&bad)), 5);
    // NACK as Envoy does: the previous good version, the rejected nonce, the error.
    ecds.request(
        None,
        &[RATELIMIT],
        &pass_through.version_info,
        &bad.nonce,
        nack_detail("limit too small"),
    )
    .await;
    ecds.quiet("after a NACK").await;
    await_status(&running, "the NACK", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["nack"]["message"] == "limit too small"
    })
    .await;
    let status = running.world.status();
    let resource = &status["proxies"]["orders-1"]["resources"][RATELIMIT];
    // The NACKed version is the one pushed; the ACKed one stays the previous.
    assert!(resource["nack"]["version"].is_string(), "{resource}");
    assert_eq!(
        resource["nack"]["version"], resource["pushedVersion"],
        "{resource}"
    );
    assert!(resource["ackedVersion"].is_string(), "{resource}");
    assert_ne!(
        resource["ackedVersion"], resource["nack"]["version"],
        "{resource}"
    );
    let acked_before = resource["ackedVersion"].clone();

    // Envoy clears error_detail after sending a NACK: its next request (e.g. for a
    // subscription change, or a retry) carries the rejected nonce, the previous
    // version and no error. That is not an ACK of the rejected version.
    ecds.request(
        None,
        &[RATELIMIT],
        &pass_through.version_info,
        &bad.nonce,
        None,
    )
    .await;
    ecds.quiet("a request after the NACK").await;
    let status = running.world.status();
    let resource = &status["proxies"]["orders-1"]["resources"][RATELIMIT];
    assert_eq!(resource["nack"]["message"], "limit too small", "{resource}");
    assert_eq!(resource["ackedVersion"], acked_before, "{resource}");

    // Unrelated world changes: the rejected version is not re-sent.
    let mut other = Sotw::open(running.xds_addr, Service::Ecds).await;
    other
        .request(
            Some(node("billing-1", "billing", "billing")),
            &[AUTHZ],
            "",
            "",
            None,
        )
        .await;
    let _ = other.recv().await;
    ecds.quiet("another node connected").await;
    write(
        dir.path(),
        "other.yaml",
        &auth_policy("billing-auth", "billing", "x"),
    );
    await_policy_count(&running, 2).await;
    ecds.quiet("an unrelated policy changed").await;
    drop(other);
    await_status(&running, "the other node gone", |s| {
        s["proxies"].get("billing-1").is_none()
    })
    .await;
    ecds.quiet("another node disconnected").await;

    // A later, different version is sent.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 50, "perReplica"),
    );
    let good = ecds.recv().await;
    assert_eq!(requests_limit(&only_config(&good)), 50);
    assert_ne!(good.version_info, bad.version_info);
    assert_ne!(good.nonce, bad.nonce);
    ecds.ack(&good, &[RATELIMIT]).await;
    await_status(&running, "the ACK clears the NACK", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["nack"].is_null()
    })
    .await;
    ecds.quiet("after the ACK").await;

    // Going back to the rejected content: still never re-sent.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 5, "perReplica"),
    );
    ecds.quiet("the rejected content came back").await;
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// 3. Resources that do not exist (yet)

#[tokio::test]
async fn sotw_unknown_names_send_nothing_and_content_follows_a_new_policy() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    // The four names always exist; an unknown one never does.
    ads.request(
        Some(orders("orders-1")),
        &["meshward.unknown"],
        "",
        "",
        None,
    )
    .await;
    ads.quiet("subscribed to an unknown name").await;
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 10, "perReplica"),
    );
    await_policy_count(&running, 1).await;
    ads.quiet("world changed, still an unknown name").await;

    // Adding a known name: only that one is sent.
    ads.request(None, &["meshward.unknown", RATELIMIT], "", "", None)
        .await;
    let first = ads.recv().await;
    assert_eq!(names(&first), [RATELIMIT]);
    assert_eq!(requests_limit(&only_config(&first)), 10);
    ads.ack(&first, &["meshward.unknown", RATELIMIT]).await;
    ads.quiet("after the ACK").await;

    // AUTHZ is served pass-through until a policy appears, then the policy's config.
    ads.ack(&first, &["meshward.unknown", RATELIMIT, AUTHZ])
        .await;
    let both = ads.recv().await;
    assert_eq!(names(&both), [AUTHZ, RATELIMIT]);
    let authz = decode(&both.resources[0]).1;
    assert_eq!(authz["rules"][0]["name"], "no-policy", "{authz}");
    ads.ack(&both, &["meshward.unknown", RATELIMIT, AUTHZ])
        .await;
    write(
        dir.path(),
        "auth.yaml",
        &auth_policy("shop-auth", "shop", "shop-rule"),
    );
    let with_policy = ads.recv().await;
    assert_eq!(names(&with_policy), [AUTHZ, RATELIMIT]);
    let authz = decode(&with_policy.resources[0]).1;
    assert_eq!(authz["rules"][0]["name"], "shop-rule", "{authz}");
    // Removing it: back to pass-through.
    ads.ack(&with_policy, &["meshward.unknown", RATELIMIT, AUTHZ])
        .await;
    std::fs::remove_file(dir.path().join("auth.yaml")).unwrap();
    let back = ads.recv().await;
    assert_eq!(
        decode(&back.resources[0]).1["rules"][0]["name"],
        "no-policy"
    );
    assert_eq!(back.version_info, both.version_info);
    running.stop().await;
}

#[tokio::test]
async fn fetch_extension_configs_answers_once() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 10, "perReplica"),
    );
    let running = server(dir.path()).await;
    let mut client = timeout(
        WAIT,
        ExtensionConfigDiscoveryServiceClient::connect(format!("http://{}", running.xds_addr)),
    )
    .await
    .unwrap()
    .unwrap();
    let request = |names: &[&str]| DiscoveryRequest {
        node: Some(orders("orders-1")),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: TYPE.into(),
        ..Default::default()
    };
    let all = timeout(
        WAIT,
        client.fetch_extension_configs(request(&[RATELIMIT, AUTHZ, IDEMPOTENCY, TRACE, "nope"])),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    assert_eq!(names(&all), [RATELIMIT, AUTHZ, IDEMPOTENCY, TRACE]);
    assert_eq!(requests_limit(&decode(&all.resources[0]).1), 10);
    assert!(!all.version_info.is_empty() && !all.nonce.is_empty());
    let unknown = timeout(WAIT, client.fetch_extension_configs(request(&["nope"])))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(unknown.resources.is_empty());
    let mut without_node = request(&[RATELIMIT]);
    without_node.node = None;
    let refused = timeout(WAIT, client.fetch_extension_configs(without_node))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// 4. The newest request wins

#[tokio::test]
async fn sotw_newest_request_wins() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    ads.request(Some(orders("orders-1")), &[RATELIMIT], "", "", None)
        .await;
    let first = ads.recv().await;
    assert_eq!(names(&first), [RATELIMIT]);

    // ACK + a different subscription: answered with the new set.
    ads.ack(&first, &[RATELIMIT, AUTHZ]).await;
    let second = ads.recv().await;
    assert_eq!(names(&second), [AUTHZ, RATELIMIT]);
    ads.ack(&second, &[AUTHZ]).await;
    let third = ads.recv().await;
    assert_eq!(names(&third), [AUTHZ]);
    assert_ne!(third.version_info, second.version_info);

    // Two requests back to back, both on the latest nonce: the first is answered,
    // which makes the second stale; Envoy ACKs that answer with its newest names,
    // and the response follows them.
    ads.ack(&third, &[IDEMPOTENCY]).await;
    ads.ack(&third, &[TRACE]).await;
    let fourth = ads.recv().await;
    assert_eq!(names(&fourth), [IDEMPOTENCY]);
    ads.quiet("the second request carried a stale nonce").await;
    ads.ack(&fourth, &[TRACE]).await;
    let fifth = ads.recv().await;
    assert_eq!(names(&fifth), [TRACE]);
    assert_eq!(only_config(&fifth), serde_json::json!({}));
    ads.ack(&fifth, &[TRACE]).await;
    ads.quiet("settled").await;

    // The subscription in force is the newest one: an edit to a resource no longer
    // subscribed sends nothing.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 10, "perReplica"),
    );
    await_policy_count(&running, 1).await;
    ads.quiet("a no-longer-subscribed resource changed").await;
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// 5. Delta

#[tokio::test]
async fn delta_subscribe_ack_unsubscribe_nack() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut delta = Delta::open(running.xds_addr, Service::Ads).await;

    // Subscribe: the resource with name and version.
    delta
        .subscribe(Some(orders("orders-1")), &[RATELIMIT], &[])
        .await;
    let first = delta.recv().await;
    let sent = delta_resources(&first);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, RATELIMIT);
    assert_eq!(sent[0].2, serde_json::json!({"rules": []}));
    assert!(first.removed_resources.is_empty());
    let pass_through_version = sent[0].1.clone();
    delta.ack(&first, None).await;
    delta.quiet("after an ACK").await;

    // Subscribe one more: only the new one is sent.
    delta.subscribe(None, &[AUTHZ], &[]).await;
    let second = delta.recv().await;
    let sent = delta_resources(&second);
    assert_eq!(
        sent.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [AUTHZ]
    );
    assert_ne!(second.nonce, first.nonce);
    delta.ack(&second, None).await;
    delta.quiet("after the second ACK").await;

    // Unsubscribe AUTHZ: its changes are no longer sent.
    delta.subscribe(None, &[], &[AUTHZ]).await;
    delta.quiet("after unsubscribing").await;
    write(
        dir.path(),
        "auth.yaml",
        &auth_policy("shop-auth", "shop", "shop-rule"),
    );
    await_policy_count(&running, 1).await;
    delta.quiet("an unsubscribed resource changed").await;

    // A RATELIMIT change is sent, alone; NACK it.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 5, "perReplica"),
    );
    let bad = delta.recv().await;
    let sent = delta_resources(&bad);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, RATELIMIT);
    assert_eq!(requests_limit(&sent[0].2), 5);
    let bad_version = sent[0].1.clone();
    assert_ne!(bad_version, pass_through_version);
    delta.ack(&bad, nack_detail("no thanks")).await;
    delta.quiet("after a NACK").await;
    await_status(&running, "the NACK", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["nack"]["message"] == "no thanks"
    })
    .await;
    assert_eq!(
        running.world.status()["proxies"]["orders-1"]["resources"][RATELIMIT]["nack"]["version"],
        bad_version.as_str()
    );

    // Unrelated world changes: the rejected version is not re-sent.
    let mut other = Delta::open(running.xds_addr, Service::Ecds).await;
    other
        .subscribe(Some(node("billing-1", "billing", "billing")), &[AUTHZ], &[])
        .await;
    let _ = other.recv().await;
    delta.quiet("another node connected").await;
    write(
        dir.path(),
        "other.yaml",
        &auth_policy("billing-auth", "billing", "x"),
    );
    await_policy_count(&running, 3).await;
    delta.quiet("an unrelated policy changed").await;

    // A newer version is sent.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 6, "perReplica"),
    );
    let good = delta.recv().await;
    let sent = delta_resources(&good);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(requests_limit(&sent[0].2), 6);
    assert_ne!(sent[0].1, bad_version);
    delta.ack(&good, None).await;
    delta.quiet("after the ACK").await;
    let current_version = sent[0].1.clone();

    // Re-subscribing AUTHZ: its current (policy) content is sent.
    delta.subscribe(None, &[AUTHZ], &[]).await;
    let again = delta.recv().await;
    let sent = delta_resources(&again);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, AUTHZ);
    assert_eq!(sent[0].2["rules"][0]["name"], "shop-rule");

    // A reconnecting proxy that has the current version gets nothing.
    let mut reconnected = Delta::open(running.xds_addr, Service::Ecds).await;
    reconnected
        .send(DeltaDiscoveryRequest {
            node: Some(orders("orders-1")),
            type_url: TYPE.into(),
            resource_names_subscribe: vec![RATELIMIT.into()],
            initial_resource_versions: HashMap::from([(
                RATELIMIT.to_string(),
                current_version.clone(),
            )]),
            ..Default::default()
        })
        .await;
    reconnected
        .quiet("initial_resource_versions is current")
        .await;
    // One with an old version gets the current one.
    let mut outdated = Delta::open(running.xds_addr, Service::Ads).await;
    outdated
        .send(DeltaDiscoveryRequest {
            node: Some(orders("orders-1")),
            type_url: TYPE.into(),
            resource_names_subscribe: vec![RATELIMIT.into()],
            initial_resource_versions: HashMap::from([(
                RATELIMIT.to_string(),
                pass_through_version,
            )]),
            ..Default::default()
        })
        .await;
    let update = outdated.recv().await;
    let sent = delta_resources(&update);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, current_version);
    running.stop().await;
}

#[tokio::test]
async fn delta_nack_of_an_older_response_keeps_the_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut delta = Delta::open(running.xds_addr, Service::Ads).await;
    delta
        .subscribe(Some(orders("orders-1")), &[RATELIMIT], &[])
        .await;
    let first = delta.recv().await;
    delta.ack(&first, None).await;
    // One response in flight at a time: the second edit waits for the first answer.
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 5, "perReplica"),
    );
    let older = delta.recv().await;
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 6, "perReplica"),
    );
    await_status(&running, "the second edit", |s| {
        s["policies"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    delta.quiet("an answer is still due").await;
    // The older one is NACKed: the newer one goes out then.
    delta.ack(&older, nack_detail("old one bad")).await;
    let newer = delta.recv().await;
    let newer_version = delta_resources(&newer)[0].1.clone();
    assert_eq!(requests_limit(&delta_resources(&newer)[0].2), 6);
    delta.ack(&newer, None).await;
    delta.quiet("ACK of the newer response").await;
    await_status(&running, "the ACK of the newer one", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["ackedVersion"] == newer_version.as_str()
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn delta_unknown_names_and_stale_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut delta = Delta::open(running.xds_addr, Service::Ecds).await;
    delta
        .subscribe(Some(orders("orders-1")), &["meshward.unknown"], &[])
        .await;
    delta.quiet("subscribed to an unknown name").await;
    delta.subscribe(None, &[RATELIMIT], &[]).await;
    let first = delta.recv().await;
    assert_eq!(delta_resources(&first).len(), 1);
    // A NACK for a nonce never sent changes nothing.
    delta
        .send(DeltaDiscoveryRequest {
            type_url: TYPE.into(),
            response_nonce: "not-a-nonce".into(),
            error_detail: nack_detail("ghost"),
            ..Default::default()
        })
        .await;
    delta.quiet("a NACK with an unknown nonce").await;
    let status = running.world.status();
    assert!(
        status["proxies"]["orders-1"]["resources"][RATELIMIT]["nack"].is_null(),
        "{status}"
    );
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// 6. Workload scope split

#[tokio::test]
async fn workload_scope_is_split_over_replicas() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 7, "workload"),
    );
    let running = server(dir.path()).await;

    let mut a = Sotw::open(running.xds_addr, Service::Ecds).await;
    a.request(Some(orders("orders-a")), &[RATELIMIT], "", "", None)
        .await;
    let alone = a.recv().await;
    assert_eq!(requests_limit(&only_config(&alone)), 7);
    a.ack(&alone, &[RATELIMIT]).await;
    a.quiet("alone, ACKed").await;

    // A second replica (same workload, another node id): 4 + 3.
    let mut b = Sotw::open(running.xds_addr, Service::Ads).await;
    b.request(Some(orders("orders-b")), &[RATELIMIT], "", "", None)
        .await;
    let b_share = b.recv().await;
    let a_share = a.recv().await;
    assert_eq!(requests_limit(&only_config(&a_share)), 4);
    assert_eq!(requests_limit(&only_config(&b_share)), 3);
    a.ack(&a_share, &[RATELIMIT]).await;
    b.ack(&b_share, &[RATELIMIT]).await;
    a.quiet("split, ACKed").await;
    b.quiet("split, ACKed").await;
    assert_eq!(running.world.status()["workloads"]["shop/orders"], 2);

    // A Delta replica too: 3 + 2 + 2.
    let mut c = Delta::open(running.xds_addr, Service::Ads).await;
    c.subscribe(Some(orders("orders-c")), &[RATELIMIT], &[])
        .await;
    let c_share = c.recv().await;
    assert_eq!(requests_limit(&delta_resources(&c_share)[0].2), 2);
    let a_third = a.recv().await;
    let b_third = b.recv().await;
    assert_eq!(requests_limit(&only_config(&a_third)), 3);
    assert_eq!(requests_limit(&only_config(&b_third)), 2);
    // Answer, as Envoy always does: one response is in flight per stream at a time.
    a.ack(&a_third, &[RATELIMIT]).await;
    b.ack(&b_third, &[RATELIMIT]).await;
    drop(c);
    let a_back = a.recv().await;
    let b_back = b.recv().await;
    assert_eq!(requests_limit(&only_config(&a_back)), 4);
    assert_eq!(requests_limit(&only_config(&b_back)), 3);
    a.ack(&a_back, &[RATELIMIT]).await;
    b.ack(&b_back, &[RATELIMIT]).await;

    // B disconnects: A gets the whole figure again.
    drop(b);
    let whole = a.recv().await;
    assert_eq!(requests_limit(&only_config(&whole)), 7);
    assert_eq!(whole.version_info, alone.version_info);
    a.quiet("after the re-push").await;
    assert_eq!(running.world.status()["workloads"]["shop/orders"], 1);
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// 7. Stale nonces

#[tokio::test]
async fn sotw_stale_nonce_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    ads.request(Some(orders("orders-1")), &[RATELIMIT], "", "", None)
        .await;
    let first = ads.recv().await;
    ads.ack(&first, &[RATELIMIT, AUTHZ]).await;
    let second = ads.recv().await;
    assert_eq!(names(&second), [AUTHZ, RATELIMIT]);

    // An old nonce, with another subscription: ignored.
    ads.request(None, &[TRACE], &first.version_info, &first.nonce, None)
        .await;
    ads.quiet("a request with an old nonce").await;
    // An old nonce with an error: not a NACK.
    ads.request(
        None,
        &[RATELIMIT],
        &first.version_info,
        &first.nonce,
        nack_detail("stale"),
    )
    .await;
    ads.quiet("a NACK with an old nonce").await;
    // A nonce never sent: ignored too.
    ads.request(None, &[IDEMPOTENCY], "", "made-up", None).await;
    ads.quiet("a made-up nonce").await;
    let status = running.world.status();
    assert!(
        status["proxies"]["orders-1"]["resources"][RATELIMIT]["nack"].is_null(),
        "{status}"
    );

    // The subscription is still the one from the last valid request: ACKing the
    // current nonce with it is not answered (had a stale request changed it, this
    // would send a response).
    ads.ack(&second, &[RATELIMIT, AUTHZ]).await;
    ads.quiet("the ACK of the current nonce").await;
    // And the current nonce still works for a change.
    ads.ack(&second, &[TRACE]).await;
    let third = ads.recv().await;
    assert_eq!(names(&third), [TRACE]);
    running.stop().await;
}

// ---------------------------------------------------------------------------------
// HTTP: /status and /metrics

async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let text = timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        String::from_utf8(bytes).unwrap()
    })
    .await
    .expect("HTTP request timed out");
    let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn http_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 10, "perReplica"),
    );
    write(dir.path(), "broken.yaml", "apiVersion: [");
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    ads.request(Some(orders("orders-1")), &[RATELIMIT], "", "", None)
        .await;
    let first = ads.recv().await;
    ads.ack(&first, &[RATELIMIT]).await;
    await_status(&running, "the ACK", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["ackedVersion"].is_string()
    })
    .await;

    let (head, body) = http_get(running.http_addr, "/status").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    // Chunked or not, the JSON object is the body's outermost braces.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let status: Value = serde_json::from_str(json).unwrap();
    assert_eq!(status["policies"][0]["name"], "orders", "{status}");
    assert_eq!(
        status["policyErrors"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    assert_eq!(status["workloads"]["shop/orders"], 1, "{status}");
    let proxy = &status["proxies"]["orders-1"];
    assert_eq!(proxy["namespace"], "shop");
    assert_eq!(proxy["workload"], "orders");
    assert_eq!(
        proxy["resources"][RATELIMIT]["ackedVersion"],
        proxy["resources"][RATELIMIT]["pushedVersion"]
    );

    let (head, body) = http_get(running.http_addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for needle in [
        "meshward_control_plane_pushes_total 1",
        "meshward_control_plane_acks_total 1",
        "meshward_control_plane_nacks_total 0",
        "meshward_control_plane_policies 1",
        "meshward_control_plane_policy_errors 1",
        "meshward_control_plane_connected_proxies{namespace=\"shop\",workload=\"orders\"} 1",
    ] {
        assert!(body.contains(needle), "no {needle:?} in\n{body}");
    }
    running.stop().await;
}

/// Envoy answers a response for a type it no longer watches by echoing the nonce with
/// its old version and no error: the response is settled, and later changes still go out.
#[tokio::test]
async fn sotw_a_silently_ignored_response_does_not_stall_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path()).await;
    let mut ads = Sotw::open(running.xds_addr, Service::Ads).await;
    ads.request(Some(orders("orders-1")), &[RATELIMIT], "", "", None)
        .await;
    let first = ads.recv().await;
    ads.ack(&first, &[RATELIMIT]).await;
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 5, "perReplica"),
    );
    let ignored = ads.recv().await;
    // Not applied, not rejected: the old version with the new nonce. The stream
    // settles and offers the change again instead of waiting forever.
    ads.request(
        None,
        &[RATELIMIT],
        &first.version_info,
        &ignored.nonce,
        None,
    )
    .await;
    let again = ads.recv().await;
    assert_eq!(requests_limit(&only_config(&again)), 5);
    ads.ack(&again, &[RATELIMIT]).await;
    write(
        dir.path(),
        "limits.yaml",
        &ratelimit_policy("orders", 6, "perReplica"),
    );
    let next = ads.recv().await;
    assert_eq!(requests_limit(&only_config(&next)), 6);
    running.stop().await;
}
