//! The Kubernetes controller against kube-rs's mock API server pattern (a tower-test
//! service pair): each test answers the requests the controller makes and asserts
//! every one of them — method, path and query, and the status patch body with its
//! conditions and observedGeneration — and that nothing else is sent.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;

use meshward_control_plane::kubernetes::controller::{start, KubernetesOptions};
use meshward_control_plane::kubernetes::crds::{
    AuthPolicy, IdempotencyPolicy, PolicyStatus, RateLimitPolicy, RuntimeTuning, TracePolicy,
};
use meshward_control_plane::kubernetes::lease::{try_hold, LeaseConfig};
use meshward_control_plane::kubernetes::reconcile::{reconcile, Context};
use meshward_control_plane::kubernetes::resource::Stores;
use meshward_control_plane::policy::model::Workload;
use meshward_control_plane::xds::resources::ModuleSource;
use meshward_control_plane::xds::world::{NodeInfo, World};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NOW: &str = "2026-11-21T10:00:00Z";

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// The next request: (method, path?query, JSON body or Null), answered with `status` and
/// `reply`.
async fn answer(handle: &mut Handle, status: StatusCode, reply: Value) -> (String, String, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the controller sent no request within 5 s")
        .expect("the client was dropped");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    (method, uri, body)
}

async fn assert_quiet(handle: &mut Handle) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

fn stores(rate_limits: Vec<RateLimitPolicy>) -> Stores {
    let mut rate_limit: Writer<RateLimitPolicy> = Writer::default();
    for object in rate_limits {
        rate_limit.apply_watcher_event(&Event::Apply(object));
    }
    Stores {
        rate_limit: rate_limit.as_reader(),
        auth: Writer::<AuthPolicy>::default().as_reader(),
        idempotency: Writer::<IdempotencyPolicy>::default().as_reader(),
        trace: Writer::<TracePolicy>::default().as_reader(),
        tuning: Writer::<RuntimeTuning>::default().as_reader(),
    }
}

fn policy(scope: &str, generation: i64) -> RateLimitPolicy {
    serde_json::from_value(json!({
        "apiVersion": "meshward.io/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "orders-limit", "namespace": "shop", "generation": generation, "uid": "u1"},
        "spec": {
            "selector": {"matchLabels": {"app": "orders"}},
            "scope": scope,
            "config": {"rules": [{"name": "all", "limit": {"algorithm": "tokenBucket", "requests": 10, "per": "1s"}}]}
        }
    }))
    .unwrap()
}

fn context(
    client: Client,
    world: Arc<World>,
    objects: Vec<RateLimitPolicy>,
    leader: bool,
) -> Arc<Context> {
    let mut ctx = Context::new(
        client,
        world,
        stores(objects),
        Arc::new(AtomicBool::new(leader)),
    );
    ctx.now = || NOW.to_owned();
    Arc::new(ctx)
}

fn world() -> Arc<World> {
    World::new(ModuleSource::Local {
        dir: "/etc/meshward/wasm".into(),
    })
}

fn orders_proxy(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        workload: Workload {
            namespace: "shop".into(),
            name: "orders".into(),
            labels: BTreeMap::from([("app".to_string(), "orders".to_string())]),
        },
    }
}

const STATUS_PATCH: &str = "/apis/meshward.io/v1alpha1/namespaces/shop/ratelimitpolicies/orders-limit/status?&fieldManager=meshward-control-plane";

fn condition(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": NOW
    })
}

#[tokio::test]
async fn an_invalid_spec_is_accepted_false_with_the_reason() {
    let (client, mut api) = mock();
    let object = policy("everywhere", 2);
    let ctx = context(client, world(), vec![object.clone()], true);
    let run = tokio::spawn(reconcile(Arc::new(object), ctx.clone()));
    let (method, uri, body) = answer(
        &mut api,
        StatusCode::OK,
        serde_json::to_value(policy("everywhere", 2)).unwrap(),
    )
    .await;
    assert_eq!((method.as_str(), uri.as_str()), ("PATCH", STATUS_PATCH));
    assert_eq!(
        body,
        json!({"status": {
            "observedGeneration": 2,
            "conditions": [
                condition("Accepted", "False", "Invalid", "RateLimitPolicy/shop/orders-limit: spec.scope: expected perReplica, workload or global, got \"everywhere\"", 2),
                condition("Programmed", "False", "Invalid", "not pushed: the policy is not accepted", 2),
            ]
        }})
    );
    run.await.unwrap().unwrap();
    assert_quiet(&mut api).await;
    assert!(
        ctx.world.policies().is_empty(),
        "an invalid resource is not in force"
    );
    assert_eq!(ctx.world.policy_errors().len(), 1);
}

