//! The mesh wiring as the kind overlay renders it (what e2e/kind/run.sh applies): the
//! four EnvoyFilters, the bootstrap override, the control plane's Deployment, Service and
//! PodDisruptionBudget, the sample app and the image — every piece that must agree with
//! another does. And the Envoy configuration inside every EnvoyFilter patch, of every
//! rendering, is accepted by the real Envoy (`--mode validate`): a typo fails here.

use meshward_control_plane::policy::model::Kind;
use serde_json::{json, Value};

use crate::objects::rendered;
use crate::support::{
    documents, envoy_binary, listener_named, one, root, router, sidecar_node_with, str_at,
    validate, HCM, ROUTER, WASM_FILTER,
};

pub const LUA_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua";

/// The four filters in DESIGN order (trace-inject → authz → ratelimit → idempotency).
pub const CHAIN: [Kind; 4] = [Kind::Trace, Kind::Authz, Kind::RateLimit, Kind::Idempotency];

/// What the manifests say, cross-checked, for the Envoy tests.
pub struct Mesh {
    /// The HTTP filters the EnvoyFilters insert into inbound chains, in chain order.
    pub inbound: Vec<Value>,
    /// ... and into outbound chains.
    pub outbound: Vec<Value>,
    /// The bootstrap override's static clusters.
    pub clusters: Vec<Value>,
    /// The bootstrap override's stats_config.
    pub stats_config: Value,
    /// The echo pod's labels (the node metadata Istio would send).
    pub labels: Value,
    /// The control plane container's args.
    pub args: Vec<String>,
}

pub fn cluster_named<'c>(clusters: &'c [Value], name: &str) -> &'c Value {
    clusters
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the bootstrap override has no cluster {name}"))
}

pub fn endpoint(cluster: &Value) -> (String, u64) {
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    (
        str_at(address, "/address").to_owned(),
        address["port_value"].as_u64().unwrap_or_default(),
    )
}

pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The EnvoyFilters of a rendering, sorted by priority (Istio applies lower first, and
/// each inserts right before the router: the chain ends up in this order).
pub fn envoy_filters(objects: &[Value]) -> Vec<&Value> {
    let mut filters: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "EnvoyFilter")
        .collect();
    filters.sort_by_key(|f| f["spec"]["priority"].as_i64().unwrap_or(0));
    filters
}

/// Checks one EnvoyFilter; returns its (context, HTTP filter) patches.
fn check_envoy_filter(filter: &Value, kind: Kind) -> Vec<(String, Value)> {
    let at = format!("EnvoyFilter {}", filter["metadata"]["name"]);
    assert_eq!(
        filter["metadata"]["namespace"], "istio-system",
        "{at}: root namespace"
    );
    let mode = str_at(filter, "/metadata/annotations/meshward.io~1failure-mode");
    let mut out = Vec::new();
    for patch in filter["spec"]["configPatches"].as_array().unwrap() {
        assert_eq!(patch["applyTo"], "HTTP_FILTER", "{at}");
        assert_eq!(
            patch["match"]["listener"]["filterChain"]["filter"]["name"], HCM,
            "{at}"
        );
        assert_eq!(
            patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"], ROUTER,
            "{at}"
        );
        assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE", "{at}");
        let value = patch["patch"]["value"].clone();
        assert_eq!(
            value["name"],
            kind.resource_name(),
            "{at}: the ECDS resource name"
        );
        let discovery = &value["config_discovery"];
        // Without warming, a module Envoy must download would never be loaded (see the
        // manifest's comment): the listener must wait for the first configuration.
        assert_ne!(
            discovery["apply_default_config_without_warming"], true,
            "{at}"
        );
        assert_eq!(
            discovery["config_source"]["api_config_source"]["api_type"],
            "GRPC"
        );
        let default = &discovery["default_config"];
        match mode {
            "open" => {
                assert_eq!(discovery["type_urls"], json!([WASM_FILTER]), "{at}");
                assert_eq!(
                    default["config"]["vm_config"]["code"]["local"]["inline_bytes"],
                    crate::sidecar::base64(&crate::sidecar::pass_through_module()),
                    "{at}: fail-open runs the pass-through module documented in the manifest"
                );
            }
            "closed" => {
                assert_eq!(
                    discovery["type_urls"],
                    json!([WASM_FILTER, LUA_FILTER]),
                    "{at}"
                );
                assert_eq!(default["@type"], LUA_FILTER, "{at}");
                let code = str_at(default, "/default_source_code/inline_string");
                assert!(
                    code.contains("\"503\"") && code.contains("problem+json"),
                    "{at}"
                );
            }
            other => panic!("{at}: meshward.io/failure-mode {other:?}: open or closed"),
        }
        out.push((str_at(patch, "/match/context").to_owned(), value));
    }
    // trace-inject is a participant at every hop; the others guard the workload.
    let contexts: Vec<&str> = out.iter().map(|(c, _)| c.as_str()).collect();
    let expected: &[&str] = if kind == Kind::Trace {
        &["SIDECAR_INBOUND", "SIDECAR_OUTBOUND"]
    } else {
        &["SIDECAR_INBOUND"]
    };
    assert_eq!(contexts, expected, "{at}");
    out
}

