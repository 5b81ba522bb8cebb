//! Remote modules and Envoy's code cache (control-plane/src/xds/code_cache.rs), with
//! tonic clients playing Envoy: a NACK for a module the proxy has not fetched yet is
//! answered by the same version again after a delay (SotW and Delta), is not a rejection
//! (status `fetching`, not `nack`), and is counted in
//! `meshward_control_plane_module_fetch_retries_total`; any other NACK — another
//! message, a module the proxy already runs, a local module — is never re-sent.
//!
//! The message is Envoy 1.40's, captured with real Envoy: on a code-cache miss it says
//! exactly what it says for a configuration the plugin refuses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{async_data_source, Node, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value, Any, Struct, Value as PbValue};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use meshward_control_plane::server::{start, ModuleMode, Options, Running};
use meshward_control_plane::xds::code_cache::FIRST_DELAY;
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const RATELIMIT: &str = "meshward.ratelimit";
const AUTHZ: &str = "meshward.authz";
/// Envoy 1.40's NACK on a code-cache miss (and on a refused configuration).
const CACHE_MISS: &str = "Unable to create Wasm plugin meshward_ratelimit";
const WAIT: Duration = Duration::from_secs(5);
/// Longer than the first two re-send delays together: a version that is not re-sent
/// within this is not re-sent at all.
const QUIET: Duration = Duration::from_millis(1000);

/// Modules served from a temp dir (any bytes: only their sha256 matters here).
async fn server(dir: &Path, modules: Option<&Path>) -> Running {
    let (mode, wasm_dir) = match modules {
        Some(wasm) => {
            for module in ["meshward_ratelimit", "meshward_authz"] {
                std::fs::write(wasm.join(format!("{module}.wasm")), module).unwrap();
            }
            (
                ModuleMode::Remote {
                    cluster: "meshward_modules".into(),
                    base_url: "http://127.0.0.1:1".into(),
                },
                Some(wasm.to_path_buf()),
            )
        }
        None => (
            ModuleMode::Local {
                dir: "/etc/meshward".into(),
            },
            None,
        ),
    };
    start(Options {
        policy_dir: dir.to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        wasm_dir,
        modules: mode,
        poll_interval: Duration::from_millis(50),
    })
    .await
    .unwrap()
}

fn limit_policy(requests: u64) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: orders, namespace: shop}}
spec:
  selector: {{workloads: [orders]}}
  config:
    rules:
      - {{name: per-client, limit: {{algorithm: tokenBucket, requests: {requests}, per: 1s}}}}
"#
    )
}

fn write_policy(dir: &Path, requests: u64) {
    let tmp = dir.join(".limits.tmp");
    std::fs::write(&tmp, limit_policy(requests)).unwrap();
    std::fs::rename(&tmp, dir.join("limits.yaml")).unwrap();
}

fn orders(id: &str) -> Node {
    let text = |s: &str| PbValue {
        kind: Some(value::Kind::StringValue(s.into())),
    };
    Node {
        id: id.into(),
        cluster: "orders".into(),
        metadata: Some(Struct {
            fields: HashMap::from([
                ("NAMESPACE".to_string(), text("shop")),
                ("WORKLOAD_NAME".to_string(), text("orders")),
            ]),
        }),
        ..Default::default()
    }
}

fn nack(message: &str) -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 13,
        message: message.into(),
        details: vec![],
    })
}

/// The remote module's `http_uri.timeout` as (seconds, nanos): a re-send marks its
/// attempt in the nanoseconds (the same bytes would be ACKed and not applied).
fn fetch_timeout(any: &Any) -> (i64, i32) {
    let typed = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
    let wasm = Wasm::decode(typed.typed_config.unwrap().value.as_slice()).unwrap();
    let Some(plugin_config::Vm::VmConfig(vm)) = wasm.config.unwrap().vm else {
        panic!("no vm_config")
    };
    match vm.code.and_then(|c| c.specifier) {
        Some(async_data_source::Specifier::Remote(remote)) => {
            let timeout = remote.http_uri.unwrap().timeout.unwrap();
            (timeout.seconds, timeout.nanos)
        }
        other => panic!("not remote: {other:?}"),
    }
}