#[tokio::test]
async fn a_nack_is_programmed_false_with_envoys_message_and_an_ack_is_true() {
    let (client, mut api) = mock();
    let world = world();
    let object = policy("perReplica", 3);
    let ctx = context(client, world.clone(), vec![object.clone()], true);
    ctx.sync();
    let node = orders_proxy("orders-1");
    world.connect(&node);
    let current = world.resource("meshward.ratelimit", &node).unwrap();
    let pushed = [("meshward.ratelimit".to_string(), current.version.clone())];
    world.on_push(&node, &pushed);
    world.on_nack(&node, &pushed, "Failed to load Wasm filter: rules[0]: bad");

    let run = tokio::spawn(reconcile(Arc::new(object.clone()), ctx.clone()));
    let (method, uri, body) = answer(
        &mut api,
        StatusCode::OK,
        serde_json::to_value(&object).unwrap(),
    )
    .await;
    assert_eq!((method.as_str(), uri.as_str()), ("PATCH", STATUS_PATCH));
    assert_eq!(
        body["status"]["conditions"][1],
        condition("Programmed", "False", "Rejected", "1/1 rejected the current version (orders-1: Failed to load Wasm filter: rules[0]: bad)", 3)
    );
    assert_eq!(body["status"]["conditions"][0]["status"], "True");
    run.await.unwrap().unwrap();

    // The proxy ACKs the same version later: Programmed=True, Accepted keeps its time.
    world.on_ack(&node, &pushed, None);
    let mut with_status = object.clone();
    with_status.status =
        Some(serde_json::from_value::<PolicyStatus>(body["status"].clone()).unwrap());
    let run = tokio::spawn(reconcile(Arc::new(with_status.clone()), ctx.clone()));
    let (_, _, body) = answer(
        &mut api,
        StatusCode::OK,
        serde_json::to_value(&with_status).unwrap(),
    )
    .await;
    assert_eq!(
        body["status"]["conditions"][1],
        condition(
            "Programmed",
            "True",
            "Programmed",
            "1/1 proxy ACKed the current version",
            3
        )
    );
    run.await.unwrap().unwrap();

    // Reconciling a resource whose status already says so writes nothing.
    let mut settled = object.clone();
    settled.status = Some(serde_json::from_value::<PolicyStatus>(body["status"].clone()).unwrap());
    reconcile(Arc::new(settled), ctx.clone()).await.unwrap();
    assert_quiet(&mut api).await;
}

#[tokio::test]
async fn only_the_lease_holder_writes_status_but_every_replica_serves_the_policy() {
    let (client, mut api) = mock();
    let object = policy("workload", 1);
    let ctx = context(client, world(), vec![object.clone()], false);
    reconcile(Arc::new(object), ctx.clone()).await.unwrap();
    assert_quiet(&mut api).await;
    let policies = ctx.world.policies();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].source, "RateLimitPolicy/shop/orders-limit");
}

#[tokio::test]
async fn a_deleted_resource_leaves_the_policies_on_the_next_sync() {
    let (client, _api) = mock();
    let world = world();
    let ctx = context(
        client.clone(),
        world.clone(),
        vec![policy("perReplica", 1)],
        false,
    );
    ctx.sync();
    assert_eq!(world.policies().len(), 1);
    let emptied = context(client, world.clone(), vec![], false);
    emptied.sync();
    assert!(world.policies().is_empty());
}

fn lease_config() -> LeaseConfig {
    LeaseConfig {
        namespace: "meshward-system".into(),
        identity: "cp-0".into(),
        duration: Duration::from_secs(15),
    }
}

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/meshward-system/leases/meshward-control-plane-status";

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404})
}

fn lease(holder: &str, renew: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "meshward-control-plane-status", "namespace": "meshward-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": renew, "renewTime": renew, "leaseTransitions": transitions}
    })
}

