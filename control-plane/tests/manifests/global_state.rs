//! The global-state overlay (istio-manifests/overlays/global-state/, docs/adr/0009): the
//! base plus one Valkey, the control plane with `--redis-url` serving the rate-limit
//! service and the idempotency store, and a bootstrap override with the two clusters the
//! filters' global modes call. Every piece agrees with the others, with the base and with
//! the filters' defaults; the override passes `envoy --mode validate` with the mesh
//! patches; the binary, started with the overlay's flags, serves both services.

use std::process::{Command, Stdio};

use meshward_control_plane::policy::model::Kind;
use serde_json::Value;

use crate::mesh::{chains, cluster_named, endpoint, flag, mesh, sidecar_bootstrap};
use crate::objects::rendered;
use crate::sidecar::local_args;
use crate::support::{envoy_binary, free_port, one, root, str_at, validate, wasm_module, Process};

pub const OVERLAY: &str = "istio-manifests/overlays/global-state";
/// Its per-namespace bootstrap override (applied with `-n <namespace>`).
pub const OVERRIDE: &str = "istio-manifests/overlays/global-state/app-namespace";

const BINARY: &str = env!("CARGO_BIN_EXE_meshward-control-plane");
const HTTP2: &str = "/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/explicit_http_config/http2_protocol_options";

/// What the overlay says, cross-checked.
pub struct GlobalState {
    /// The override's static clusters (the base override's, then the two new ones).
    pub clusters: Vec<Value>,
    pub stats_config: Value,
    /// The control plane container's args.
    pub args: Vec<String>,
}