/// The HTTP filters of a rendering's EnvoyFilters: (inbound, outbound), in chain order.
pub fn chains(objects: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let filters = envoy_filters(objects);
    let names: Vec<String> = filters
        .iter()
        .map(|f| str_at(f, "/metadata/name").to_owned())
        .collect();
    let expected: Vec<String> = CHAIN
        .iter()
        .map(|k| {
            format!(
                "meshward-{}",
                k.resource_name().trim_start_matches("meshward.")
            )
        })
        .collect();
    assert_eq!(
        names, expected,
        "EnvoyFilters in priority order = DESIGN order"
    );
    let selector = &filters[0]["spec"]["workloadSelector"];
    let (mut inbound, mut outbound) = (Vec::new(), Vec::new());
    for (filter, kind) in filters.iter().zip(CHAIN) {
        assert_eq!(
            &filter["spec"]["workloadSelector"], selector,
            "one opt-in label"
        );
        for (context, value) in check_envoy_filter(filter, kind) {
            if context == "SIDECAR_INBOUND" {
                inbound.push(value);
            } else {
                outbound.push(value);
            }
        }
    }
    (inbound, outbound)
}

/// The overlay e2e/kind/run.sh applies, cross-checked with the sample app and the image.
pub fn mesh() -> Mesh {
    let objects = rendered("istio-manifests/overlays/kind");
    let app: Vec<Value> = documents(&root().join("e2e/kind/sample-app.yaml"));
    let (inbound, outbound) = chains(&objects);
    let filters = envoy_filters(&objects);

    // The bootstrap override, in the sample app's namespace, holds the config source.
    let echo = one(&app, "Deployment", "echo");
    let namespace = str_at(echo, "/metadata/namespace");
    let bootstrap = one(&objects, "ConfigMap", "meshward-bootstrap");
    assert_eq!(str_at(bootstrap, "/metadata/namespace"), namespace);
    let json_text = str_at(bootstrap, "/data/custom_bootstrap.json");
    let override_: Value = serde_json::from_str(json_text)
        .unwrap_or_else(|e| panic!("custom_bootstrap.json is not JSON: {e}"));
    let clusters = override_["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .clone();
    let xds_cluster = str_at(
        &inbound[0],
        "/config_discovery/config_source/api_config_source/grpc_services/0/envoy_grpc/cluster_name",
    );
    for filter in inbound.iter().chain(&outbound) {
        assert_eq!(
            str_at(filter, "/config_discovery/config_source/api_config_source/grpc_services/0/envoy_grpc/cluster_name"),
            xds_cluster
        );
    }
    let xds = cluster_named(&clusters, xds_cluster);
    assert!(
        xds.pointer("/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/explicit_http_config/http2_protocol_options").is_some(),
        "gRPC needs HTTP/2 on {xds_cluster}"
    );
    // The stats tags are the ones the examples and the e2e harness use (docs/metrics.md).
    let demo = documents(&root().join("examples/envoy/ratelimit-demo.yaml"));
    assert_eq!(
        override_["stats_config"]["stats_tags"], demo[0]["stats_config"]["stats_tags"],
        "the bootstrap override's stats_tags differ from examples/envoy/ratelimit-demo.yaml"
    );

    // The echo pod opts in: the EnvoyFilters' selector labels and the annotation naming
    // the ConfigMap.
    let labels = echo["spec"]["template"]["metadata"]["labels"].clone();
    for (key, value) in filters[0]["spec"]["workloadSelector"]["labels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[key], value,
            "the echo pod lacks the EnvoyFilters' label {key}"
        );
    }
    assert_eq!(
        echo["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/bootstrapOverride"],
        bootstrap["metadata"]["name"]
    );

    // Both clusters reach the control plane's Service, on the ports its container
    // listens on; the module cluster and URL are the ones the control plane hands out.
    let service = one(&objects, "Service", "meshward-control-plane");
    let host = format!(
        "{}.{}.svc.cluster.local",
        str_at(service, "/metadata/name"),
        str_at(service, "/metadata/namespace")
    );
    let service_ports = service["spec"]["ports"].as_array().unwrap();
    let port = |name: &str| -> u64 {
        let port = service_ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("Service port {name}"));
        port["port"].as_u64().unwrap()
    };
    assert_eq!(endpoint(xds), (host.clone(), port("grpc-xds")));
    let deployment = one(&objects, "Deployment", "meshward-control-plane");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let container_ports = container["ports"].as_array().unwrap();
    let container_port = |name: &str| -> u64 {
        let port = container_ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"));
        port["containerPort"].as_u64().unwrap()
    };
    // xDS, HTTP (status, metrics, modules), and the global-state services (rate-limit
    // service, idempotency store) the next releases serve.
    for (name, number) in [
        ("grpc-xds", 18000),
        ("http", 18001),
        ("grpc-rls", 18002),
        ("grpc-store", 18003),
    ] {
        assert_eq!(port(name), number, "Service port {name}");
        assert_eq!(container_port(name), number, "container port {name}");
    }
    for service_port in service_ports {
        let name = str_at(service_port, "/name");
        assert_eq!(
            service_port["targetPort"], name,
            "Service port {name} targets the container port"
        );
        container_port(name);
    }
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        flag(&args, "--xds-addr"),
        Some(format!("0.0.0.0:{}", container_port("grpc-xds")).as_str())
    );
    assert_eq!(
        flag(&args, "--http-addr"),
        Some(format!("0.0.0.0:{}", container_port("http")).as_str())
    );
    let module_cluster = flag(&args, "--module-cluster").expect("--module-cluster");
    assert_eq!(
        endpoint(cluster_named(&clusters, module_cluster)),
        (host.clone(), port("http"))
    );
    assert_eq!(
        flag(&args, "--module-base-url"),
        Some(format!("http://{host}:{}", port("http")).as_str())
    );
    assert!(args.iter().any(|a| a == "--kubernetes"), "Kubernetes mode");
    assert_eq!(flag(&args, "--namespace"), Some("$(POD_NAMESPACE)"));

    // Two replicas, found by each other, one of which a drain always leaves up.
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
    assert_eq!(replicas, 2);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = flag(&args, "--peer-selector").expect("--peer-selector with replicas > 1");
    for pair in selector.split(',') {
        let (key, value) = pair.split_once('=').expect("k=v");
        assert_eq!(
            pod_labels[key], value,
            "--peer-selector {pair} is not a pod label"
        );
    }
    let pdb = one(&objects, "PodDisruptionBudget", "meshward-control-plane");
    assert_eq!(
        pdb["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[key], value,
            "the PDB selects the control plane's pods"
        );
    }
    let min_available = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert!(
        (1..replicas).contains(&min_available),
        "a drain can proceed, one stays"
    );

    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"),
        "POD_NAMESPACE from the downward API"
    );
    // The replica's Lease identity (--identity defaults to $POD_NAME).
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "POD_NAME from the downward API"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
    for resource in [
        "/resources/requests/cpu",
        "/resources/requests/memory",
        "/resources/limits/memory",
    ] {
        assert!(container.pointer(resource).is_some(), "{resource}");
    }

    // The image has the modules the control plane serves, where --wasm-dir says; the kind
    // overlay uses the image run.sh builds, the base the release's version.
    let dockerfile = std::fs::read_to_string(root().join("e2e/kind/Dockerfile")).unwrap();
    let wasm_dir = flag(&args, "--wasm-dir").expect("--wasm-dir");
    assert!(
        dockerfile.contains(&format!(" {wasm_dir}/\n")),
        "the image copies the modules to {wasm_dir}"
    );
    for kind in Kind::FILTERS {
        assert!(
            dockerfile.contains(&format!("{}.wasm", kind.module())),
            "the image lacks {}",
            kind.module()
        );
    }
    let image = str_at(container, "/image");
    let script = std::fs::read_to_string(root().join("e2e/kind/run.sh")).unwrap();
    assert!(
        script.contains(&format!("IMAGE={image}\n")),
        "run.sh builds {image}"
    );
    // It installs these manifests as they are: the kind overlay, with kubectl's kustomize.
    assert!(
        script.contains("k apply -k \"$ROOT/istio-manifests/overlays/kind\""),
        "run.sh applies the kind overlay"
    );
    for line in script
        .lines()
        .filter(|l| l.contains("apply -f \"$ROOT/istio-manifests"))
    {
        assert!(
            line.contains("istio-manifests/examples/"),
            "run.sh bypasses kustomize: {line}"
        );
    }
    let base = rendered("istio-manifests");
    let base_image = str_at(
        one(&base, "Deployment", "meshward-control-plane"),
        "/spec/template/spec/containers/0/image",
    );
    assert_eq!(
        base_image,
        format!("meshward/control-plane:{}", env!("CARGO_PKG_VERSION"))
    );

    Mesh {
        inbound,
        outbound,
        clusters,
        stats_config: override_["stats_config"].clone(),
        labels,
        args,
    }
}