/// (resource name, `nack_on_code_cache_miss`, remote sha256 or "", filter JSON).
fn decode(any: &Any) -> (String, bool, String, Value) {
    let typed = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
    let wasm = Wasm::decode(typed.typed_config.unwrap().value.as_slice()).unwrap();
    let plugin = wasm.config.unwrap();
    let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else {
        panic!("no vm_config")
    };
    let sha256 = match vm.code.and_then(|c| c.specifier) {
        Some(async_data_source::Specifier::Remote(remote)) => remote.sha256,
        _ => String::new(),
    };
    let json = envoy_types::pb::google::protobuf::StringValue::decode(
        plugin.configuration.unwrap().value.as_slice(),
    )
    .unwrap();
    (
        typed.name,
        vm.nack_on_code_cache_miss,
        sha256,
        serde_json::from_str(&json.value).unwrap(),
    )
}

fn limit(config: &Value) -> u64 {
    config["rules"][0]["limit"]["requests"]
        .as_u64()
        .unwrap_or(0)
}

fn status(running: &Running, node: &str, resource: &str) -> Value {
    running.world.status()["proxies"][node]["resources"][resource].clone()
}

async fn await_status(running: &Running, what: &str, predicate: impl Fn(&Value) -> bool) {
    let reached = timeout(WAIT, async {
        while !predicate(&running.world.status()) {
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

fn retries(running: &Running) -> u64 {
    running.world.metrics.module_fetch_retries.get()
}

fn exposition_has(running: &Running, line: &str) {
    let text = running.world.metrics.encode();
    assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
}

// ---------------------------------------------------------------------------------
// Clients (ADS; the ECDS services share the stream code, tests/protocol.rs)

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(addr: SocketAddr) -> Self {
        let (tx, requests) = mpsc::channel(16);
        let rx = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .stream_aggregated_resources(ReceiverStream::new(requests))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn request(&self, node: Option<Node>, names: &[&str], version: &str, nonce: &str) {
        self.answer(node, names, version, nonce, None).await;
    }

    async fn answer(
        &self,
        node: Option<Node>,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<RpcStatus>,
    ) {
        self.tx
            .send(DiscoveryRequest {
                version_info: version.into(),
                node,
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                type_url: TYPE.into(),
                response_nonce: nonce.into(),
                error_detail: error,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .expect("stream failed")
            .expect("stream ended")
    }

    async fn quiet(&mut self, what: &str) {
        if let Ok(got) = timeout(QUIET, self.rx.message()).await {
            panic!("expected nothing ({what}), got {got:?}");
        }
    }
}

fn names(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| decode(r).0).collect()
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(addr: SocketAddr) -> Self {
        let (tx, requests) = mpsc::channel(16);
        let rx = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .delta_aggregated_resources(ReceiverStream::new(requests))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn subscribe(&self, node: Node, names: &[&str]) {
        self.tx
            .send(DeltaDiscoveryRequest {
                node: Some(node),
                type_url: TYPE.into(),
                resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn answer(&self, response: &DeltaDiscoveryResponse, error: Option<RpcStatus>) {
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: TYPE.into(),
                response_nonce: response.nonce.clone(),
                error_detail: error,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .expect("stream failed")
            .expect("stream ended")
    }

    async fn quiet(&mut self, what: &str) {
        if let Ok(got) = timeout(QUIET, self.rx.message()).await {
            panic!("expected nothing ({what}), got {got:?}");
        }
    }
}

/// (name, version) of each resource of a Delta response.
fn delta_versions(response: &DeltaDiscoveryResponse) -> Vec<(String, String)> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------

#[tokio::test]
async fn sotw_a_code_cache_miss_is_sent_again_after_the_delay_and_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = tempfile::tempdir().unwrap();
    write_policy(dir.path(), 5);
    let running = server(dir.path(), Some(wasm.path())).await;
    let mut ads = Sotw::open(running.xds_addr).await;
    ads.request(Some(orders("orders-1")), &[RATELIMIT], "", "")
        .await;
    let first = ads.recv().await;
    let (name, nack_on_miss, sha256, config) = decode(&first.resources[0]);
    assert_eq!(name, RATELIMIT);
    assert!(nack_on_miss, "remote modules set nack_on_code_cache_miss");
    assert_eq!(sha256.len(), 64);
    assert_eq!(limit(&config), 5);

    // Two cache-miss NACKs: the same version each time, after 200 ms, then 400 ms.
    let mut previous = first.clone();
    for (attempt, delay) in [(1u32, FIRST_DELAY), (2, FIRST_DELAY * 2)] {
        let nacked = Instant::now();
        ads.answer(None, &[RATELIMIT], "", &previous.nonce, nack(CACHE_MISS))
            .await;
        await_status(&running, "fetching", |s| {
            s["proxies"]["orders-1"]["resources"][RATELIMIT]["fetching"]["attempt"] == attempt
        })
        .await;
        let resource = status(&running, "orders-1", RATELIMIT);
        assert!(resource["nack"].is_null(), "not a rejection: {resource}");
        assert_eq!(resource["fetching"]["version"], resource["pushedVersion"]);
        assert_eq!(resource["fetching"]["message"], CACHE_MISS);
        let again = ads.recv().await;
        let waited = nacked.elapsed();
        eprintln!("re-send {attempt}: {waited:?} after the NACK");
        assert!(
            waited >= delay && waited < delay + Duration::from_millis(400),
            "re-send {attempt} after {waited:?}, expected {delay:?}"
        );
        assert_eq!(again.version_info, first.version_info, "the same version");
        assert_eq!(again.resources.len(), 1);
        assert_eq!(decode(&again.resources[0]), decode(&first.resources[0]));
        assert_eq!(fetch_timeout(&first.resources[0]), (30, 0));
        assert_eq!(
            fetch_timeout(&again.resources[0]),
            (30, attempt as i32),
            "marked as re-send {attempt}"
        );
        assert_ne!(again.nonce, previous.nonce);
        assert_eq!(retries(&running), u64::from(attempt));
        previous = again;
    }

    // Fetched: ACKed. Nothing more is sent; the status is clean.
    ads.request(None, &[RATELIMIT], &previous.version_info, &previous.nonce)
        .await;
    await_status(&running, "the ACK", |s| {
        s["proxies"]["orders-1"]["resources"][RATELIMIT]["ackedVersion"].is_string()
    })
    .await;
    ads.quiet("after the ACK").await;
    let resource = status(&running, "orders-1", RATELIMIT);
    assert!(resource["fetching"].is_null(), "{resource}");
    assert!(resource["nack"].is_null(), "{resource}");
    exposition_has(
        &running,
        "meshward_control_plane_module_fetch_retries_total 2",
    );
    exposition_has(&running, "meshward_control_plane_nacks_total 0");

    // The proxy runs this module now: the same message for a new version of the same
    // module is the configuration's fault — rejected, never sent again.
    write_policy(dir.path(), 6);
    let bad = ads.recv().await;
    assert_eq!(limit(&decode(&bad.resources[0]).3), 6);
    ads.answer(
        None,
        &[RATELIMIT],
        &previous.version_info,
        &bad.nonce,
        nack(CACHE_MISS),
    )
    .await;
    ads.quiet("a refused configuration").await;
    let resource = status(&running, "orders-1", RATELIMIT);
    assert_eq!(resource["nack"]["message"], CACHE_MISS, "{resource}");
    assert_eq!(resource["nack"]["version"], resource["pushedVersion"]);
    assert!(resource["fetching"].is_null(), "{resource}");
    assert_eq!(retries(&running), 2);
    exposition_has(&running, "meshward_control_plane_nacks_total 1");
    running.stop().await;
}

#[tokio::test]
async fn delta_a_code_cache_miss_is_sent_again_after_the_delay_and_not_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = tempfile::tempdir().unwrap();
    write_policy(dir.path(), 5);
    let running = server(dir.path(), Some(wasm.path())).await;
    let mut delta = Delta::open(running.xds_addr).await;
    delta.subscribe(orders("orders-1"), &[RATELIMIT]).await;
    let first = delta.recv().await;
    let sent = delta_versions(&first);
    assert_eq!(sent.len(), 1);
    assert!(decode(first.resources[0].resource.as_ref().unwrap()).1);

    let nacked = Instant::now();
    delta.answer(&first, nack(CACHE_MISS)).await;
    let again = delta.recv().await;
    let waited = nacked.elapsed();
    eprintln!("Delta re-send: {waited:?} after the NACK");
    assert!(
        waited >= FIRST_DELAY && waited < FIRST_DELAY + Duration::from_millis(400),
        "{waited:?}"
    );
    assert_eq!(delta_versions(&again), sent, "the same version");
    let body = |r: &DeltaDiscoveryResponse| r.resources[0].resource.clone().unwrap();
    assert_eq!(decode(&body(&again)), decode(&body(&first)));
    assert_eq!(fetch_timeout(&body(&again)), (30, 1), "marked as a re-send");
    assert_eq!(retries(&running), 1);
    let resource = status(&running, "orders-1", RATELIMIT);
    assert!(resource["nack"].is_null(), "{resource}");
    assert_eq!(resource["fetching"]["attempt"], 1, "{resource}");

    delta.answer(&again, None).await;
    delta.quiet("after the ACK").await;
    let resource = status(&running, "orders-1", RATELIMIT);
    assert_eq!(resource["ackedVersion"], sent[0].1.as_str(), "{resource}");
    assert!(resource["fetching"].is_null(), "{resource}");

    // A module the proxy has: a refusal.
    write_policy(dir.path(), 6);
    let bad = delta.recv().await;
    delta.answer(&bad, nack(CACHE_MISS)).await;
    delta.quiet("a refused configuration").await;
    let resource = status(&running, "orders-1", RATELIMIT);
    assert_eq!(
        resource["nack"]["version"],
        delta_versions(&bad)[0].1.as_str()
    );
    assert_eq!(retries(&running), 1);
    running.stop().await;
}

/// Other NACKs keep their meaning: another message on a module never loaded, and the
/// cache-miss message with local modules, are rejections, never sent again.
#[tokio::test]
async fn other_nacks_are_never_sent_again() {
    for remote in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let wasm = tempfile::tempdir().unwrap();
        write_policy(dir.path(), 5);
        let running = server(dir.path(), remote.then_some(wasm.path())).await;
        let message = if remote {
            "Proto constraint validation failed"
        } else {
            CACHE_MISS
        };

        let mut ads = Sotw::open(running.xds_addr).await;
        ads.request(Some(orders("orders-s")), &[RATELIMIT], "", "")
            .await;
        let first = ads.recv().await;
        assert_eq!(decode(&first.resources[0]).1, remote);
        ads.answer(None, &[RATELIMIT], "", &first.nonce, nack(message))
            .await;
        ads.quiet("SotW: a rejection").await;

        let mut delta = Delta::open(running.xds_addr).await;
        delta.subscribe(orders("orders-d"), &[RATELIMIT]).await;
        let first = delta.recv().await;
        delta.answer(&first, nack(message)).await;
        delta.quiet("Delta: a rejection").await;

        for node in ["orders-s", "orders-d"] {
            let resource = status(&running, node, RATELIMIT);
            assert_eq!(resource["nack"]["message"], message, "{node}: {resource}");
            assert!(resource["fetching"].is_null(), "{node}: {resource}");
        }
        assert_eq!(retries(&running), 0);
        running.stop().await;
    }
}

/// The first SotW response carries every resource; Envoy stops at the first plugin it
/// cannot create and names it. That one waits for its module; the others go out one by
/// one meanwhile, and it follows once due.
#[tokio::test]
async fn sotw_the_named_module_waits_while_the_other_changes_go_out() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = tempfile::tempdir().unwrap();
    write_policy(dir.path(), 5);
    let running = server(dir.path(), Some(wasm.path())).await;
    let mut ads = Sotw::open(running.xds_addr).await;
    ads.request(Some(orders("orders-1")), &[AUTHZ, RATELIMIT], "", "")
        .await;
    let first = ads.recv().await;
    assert_eq!(names(&first), [AUTHZ, RATELIMIT]);
    let nacked = Instant::now();
    ads.answer(
        None,
        &[AUTHZ, RATELIMIT],
        "",
        &first.nonce,
        nack(CACHE_MISS),
    )
    .await;
    // At once: authz alone (ratelimit waits; nothing of it was ACKed).
    let authz = ads.recv().await;
    assert!(nacked.elapsed() < FIRST_DELAY, "{:?}", nacked.elapsed());
    assert_eq!(names(&authz), [AUTHZ]);
    assert!(status(&running, "orders-1", AUTHZ)["nack"].is_null());
    assert!(status(&running, "orders-1", RATELIMIT)["nack"].is_null());
    ads.request(None, &[AUTHZ, RATELIMIT], &authz.version_info, &authz.nonce)
        .await;
    // Then, once due: both, the ratelimit change being the re-send.
    let both = ads.recv().await;
    assert!(nacked.elapsed() >= FIRST_DELAY, "{:?}", nacked.elapsed());
    assert_eq!(both.version_info, first.version_info);
    assert_eq!(retries(&running), 1);
    assert_eq!(fetch_timeout(&both.resources[1]), (30, 1), "the re-send");
    ads.request(None, &[AUTHZ, RATELIMIT], &both.version_info, &both.nonce)
        .await;
    ads.quiet("all ACKed").await;
    for resource in [AUTHZ, RATELIMIT] {
        let resource = status(&running, "orders-1", resource);
        assert_eq!(resource["ackedVersion"], resource["pushedVersion"]);
        assert!(resource["nack"].is_null() && resource["fetching"].is_null());
    }
    // The next response carries the rate-limit bytes the proxy has (the re-send's): other
    // bytes would make Envoy create the filter again.
    std::fs::write(dir.path().join("auth.yaml"), AUTH_POLICY).unwrap();
    let next = ads.recv().await;
    assert_eq!(names(&next), [AUTHZ, RATELIMIT]);
    assert_ne!(next.resources[0], both.resources[0], "the authz change");
    assert_eq!(next.resources[1], both.resources[1]);
    running.stop().await;
}

const AUTH_POLICY: &str = r#"apiVersion: meshward.io/v1alpha1
kind: AuthPolicy
metadata: {name: orders-auth, namespace: shop}
spec:
  config:
    providers: []
    rules: [{name: open, action: allow, require: anonymous}]
"#;

/// Local modules: the first response carries every resource and Envoy names the plugin
/// it could not create. That version is rejected for good and the others go out. (Sent
/// again as it was, Envoy would ACK it without applying it: it keeps the hash of a
/// configuration it failed to create.)
#[tokio::test]
async fn sotw_the_plugin_named_in_a_rejected_first_response_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), 5);
    let running = server(dir.path(), None).await;
    let mut ads = Sotw::open(running.xds_addr).await;
    ads.request(Some(orders("orders-1")), &[AUTHZ, RATELIMIT], "", "")
        .await;
    let first = ads.recv().await;
    assert_eq!(names(&first), [AUTHZ, RATELIMIT]);
    ads.answer(
        None,
        &[AUTHZ, RATELIMIT],
        "",
        &first.nonce,
        nack(CACHE_MISS),
    )
    .await;
    let authz = ads.recv().await;
    assert_eq!(names(&authz), [AUTHZ]);
    ads.request(None, &[AUTHZ, RATELIMIT], &authz.version_info, &authz.nonce)
        .await;
    ads.quiet("the rejected rate-limit version").await;
    let resource = status(&running, "orders-1", RATELIMIT);
    assert_eq!(resource["nack"]["message"], CACHE_MISS, "{resource}");
    assert!(status(&running, "orders-1", AUTHZ)["nack"].is_null());
    // A new version of it goes out.
    write_policy(dir.path(), 6);
    let next = ads.recv().await;
    assert_eq!(names(&next), [AUTHZ, RATELIMIT]);
    assert_eq!(limit(&decode(&next.resources[1]).3), 6);
    running.stop().await;
}