/// A `pub const NAME: &str = "value";` of a filter's source: the default cluster names
/// live in the filters (wasm crates this test cannot link).
fn filter_const(file: &str, name: &str) -> String {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let prefix = format!("pub const {name}: &str = \"");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{file}: no {name}"));
    line.split('"').next().unwrap().to_owned()
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn custom_bootstrap(objects: &[Value]) -> Value {
    let config_map = one(objects, "ConfigMap", "meshward-bootstrap");
    serde_json::from_str(str_at(config_map, "/data/custom_bootstrap.json"))
        .unwrap_or_else(|e| panic!("custom_bootstrap.json is not JSON: {e}"))
}

/// Bytes of a Kubernetes quantity (`Mi`, `Gi`) or a Valkey size (`mb`, `gb`: powers of
/// 1024 in Valkey), the forms the overlay uses.
fn bytes(quantity: &str) -> u64 {
    let lower = quantity.to_ascii_lowercase();
    let (number, unit) = lower.split_at(lower.find(|c: char| !c.is_ascii_digit()).unwrap());
    let unit = match unit {
        "mi" | "mb" => 1 << 20,
        "gi" | "gb" => 1 << 30,
        other => panic!("{quantity}: unit {other:?} not handled here"),
    };
    number.parse::<u64>().unwrap() * unit
}

pub fn global_state() -> GlobalState {
    let base = rendered("istio-manifests");
    let overlay = rendered(OVERLAY);
    let id = |o: &Value| {
        format!(
            "{} {}/{}",
            o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
        )
    };

    // The base, unchanged but for the control plane's args, plus Valkey's Deployment and
    // Service (the four EnvoyFilters included: chains() checks them below).
    assert_eq!(overlay.len(), base.len() + 2, "base + Valkey's two objects");
    let base_deployment = one(&base, "Deployment", "meshward-control-plane");
    let deployment = one(&overlay, "Deployment", "meshward-control-plane");
    for object in &base {
        let ours = overlay
            .iter()
            .find(|o| id(o) == id(object))
            .unwrap_or_else(|| panic!("{} missing from the overlay", id(object)));
        if std::ptr::eq(object, base_deployment) {
            let mut without_args = ours.clone();
            without_args["spec"]["template"]["spec"]["containers"][0]["args"] =
                object["spec"]["template"]["spec"]["containers"][0]["args"].clone();
            assert_eq!(
                &without_args,
                object,
                "only the args of {} change",
                id(object)
            );
        } else {
            assert_eq!(ours, object, "{} differs from the base", id(object));
        }
    }
    chains(&overlay);

    // The control plane's new flags: exactly the Redis URL and the two listen addresses
    // (parsed by control-plane/src/main.rs: every replica serves both services), on the
    // container ports the Service targets.
    let base_args = args_of(base_deployment);
    let args = args_of(deployment);
    assert_eq!(args[..base_args.len()], base_args[..], "flags are appended");
    let added: Vec<&str> = args[base_args.len()..]
        .iter()
        .step_by(2)
        .map(String::as_str)
        .collect();
    assert_eq!(added, ["--redis-url", "--rls-addr", "--store-addr"]);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let container_port = |name: &str| -> u64 {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        flag(&args, "--rls-addr"),
        Some(format!("0.0.0.0:{}", container_port("grpc-rls")).as_str())
    );
    assert_eq!(
        flag(&args, "--store-addr"),
        Some(format!("0.0.0.0:{}", container_port("grpc-store")).as_str())
    );

    // Valkey: where --redis-url points, one instance, soft state, bounded memory.
    let valkey = one(&overlay, "Deployment", "meshward-valkey");
    let valkey_service = one(&overlay, "Service", "meshward-valkey");
    let namespace = str_at(deployment, "/metadata/namespace");
    assert_eq!(str_at(valkey, "/metadata/namespace"), namespace);
    assert_eq!(str_at(valkey_service, "/metadata/namespace"), namespace);
    let pod = &valkey["spec"]["template"];
    for (key, value) in valkey_service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod["metadata"]["labels"][key], value,
            "the Service selects Valkey"
        );
    }
    for (key, value) in valkey["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod["metadata"]["labels"][key], value);
    }
    let service_port = &valkey_service["spec"]["ports"][0];
    let server = &pod["spec"]["containers"][0];
    assert!(
        server["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == service_port["targetPort"]),
        "the Service targets Valkey's container port"
    );
    assert_eq!(
        flag(&args, "--redis-url"),
        Some(
            format!(
                "redis://{}.{namespace}.svc.cluster.local:{}",
                str_at(valkey_service, "/metadata/name"),
                service_port["port"]
            )
            .as_str()
        )
    );
    assert_eq!(str_at(server, "/image"), "valkey/valkey:8");
    // Never two instances: they would split counters and idempotency records.
    assert_eq!(valkey["spec"]["replicas"], 1);
    assert_eq!(valkey["spec"]["strategy"]["type"], "Recreate");
    let valkey_args: Vec<String> = args_of(valkey);
    assert_eq!(flag(&valkey_args, "--save"), Some(""), "no RDB snapshots");
    assert_eq!(flag(&valkey_args, "--appendonly"), Some("no"), "no AOF");
    assert_eq!(flag(&valkey_args, "--maxmemory-policy"), Some("noeviction"));
    let maxmemory = bytes(flag(&valkey_args, "--maxmemory").expect("--maxmemory"));
    let limit = bytes(str_at(server, "/resources/limits/memory"));
    assert!(
        maxmemory < limit,
        "--maxmemory ({maxmemory}) must stay under the memory limit ({limit}): a full Valkey refuses writes rather than being killed"
    );
    for resource in ["/resources/requests/cpu", "/resources/requests/memory"] {
        assert!(server.pointer(resource).is_some(), "Valkey {resource}");
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(server[probe].is_object(), "Valkey {probe}");
    }
    // Non-root (numeric, or the kubelet cannot check it), a read-only root file system,
    // and the writable working directory the image's entrypoint requires.
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert!(security["runAsUser"].as_u64().is_some_and(|u| u != 0));
    assert_eq!(server["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(server["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(
        server["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/data"),
        "a volume at /data, the image's working directory"
    );

    // The override: the base's, plus meshward-rls and meshward-store (the filters'
    // default clusters), HTTP/2 to the control plane's Service ports grpc-rls and
    // grpc-store.
    let base_override = custom_bootstrap(&rendered("istio-manifests/app-namespace"));
    let override_objects = rendered(OVERRIDE);
    assert_eq!(override_objects.len(), 1);
    let ours = custom_bootstrap(&override_objects);
    let mut without_new = ours.clone();
    let clusters = ours["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .clone();
    let base_clusters = base_override["static_resources"]["clusters"]
        .as_array()
        .unwrap();
    assert_eq!(clusters.len(), base_clusters.len() + 2);
    without_new["static_resources"]["clusters"] =
        Value::from(clusters[..base_clusters.len()].to_vec());
    assert_eq!(
        without_new, base_override,
        "the base override, only extended"
    );
    let service = one(&overlay, "Service", "meshward-control-plane");
    let host = format!(
        "{}.{namespace}.svc.cluster.local",
        str_at(service, "/metadata/name")
    );
    let service_port = |name: &str| -> u64 {
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("Service port {name}"));
        assert_eq!(port["targetPort"], name);
        port["port"].as_u64().unwrap()
    };
    for (name, port) in [
        (
            filter_const("filters/ratelimit/src/config.rs", "DEFAULT_RLS_CLUSTER"),
            "grpc-rls",
        ),
        (
            filter_const("filters/idempotency/src/config.rs", "DEFAULT_STORE_CLUSTER"),
            "grpc-store",
        ),
    ] {
        let cluster = cluster_named(&clusters[base_clusters.len()..], &name);
        assert_eq!(cluster["load_assignment"]["cluster_name"], name.as_str());
        assert!(
            cluster.pointer(HTTP2).is_some(),
            "gRPC needs HTTP/2 on {name}"
        );
        assert_eq!(
            endpoint(cluster),
            (host.clone(), service_port(port)),
            "{name}"
        );
    }

    GlobalState {
        clusters,
        stats_config: ours["stats_config"].clone(),
        args,
    }
}

#[test]
fn the_global_state_overlay_is_the_base_plus_valkey_and_the_services() {
    global_state();
}

/// The override with the new clusters, with the overlay's EnvoyFilter patches (inbound and
/// outbound) in a sidecar-shaped bootstrap: accepted by the real Envoy, and a typo in a
/// new cluster is not.
#[test]
fn its_bootstrap_override_passes_envoy_validation_with_the_mesh_patches() {
    let envoy = envoy_binary();
    let state = global_state();
    let mut sidecar = mesh();
    sidecar.clusters = state.clusters;
    sidecar.stats_config = state.stats_config;
    let (inbound, outbound) = chains(&rendered(OVERLAY));
    assert_eq!((inbound.len(), outbound.len()), (4, 1));
    let bootstrap = sidecar_bootstrap(&sidecar, inbound, outbound);
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = validate(&envoy, dir.path(), "global-state.json", &bootstrap);
    assert!(
        ok,
        "Envoy refused the global-state override with the EnvoyFilters:\n{log}"
    );

    let mut broken = bootstrap.clone();
    let clusters = broken["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap();
    let store = clusters
        .iter_mut()
        .find(|c| c["name"] == "meshward-store")
        .unwrap()
        .as_object_mut()
        .unwrap();
    let assignment = store.remove("load_assignment").unwrap();
    store.insert("load_asignment".into(), assignment);
    let (ok, log) = validate(&envoy, dir.path(), "typo.json", &broken);
    assert!(
        !ok && log.contains("load_asignment"),
        "a typo in meshward-store was accepted:\n{log}"
    );
}

/// The control plane started with the overlay's flags (addresses local, the API server
/// replaced by a policy folder, the Redis URL by a port where nothing listens) serves the
/// rate-limit service and the store: Redis need not be up at start.
#[test]
fn with_the_overlays_flags_the_control_plane_serves_the_rls_and_the_store() {
    let state = global_state();
    wasm_module(Kind::RateLimit.module());
    let dir = tempfile::tempdir().unwrap();
    let mut args = local_args(
        &state.args,
        dir.path(),
        0,
        0,
        &root().join("target/meshward-wasm"),
    );
    let redis = format!("redis://127.0.0.1:{}", free_port());
    for (name, value) in [
        ("--redis-url", redis.as_str()),
        ("--rls-addr", "127.0.0.1:0"),
        ("--store-addr", "127.0.0.1:0"),
    ] {
        let at = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("{name} not in {args:?}"));
        args[at + 1] = value.to_owned();
    }
    let mut control = Process::spawn(
        Command::new(BINARY).args(&args).stdout(Stdio::piped()),
        dir.path().join("control-plane.log"),
    )
    .wait_listening();
    for service in ["rls", "store"] {
        let line = control.next_line();
        let address = line
            .strip_prefix(&format!("{service} "))
            .unwrap_or_else(|| panic!("no {service} address: {line:?}\n{}", control.log()));
        let address: std::net::SocketAddr = address.parse().unwrap();
        std::net::TcpStream::connect(address)
            .unwrap_or_else(|e| panic!("{service} at {address}: {e}\n{}", control.log()));
    }
}