#[test]
fn the_pieces_of_the_install_agree() {
    mesh();
    // The other renderings carry the same four filters (their own fail-open/closed).
    chains(&rendered("istio-manifests"));
    let open = rendered("istio-manifests/overlays/authz-fail-open");
    chains(&open);
    let authz = open
        .iter()
        .find(|o| o["metadata"]["name"] == "meshward-authz")
        .unwrap();
    assert_eq!(
        authz["metadata"]["annotations"]["meshward.io/failure-mode"],
        "open"
    );
}

/// A sidecar-shaped bootstrap: an inbound and an outbound listener with `inbound` and
/// `outbound` before the router, the override's clusters and stats tags.
pub fn sidecar_bootstrap(mesh: &Mesh, inbound: Vec<Value>, outbound: Vec<Value>) -> Value {
    let with_router = |mut filters: Vec<Value>| {
        filters.push(router());
        filters
    };
    json!({
        "node": sidecar_node_with(&mesh.labels),
        "stats_config": mesh.stats_config,
        "static_resources": {
            "listeners": [
                listener_named("virtualInbound", "INBOUND", 0, with_router(inbound)),
                listener_named("0.0.0.0_80", "OUTBOUND", 0, with_router(outbound))
            ],
            "clusters": mesh.clusters
        }
    })
}