#[tokio::test]
async fn the_lease_is_created_when_missing_respected_while_fresh_and_taken_when_expired() {
    let now: k8s_openapi::jiff::Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
    let (client, mut api) = mock();

    let attempt = tokio::spawn({
        let client = client.clone();
        async move { try_hold(&client, &lease_config(), now).await.unwrap() }
    });
    let (method, uri, _) = answer(&mut api, StatusCode::NOT_FOUND, not_found()).await;
    assert_eq!((method.as_str(), uri.as_str()), ("GET", LEASE));
    let (method, uri, body) = answer(
        &mut api,
        StatusCode::CREATED,
        lease("cp-0", "2026-11-21T10:00:00.000000Z", 0),
    )
    .await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        (
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/meshward-system/leases?"
        )
    );
    assert_eq!(body["spec"]["holderIdentity"], "cp-0");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    assert!(attempt.await.unwrap(), "created: held");

    // Held by another replica, renewed 5 s ago: no write, not ours.
    let attempt = tokio::spawn({
        let client = client.clone();
        async move { try_hold(&client, &lease_config(), now).await.unwrap() }
    });
    answer(
        &mut api,
        StatusCode::OK,
        lease("cp-1", "2026-11-21T09:59:55.000000Z", 3),
    )
    .await;
    assert!(!attempt.await.unwrap());
    assert_quiet(&mut api).await;

    // Renewed 20 s ago with 15 s duration: expired, taken over with the resourceVersion read.
    let attempt = tokio::spawn({
        let client = client.clone();
        async move { try_hold(&client, &lease_config(), now).await.unwrap() }
    });
    answer(
        &mut api,
        StatusCode::OK,
        lease("cp-1", "2026-11-21T09:59:40.000000Z", 3),
    )
    .await;
    let (method, uri, body) = answer(
        &mut api,
        StatusCode::OK,
        lease("cp-0", "2026-11-21T10:00:00.000000Z", 4),
    )
    .await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("PUT", format!("{LEASE}?").as_str())
    );
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    assert_eq!(body["spec"]["holderIdentity"], "cp-0");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    assert!(attempt.await.unwrap());

    // Another replica won the race: 409 Conflict means not ours, no error.
    let attempt = tokio::spawn({
        let client = client.clone();
        async move { try_hold(&client, &lease_config(), now).await.unwrap() }
    });
    answer(
        &mut api,
        StatusCode::OK,
        lease("cp-1", "2026-11-21T09:59:40.000000Z", 3),
    )
    .await;
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "conflict", "reason": "Conflict", "code": 409});
    answer(&mut api, StatusCode::CONFLICT, conflict).await;
    assert!(!attempt.await.unwrap());
}

fn list(api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_lists_and_watches_every_resource_type_and_takes_the_lease() {
    let (client, mut api) = mock();
    let world = world();
    let (_stop, shutdown) = watch::channel(false);
    let options = KubernetesOptions {
        namespace: "meshward-system".into(),
        identity: "cp-0".into(),
        lease_duration: Duration::from_secs(30),
        sync_timeout: Duration::from_secs(10),
        peer_selector: Default::default(),
        peer_http_port: 18001,
    };
    let started = tokio::spawn(start(client, world, options, shutdown));
    let mut seen = Vec::new();
    // Watches are held open (their responders kept) so nothing re-lists.
    let mut open_watches = Vec::new();
    while seen.len() < 14 {
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), api.next_request())
            .await
            .expect("expected more requests")
            .unwrap();
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let path = request.uri().path().to_owned();
        seen.push(format!("{method} {uri}"));
        if uri.contains("watch=true") {
            open_watches.push(send);
            continue;
        }
        let (status, reply) = match path.as_str() {
            LEASE => (StatusCode::NOT_FOUND, not_found()),
            "/apis/coordination.k8s.io/v1/namespaces/meshward-system/leases" => (
                StatusCode::CREATED,
                lease("cp-0", "2026-11-21T10:00:00.000000Z", 0),
            ),
            "/api/v1/pods" => (StatusCode::OK, list("v1", "PodList")),
            other => {
                let kind = match other.rsplit('/').next().unwrap() {
                    "ratelimitpolicies" => "RateLimitPolicyList",
                    "authpolicies" => "AuthPolicyList",
                    "idempotencypolicies" => "IdempotencyPolicyList",
                    "tracepolicies" => "TracePolicyList",
                    "runtimetunings" => "RuntimeTuningList",
                    unknown => panic!("unexpected request {method} {uri} ({unknown})"),
                };
                (StatusCode::OK, list("meshward.io/v1alpha1", kind))
            }
        };
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    }
    let tasks = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("start returns once every type is listed")
        .unwrap()
        .unwrap();
    seen.sort();
    let mut expected = vec![
        format!("GET {LEASE}"),
        "POST /apis/coordination.k8s.io/v1/namespaces/meshward-system/leases?".to_owned(),
        "GET /api/v1/pods?&limit=500".to_owned(),
        "GET /api/v1/pods?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=1".to_owned(),
    ];
    for plural in [
        "ratelimitpolicies",
        "authpolicies",
        "idempotencypolicies",
        "tracepolicies",
        "runtimetunings",
    ] {
        expected.push(format!(
            "GET /apis/meshward.io/v1alpha1/{plural}?&limit=500"
        ));
        expected.push(format!(
            "GET /apis/meshward.io/v1alpha1/{plural}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=1"
        ));
    }
    expected.sort();
    assert_eq!(seen, expected);
    assert_quiet(&mut api).await;
    for task in tasks {
        task.abort();
    }
}