/// Every patch of every rendering (the base, the kind overlay, the fail-open overlay),
/// inbound and outbound, in one sidecar-shaped bootstrap per rendering.
#[test]
fn every_envoy_filter_patch_passes_envoy_validation() {
    let envoy = envoy_binary();
    let mesh = mesh();
    let dir = tempfile::tempdir().unwrap();
    for rendering in [
        "istio-manifests",
        "istio-manifests/overlays/kind",
        "istio-manifests/overlays/authz-fail-open",
    ] {
        let (inbound, outbound) = chains(&rendered(rendering));
        assert_eq!((inbound.len(), outbound.len()), (4, 1));
        let bootstrap = sidecar_bootstrap(&mesh, inbound, outbound);
        let name = format!("{}.json", rendering.replace('/', "_"));
        let (ok, log) = validate(&envoy, dir.path(), &name, &bootstrap);
        assert!(
            ok,
            "Envoy refused the EnvoyFilters of {rendering} with the bootstrap override:\n{log}"
        );
    }

    // A typo in a patch must fail the same check.
    let (mut inbound, outbound) = chains(&rendered("istio-manifests"));
    let discovery = inbound[2]["config_discovery"].as_object_mut().unwrap();
    let source = discovery.remove("config_source").unwrap();
    discovery.insert("config_sorce".into(), source);
    let (ok, log) = validate(
        &envoy,
        dir.path(),
        "typo.json",
        &sidecar_bootstrap(&mesh, inbound, outbound),
    );
    assert!(
        !ok && log.contains("config_sorce"),
        "a typo was accepted:\n{log}"
    );
}