/// The status writer adds what its peers serve: a peer replica (a real control plane on
/// 127.0.0.1, the same policy from a file) answers `GET /delivery`; one proxy ACKed on
/// each replica → 2/2; a replica that does not answer makes `Programmed` Unknown.
#[tokio::test]
async fn programmed_adds_the_peer_replicas_proxies() {
    use meshward_control_plane::kubernetes::peers::{fetch_view, PeerViews};
    use meshward_control_plane::kubernetes::reconcile::facts;
    use meshward_control_plane::kubernetes::status::{status, Facts};
    use meshward_control_plane::server::{start, ModuleMode, Options};

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"
apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders-limit, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  scope: perReplica
  config: {rules: [{name: all, limit: {algorithm: tokenBucket, requests: 10, per: 1s}}]}
"#,
    )
    .unwrap();
    let peer = start(Options {
        policy_dir: dir.path().to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        wasm_dir: None,
        modules: ModuleMode::Local {
            dir: "/etc/meshward/wasm".into(),
        },
        poll_interval: Duration::from_millis(50),
    })
    .await
    .unwrap();
    let on_peer = orders_proxy("orders-2");
    peer.world.connect(&on_peer);
    let version = peer
        .world
        .resource("meshward.ratelimit", &on_peer)
        .unwrap()
        .version;
    let pushed = [("meshward.ratelimit".to_string(), version)];
    peer.world.on_push(&on_peer, &pushed);
    peer.world.on_ack(&on_peer, &pushed, None);

    let view = fetch_view(&peer.http_addr.to_string()).await.unwrap();
    let seen = &view.filters["RateLimitPolicy/shop/orders-limit"];
    assert_eq!((seen.selected, seen.acked), (1, 1));

    let (client, _api) = mock();
    let world = world();
    let object = policy("perReplica", 1);
    let ctx = context(client, world.clone(), vec![object.clone()], true);
    ctx.sync();
    let local = orders_proxy("orders-1");
    world.connect(&local);
    let version = world
        .resource("meshward.ratelimit", &local)
        .unwrap()
        .version;
    let pushed = [("meshward.ratelimit".to_string(), version)];
    world.on_push(&local, &pushed);
    world.on_ack(&local, &pushed, None);

    let answered = PeerViews {
        views: vec![view.clone()],
        unanswered: vec![],
    };
    let Facts::Filter(total) = facts(&object, &world, &answered) else {
        panic!("a filter policy")
    };
    assert_eq!((total.selected, total.acked), (2, 2));

    // A replica that is gone: the fetch fails fast and it is named, not ignored.
    peer.stop().await;
    let err = fetch_view(&view_address_of_stopped_peer())
        .await
        .unwrap_err();
    assert!(err.contains("connect"), "{err}");
    let partial = PeerViews {
        views: vec![],
        unanswered: vec!["cp-1".into()],
    };
    let written = status(&facts(&object, &world, &partial), Some(1), None, NOW);
    let programmed = &written.conditions[1];
    assert_eq!(
        (programmed.status.as_str(), programmed.message.as_str()),
        (
            "Unknown",
            "1/1 proxy ACKed the current version; not counted: no answer from control-plane replica cp-1"
        )
    );
}

/// An address nothing listens on (bound, then closed).
fn view_address_of_stopped_peer() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}
