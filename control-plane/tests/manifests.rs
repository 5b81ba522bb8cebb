//! The Kubernetes manifests, checked without a cluster (the generated CRDs have their own
//! drift test, tests/crds.rs):
//!
//! - every YAML document under `istio-manifests/` and `e2e/kind/` parses, names its
//!   object and namespace, and Kubernetes kinds deserialize into their API types;
//! - every example custom resource is what the controller accepts (same types, same
//!   checks, and the strict file format), and each filter configuration in them is
//!   accepted by the filter itself, run by real Envoy;
//! - the RBAC grants exactly `kubernetes::REQUIRED_PERMISSIONS` to the ServiceAccount the
//!   Deployment runs as;
//! - the Deployment's flags are the binary's, and the pieces that must agree do (Service
//!   and container ports, the clusters of the bootstrap override, the module URL, the
//!   EnvoyFilter's selector and the sample app's labels and annotation, the image);
//! - the mesh wiring (the EnvoyFilter's HTTP filter + the bootstrap override's clusters)
//!   is accepted by real Envoy; a sidecar-shaped Envoy built from them passes traffic
//!   when no control plane answers, and with the control plane binary started with the
//!   Deployment's own flags it downloads the module and enforces the example
//!   RateLimitPolicy (429 with Retry-After and RateLimit fields).
//!
//! Envoy comes from `.venv/bin/envoy` (or `MESHWARD_ENVOY`) and the modules from
//! `target/meshward-wasm/`; without them these tests fail and say which command to run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Resource;
use meshward_control_plane::kubernetes::crds::{
    AuthPolicy, IdempotencyPolicy, RateLimitPolicy, RuntimeTuning, ToPolicy, TracePolicy,
};
use meshward_control_plane::kubernetes::REQUIRED_PERMISSIONS;
use meshward_control_plane::policy::file_source::parse_file;
use meshward_control_plane::policy::model::Kind;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_meshward-control-plane");
const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";
/// Bound for every wait on Envoy or the control plane.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// Reading the manifests

fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn yaml_files(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if !skip.contains(&name.as_ref()) {
                files.extend(yaml_files(&path, skip));
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every document of a YAML file (empty ones skipped), as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .enumerate()
        .filter_map(|(index, document)| {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} (document {}): {e}", path.display(), index + 1));
            (!value.is_null()).then_some(value)
        })
        .collect()
}

/// Every document in the manifest folders this file checks.
fn all_manifests() -> Vec<(PathBuf, Value)> {
    let mut files = yaml_files(&root().join("istio-manifests"), &["crds"]);
    files.extend(yaml_files(&root().join("e2e/kind"), &[]));
    files
        .into_iter()
        .flat_map(|file| documents(&file).into_iter().map(move |d| (file.clone(), d)))
        .collect()
}

fn in_dir(dir: &str) -> Vec<Value> {
    yaml_files(&root().join(dir), &[])
        .iter()
        .flat_map(|file| documents(file))
        .collect()
}

fn str_at<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

fn one<'v>(documents: &'v [Value], kind: &str, name: &str) -> &'v Value {
    let found: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    found[0]
}

fn typed<T: DeserializeOwned>(document: &Value) -> T {
    serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", document["kind"], document["metadata"]["name"]))
}

// ---------------------------------------------------------------------------------
// (a) everything parses

#[test]
fn every_manifest_parses_and_names_its_object() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    let manifests = all_manifests();
    assert!(
        manifests.len() >= 20,
        "only {} documents found",
        manifests.len()
    );
    for (file, document) in &manifests {
        let at = format!(
            "{} ({} {})",
            file.display(),
            document["kind"],
            document["metadata"]["name"]
        );
        let api_version = document["apiVersion"].as_str().unwrap_or_default();
        let kind = document["kind"].as_str().unwrap_or_default();
        assert!(
            !api_version.is_empty() && !kind.is_empty(),
            "{at}: apiVersion and kind"
        );
        assert!(
            document["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{at}: metadata.name"
        );
        // Namespaced objects say where they go: `kubectl apply -f <dir>` must not depend
        // on the caller's current namespace.
        let cluster_scoped = matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding");
        assert_eq!(
            document["metadata"]["namespace"].is_string(),
            !cluster_scoped,
            "{at}: metadata.namespace"
        );
        // The API types catch misplaced or mistyped fields (a port as a string, a list
        // where an object belongs).
        match (api_version, kind) {
            ("v1", "Namespace") => {
                typed::<Namespace>(document);
            }
            ("v1", "ServiceAccount") => {
                typed::<ServiceAccount>(document);
            }
            ("v1", "ConfigMap") => {
                typed::<ConfigMap>(document);
            }
            ("v1", "Service") => {
                typed::<Service>(document);
            }
            ("apps/v1", "Deployment") => {
                typed::<Deployment>(document);
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                typed::<ClusterRole>(document);
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                typed::<ClusterRoleBinding>(document);
            }
            ("rbac.authorization.k8s.io/v1", "Role") => {
                typed::<Role>(document);
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                typed::<RoleBinding>(document);
            }
            // Checked in depth by the tests below.
            ("meshward.io/v1alpha1", _) | ("networking.istio.io/v1alpha3", "EnvoyFilter") => {}
            _ => panic!("{at}: {api_version} {kind} has no check here; add one"),
        }
    }
}

// ---------------------------------------------------------------------------------
// (b) the examples are what the controller accepts

fn check_example<T>(document: &Value, kind: Kind)
where
    T: DeserializeOwned + ToPolicy + Resource<DynamicType = ()>,
{
    let at = format!("{} {}", kind.document_kind(), document["metadata"]["name"]);
    assert_eq!(
        document["apiVersion"],
        format!("{}/{}", T::group(&()), T::version(&())),
        "{at}"
    );
    let resource: T = typed(document);
    let policy = resource
        .to_policy()
        .unwrap_or_else(|e| panic!("{at}: refused by the controller's checks: {e}"));
    assert_eq!(policy.kind, kind, "{at}");
    assert_eq!(policy.namespace, "demo", "{at}");
}

#[test]
fn examples_are_valid_custom_resources_one_per_kind() {
    let dir = root().join("istio-manifests/examples");
    let mut seen = BTreeSet::new();
    for file in yaml_files(&dir, &[]) {
        let text = std::fs::read_to_string(&file).unwrap();
        // The strict file format refuses unknown fields, which the API server would
        // silently prune from a custom resource (a typo would just vanish).
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        parse_file(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        let docs = documents(&file);
        assert_eq!(docs.len(), 1, "{name}: one resource per file");
        let kind = Kind::from_document_kind(docs[0]["kind"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("{name}: not a meshward.io kind"));
        assert_eq!(
            name,
            format!("{}.yaml", kind.document_kind().to_lowercase())
        );
        match kind {
            Kind::RateLimit => check_example::<RateLimitPolicy>(&docs[0], kind),
            Kind::Authz => check_example::<AuthPolicy>(&docs[0], kind),
            Kind::Idempotency => check_example::<IdempotencyPolicy>(&docs[0], kind),
            Kind::Trace => check_example::<TracePolicy>(&docs[0], kind),
            Kind::Tuning => check_example::<RuntimeTuning>(&docs[0], kind),
        }
        seen.insert(kind);
    }
    assert_eq!(
        seen,
        Kind::ALL.into_iter().collect(),
        "one example per kind"
    );
}

/// The control plane leaves `config` to the filter (the module in Envoy is the authority
/// on its schema), so the examples' configurations are checked by the filters: Envoy's
/// validate mode loads each module and runs its configure step.
#[test]
fn example_filter_configs_are_accepted_by_the_filters() {
    let envoy = envoy_binary();
    let mut filters = Vec::new();
    for kind in Kind::FILTERS {
        let file = root().join(format!(
            "istio-manifests/examples/{}.yaml",
            kind.document_kind().to_lowercase()
        ));
        let config = documents(&file)[0]["spec"]["config"].clone();
        filters.push((kind, config));
    }
    let dir = tempfile::tempdir().unwrap();
    let good = validate(
        &envoy,
        dir.path(),
        "examples.json",
        &wasm_listener_bootstrap(&filters),
    );
    assert!(good.0, "an example configuration was refused:\n{}", good.1);

    // The same harness must see a refusal, or the check above proves nothing (e.g. if a
    // future Envoy stopped configuring plugins in validate mode).
    let broken = vec![(
        Kind::RateLimit,
        json!({"rules": [{"name": "r", "limit": {"algorithm": "no-such-algorithm", "requests": 1, "per": "1s"}}]}),
    )];
    let bad = validate(
        &envoy,
        dir.path(),
        "broken.json",
        &wasm_listener_bootstrap(&broken),
    );
    assert!(
        !bad.0 && bad.1.contains("no-such-algorithm"),
        "not refused:\n{}",
        bad.1
    );
}

/// A bootstrap whose listener runs each filter, configured inline, from its local module.
fn wasm_listener_bootstrap(filters: &[(Kind, Value)]) -> Value {
    let mut http_filters: Vec<Value> = filters
        .iter()
        .map(|(kind, config)| {
            let module = kind.module();
            json!({
                "name": kind.resource_name(),
                "typed_config": {
                    "@type": WASM_FILTER,
                    "config": {
                        "name": module,
                        "root_id": module,
                        "vm_config": {
                            "vm_id": module,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": wasm_module(module)}}
                        },
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": config.to_string()
                        }
                    }
                }
            })
        })
        .collect();
    http_filters.push(router());
    json!({
        "node": sidecar_node(),
        "static_resources": {"listeners": [listener(0, http_filters)], "clusters": []}
    })
}

// ---------------------------------------------------------------------------------
// (c) RBAC: exactly what the controller needs, for the identity the Deployment uses

type Permission = (String, String, String, bool);

fn required() -> BTreeSet<Permission> {
    REQUIRED_PERMISSIONS
        .iter()
        .flat_map(|(group, resource, verbs, namespaced)| {
            verbs.iter().map(move |verb| {
                (
                    group.to_string(),
                    resource.to_string(),
                    verb.to_string(),
                    *namespaced,
                )
            })
        })
        .collect()
}

fn rules_granted(role: &Value, namespaced: bool, into: &mut BTreeSet<Permission>) {
    let at = format!("{} {}", role["kind"], role["metadata"]["name"]);
    for rule in role["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{at}: no rules"))
    {
        assert!(
            rule.get("resourceNames").is_none(),
            "{at}: resourceNames are not expected"
        );
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "{at}: no non-resource URLs"
        );
        let list = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: {field}"))
                .iter()
                .map(|v| {
                    v.as_str()
                        .unwrap_or_else(|| panic!("{at}: {field}"))
                        .to_owned()
                })
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    for field in [&group, &resource, &verb] {
                        assert!(!field.contains('*'), "{at}: wildcard {field:?}");
                    }
                    into.insert((group.clone(), resource.clone(), verb, namespaced));
                }
            }
        }
    }
}

fn binds(binding: &Value, namespace: &str, account: &str) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace
        })
}

#[test]
fn rbac_grants_exactly_the_required_permissions_to_the_deployments_account() {
    let docs = in_dir("istio-manifests/control-plane");
    let deployment = one(&docs, "Deployment", "meshward-control-plane");
    let namespace = str_at(deployment, "/metadata/namespace");
    let account = str_at(deployment, "/spec/template/spec/serviceAccountName");
    let sa = one(&docs, "ServiceAccount", account);
    assert_eq!(
        str_at(sa, "/metadata/namespace"),
        namespace,
        "ServiceAccount namespace"
    );
    assert_ne!(
        deployment.pointer("/spec/template/spec/automountServiceAccountToken"),
        Some(&json!(false)),
        "the controller needs its token"
    );
    one(&docs, "Namespace", namespace);

    let mut granted = BTreeSet::new();
    for binding in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        if binds(binding, namespace, account) {
            assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
            let role = one(&docs, "ClusterRole", str_at(binding, "/roleRef/name"));
            rules_granted(role, false, &mut granted);
        }
    }
    for binding in docs.iter().filter(|d| d["kind"] == "RoleBinding") {
        if binds(binding, namespace, account) {
            // Namespaced grants are for the control plane's own namespace (the Lease).
            assert_eq!(str_at(binding, "/metadata/namespace"), namespace);
            assert_eq!(binding["roleRef"]["kind"], "Role");
            let role = one(&docs, "Role", str_at(binding, "/roleRef/name"));
            assert_eq!(str_at(role, "/metadata/namespace"), namespace);
            rules_granted(role, true, &mut granted);
        }
    }
    let required = required();
    let missing: Vec<_> = required.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&required).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "RBAC differs from REQUIRED_PERMISSIONS (group, resource, verb, own namespace only)\n  missing: {missing:?}\n  extra: {extra:?}"
    );

    // And the constant covers every custom resource: read, plus status.
    let crds = [
        (RateLimitPolicy::group(&()), RateLimitPolicy::plural(&())),
        (AuthPolicy::group(&()), AuthPolicy::plural(&())),
        (
            IdempotencyPolicy::group(&()),
            IdempotencyPolicy::plural(&()),
        ),
        (TracePolicy::group(&()), TracePolicy::plural(&())),
        (RuntimeTuning::group(&()), RuntimeTuning::plural(&())),
    ];
    for (group, plural) in crds {
        for (resource, verb) in [
            (plural.to_string(), "watch"),
            (format!("{plural}/status"), "patch"),
        ] {
            let permission = (group.to_string(), resource, verb.to_owned(), false);
            assert!(required.contains(&permission), "{permission:?} missing");
        }
    }
}

// ---------------------------------------------------------------------------------
// (d) the mesh wiring, in real Envoy

/// What the manifests say, cross-checked, for the Envoy tests.
struct Mesh {
    /// The EnvoyFilter's HTTP filter, as Envoy JSON (`@type` fields pass through).
    filter: Value,
    /// The bootstrap override's static clusters.
    clusters: Vec<Value>,
    /// The echo pod's labels (the node metadata Istio would send).
    labels: Value,
    /// The control plane container's args.
    args: Vec<String>,
}

fn cluster_named<'c>(clusters: &'c [Value], name: &str) -> &'c Value {
    clusters
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("the bootstrap override has no cluster {name}"))
}

fn endpoint(cluster: &Value) -> (String, u64) {
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    (
        str_at(address, "/address").to_owned(),
        address["port_value"].as_u64().unwrap_or_default(),
    )
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn mesh() -> Mesh {
    let mesh = in_dir("istio-manifests/mesh");
    let control = in_dir("istio-manifests/control-plane");
    let app: Vec<Value> = documents(&root().join("e2e/kind/sample-app.yaml"));

    // The EnvoyFilter: a filter inserted before the router of inbound HTTP chains.
    let envoy_filter = one(&mesh, "EnvoyFilter", "meshward-ratelimit");
    let patches = envoy_filter["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 1);
    let patch = &patches[0];
    assert_eq!(patch["applyTo"], "HTTP_FILTER");
    assert_eq!(patch["match"]["context"], "SIDECAR_INBOUND");
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["name"],
        HCM
    );
    assert_eq!(
        patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        ROUTER
    );
    assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
    let filter = patch["patch"]["value"].clone();
    assert_eq!(
        filter["name"],
        Kind::RateLimit.resource_name(),
        "the ECDS resource name"
    );
    let discovery = &filter["config_discovery"];
    assert_eq!(discovery["type_urls"], json!([WASM_FILTER]));
    // Without warming, a module Envoy must download would never be loaded (see the
    // manifest's comment): the listener must wait for the first configuration.
    assert_ne!(discovery["apply_default_config_without_warming"], true);
    assert!(
        discovery["default_config"].is_object(),
        "a pass-through default"
    );
    assert_eq!(
        discovery["default_config"]["config"]["vm_config"]["code"]["local"]["inline_bytes"],
        base64(&pass_through_module()),
        "default_config runs the module documented in the manifest"
    );
    let source = &discovery["config_source"]["api_config_source"];
    assert_eq!(source["api_type"], "GRPC");
    let xds_cluster = str_at(source, "/grpc_services/0/envoy_grpc/cluster_name");

    // The bootstrap override, in the same namespace, holds that cluster.
    let namespace = str_at(envoy_filter, "/metadata/namespace");
    let bootstrap = one(&mesh, "ConfigMap", "meshward-bootstrap");
    assert_eq!(str_at(bootstrap, "/metadata/namespace"), namespace);
    let json_text = str_at(bootstrap, "/data/custom_bootstrap.json");
    let override_: Value = serde_json::from_str(json_text)
        .unwrap_or_else(|e| panic!("custom_bootstrap.json is not JSON: {e}"));
    let clusters = override_["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .clone();
    let xds = cluster_named(&clusters, xds_cluster);
    assert!(
        xds.pointer("/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions/explicit_http_config/http2_protocol_options").is_some(),
        "gRPC needs HTTP/2 on {xds_cluster}"
    );

    // The sample app's echo pod opts in: the EnvoyFilter's selector labels and the
    // annotation naming the ConfigMap, in that namespace.
    let echo = one(&app, "Deployment", "echo");
    assert_eq!(str_at(echo, "/metadata/namespace"), namespace);
    let labels = echo["spec"]["template"]["metadata"]["labels"].clone();
    for (key, value) in envoy_filter["spec"]["workloadSelector"]["labels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[key], value,
            "the echo pod lacks the EnvoyFilter's label {key}"
        );
    }
    assert_eq!(
        echo["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/bootstrapOverride"],
        bootstrap["metadata"]["name"]
    );

    // Both clusters reach the control plane's Service, on the ports its container
    // listens on; the module cluster and URL are the ones the control plane hands out.
    let service = one(&control, "Service", "meshward-control-plane");
    let host = format!(
        "{}.{}.svc.cluster.local",
        str_at(service, "/metadata/name"),
        str_at(service, "/metadata/namespace")
    );
    let port = |name: &str| -> u64 {
        let ports = service["spec"]["ports"].as_array().unwrap();
        let port = ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("Service port {name}"));
        port["port"].as_u64().unwrap()
    };
    assert_eq!(endpoint(xds), (host.clone(), port("grpc-xds")));
    let deployment = one(&control, "Deployment", "meshward-control-plane");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let container_port = |name: &str| -> u64 {
        let ports = container["ports"].as_array().unwrap();
        let port = ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"));
        port["containerPort"].as_u64().unwrap()
    };
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
    for name in ["grpc-xds", "http"] {
        let ports = service["spec"]["ports"].as_array().unwrap();
        let port = ports.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(
            port["targetPort"], name,
            "Service port {name} targets the container port"
        );
    }
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
    // With several replicas the status writer must find its peers by their pod labels.
    if deployment["spec"]["replicas"].as_u64().unwrap_or(1) > 1 {
        let selector = flag(&args, "--peer-selector").expect("--peer-selector with replicas > 1");
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for pair in selector.split(',') {
            let (key, value) = pair.split_once('=').expect("k=v");
            assert_eq!(
                pod_labels[key], value,
                "--peer-selector {pair} is not a pod label"
            );
        }
    }
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

    // The image has the modules the control plane serves, where --wasm-dir says.
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

    Mesh {
        filter,
        clusters,
        labels,
        args,
    }
}

#[test]
fn the_mesh_filter_and_bootstrap_pass_envoy_validation() {
    let envoy = envoy_binary();
    let mesh = mesh();
    let bootstrap = json!({
        "node": sidecar_node_with(&mesh.labels),
        "static_resources": {
            "listeners": [listener(0, vec![mesh.filter.clone(), router()])],
            "clusters": mesh.clusters
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = validate(&envoy, dir.path(), "mesh.json", &bootstrap);
    assert!(
        ok,
        "Envoy refused the EnvoyFilter's filter with the bootstrap override's clusters:\n{log}"
    );
}

/// The echo pod's sidecar on this machine: the EnvoyFilter's filter (with `edit` applied
/// to it) and the bootstrap override's clusters pointed at 127.0.0.1 — STATIC, since
/// nothing here may resolve cluster DNS names. Returns Envoy and its listener port.
fn start_sidecar(
    mesh: &Mesh,
    dir: &Path,
    ports: (u16, u16),
    edit: impl FnOnce(&mut Value),
) -> (Process, u16) {
    let mut filter = mesh.filter.clone();
    edit(&mut filter);
    let xds_cluster = filter
        .pointer("/config_discovery/config_source/api_config_source/grpc_services/0/envoy_grpc/cluster_name")
        .cloned();
    let clusters: Vec<Value> = mesh
        .clusters
        .iter()
        .map(|cluster| {
            let mut cluster = cluster.clone();
            let port = if Some(&cluster["name"]) == xds_cluster.as_ref() {
                ports.0
            } else {
                ports.1
            };
            cluster["type"] = json!("STATIC");
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"] = json!({"address": "127.0.0.1", "port_value": port});
            cluster
        })
        .collect();
    let bootstrap = json!({
        "node": sidecar_node_with(&mesh.labels),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [listener(0, vec![filter, router()])],
            "clusters": clusters
        }
    });
    let config = dir.join("sidecar.json");
    std::fs::write(&config, bootstrap.to_string()).unwrap();
    let log = dir.join("envoy.log");
    let admin_file = dir.join("admin.address");
    let mut envoy = Process::spawn(
        Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .arg("--log-path")
            .arg(&log)
            .arg("--admin-address-path")
            .arg(&admin_file),
        log,
    );
    let port = envoy.listener_port(&admin_file);
    (envoy, port)
}

/// The first answer of a listener, which refuses connections while it warms.
fn first_reply(envoy: &Process, port: u16) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        match get(port, "/") {
            Ok(reply) => return reply,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", envoy.log()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn two_free_ports() -> (u16, u16) {
    let first = free_port();
    loop {
        let second = free_port();
        if second != first {
            return (first, second);
        }
    }
}

/// A sidecar whose control plane cannot be reached gets the pass-through default once
/// the initial fetch times out: traffic flows, unlimited. (The timeout is shortened
/// from the manifest's to keep the test quick; the rest is the manifest's filter.)
#[test]
fn without_a_control_plane_the_sidecar_passes_traffic() {
    let mesh = mesh();
    let dir = tempfile::tempdir().unwrap();
    let (envoy, port) = start_sidecar(&mesh, dir.path(), two_free_ports(), |filter| {
        filter["config_discovery"]["config_source"]["initial_fetch_timeout"] = json!("1s");
    });
    let reply = first_reply(&envoy, port);
    assert_eq!(reply.status, 200, "{reply:?}\n{}", envoy.log());
    assert!(reply.header("ratelimit-policy").is_none(), "{reply:?}");
}

/// The sidecar as it starts in the cluster, with the control plane up: started with the
/// Deployment's own flags (minus the API server: the example policy comes from a file,
/// through the same checks) and the addresses rewritten to this machine. Envoy fetches
/// the module through the module cluster and enforces the example RateLimitPolicy.
#[test]
fn with_the_control_plane_the_sidecar_enforces_the_example_policy() {
    let wasm_dir = root().join("target/meshward-wasm");
    wasm_module(Kind::RateLimit.module());
    let mesh = mesh();
    let dir = tempfile::tempdir().unwrap();
    let (xds_port, http_port) = two_free_ports();

    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let example = root().join("istio-manifests/examples/ratelimitpolicy.yaml");
    std::fs::copy(&example, policies.join("ratelimitpolicy.yaml")).unwrap();
    let args = local_args(&mesh.args, &policies, xds_port, http_port, &wasm_dir);
    let control = Process::spawn(
        Command::new(BINARY).args(&args).stdout(Stdio::piped()),
        dir.path().join("control-plane.log"),
    )
    .wait_listening();
    let (envoy, port) = start_sidecar(&mesh, dir.path(), (xds_port, http_port), |_| {});

    // The listener warms until the configuration and its module are in, so the first
    // answer is already the example's: its `onAllowed` fields name the rule.
    let example_doc = &documents(&example)[0];
    let rule = &example_doc["spec"]["config"]["rules"][0];
    let rule_name = str_at(rule, "/name");
    let limit = rule["limit"]["requests"].as_u64().unwrap();
    let mut replies = vec![first_reply(&envoy, port)];
    replies.extend((0..limit + 4).map(|_| get(port, "/").unwrap()));
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let logs = || {
        format!(
            "--- envoy\n{}\n--- control plane\n{}",
            envoy.log(),
            control.log()
        )
    };
    assert!(
        replies[0]
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains(&format!("\"{rule_name}\""))),
        "the example is not in force: {:?}\n{}",
        replies[0],
        logs()
    );
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .unwrap_or_else(|| panic!("no 429: {statuses:?}\n{}", logs()));
    // The token bucket refills continuously (1 request per 6 s), hence the +1.
    assert!(
        (limit..=limit + 1).contains(&(first_429 as u64)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    for reply in replies.iter().filter(|r| r.status == 429) {
        for header in ["retry-after", "ratelimit", "ratelimit-policy"] {
            assert!(
                reply.header(header).is_some(),
                "429 without {header}: {reply:?}"
            );
        }
    }

    // The control plane recorded this proxy's ACK (what the Programmed condition reads).
    let status: Value = serde_json::from_str(&get(http_port, "/status").unwrap().body).unwrap();
    let node_id = str_at(&sidecar_node_with(&mesh.labels), "/id").to_owned();
    let resource = &status["proxies"][&node_id]["resources"][Kind::RateLimit.resource_name()];
    assert!(resource["ackedVersion"].is_string(), "{status:#}");
    assert_eq!(
        resource["ackedVersion"], resource["pushedVersion"],
        "{status:#}"
    );
    drop(envoy);
}

/// The Deployment's exact flags parse: run with them (the downward-API variables
/// expanded, as the kubelet does), the binary gets past its flags and stops only for
/// want of a cluster — bad flags would exit 2 with the usage.
#[test]
fn the_deployments_flags_are_the_binarys() {
    let mesh = mesh();
    let dir = tempfile::tempdir().unwrap();
    // Paths of the image and the pod (/wasm, the ConfigMap volume) are local ones here,
    // and the addresses loopback ones; every flag stays.
    wasm_module(Kind::RateLimit.module());
    let local: BTreeMap<&str, String> = [
        ("--policy-dir", dir.path().display().to_string()),
        (
            "--wasm-dir",
            root().join("target/meshward-wasm").display().to_string(),
        ),
        ("--xds-addr", "127.0.0.1:0".to_owned()),
        ("--http-addr", "127.0.0.1:0".to_owned()),
    ]
    .into();
    let mut args: Vec<String> = Vec::new();
    for arg in &mesh.args {
        let previous = args.last().map(String::as_str).unwrap_or_default();
        args.push(match local.get(previous) {
            Some(value) => value.clone(),
            None => arg.replace("$(POD_NAMESPACE)", "meshward-system"),
        });
    }
    let out = Command::new(BINARY)
        .args(&args)
        // No cluster: neither in-cluster variables nor a kubeconfig.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("HOME", dir.path())
        .env("POD_NAME", "meshward-control-plane-0")
        .env("POD_NAMESPACE", "meshward-system")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "flags refused: {stderr}");
    assert!(!stderr.contains("usage:"), "{stderr}");
    assert!(
        stderr.contains("Kubernetes mode: no cluster access"),
        "{stderr}"
    );
}

/// The Deployment's args for a control plane on this machine: the policy source is the
/// directory (no API server here); addresses, the module URL and the wasm folder are
/// local; every other flag (notably --module-cluster) stays as deployed.
fn local_args(
    deployed: &[String],
    policies: &Path,
    xds_port: u16,
    http_port: u16,
    wasm_dir: &Path,
) -> Vec<String> {
    let mut args = Vec::new();
    let mut it = deployed.iter().peekable();
    while let Some(flag) = it.next() {
        let local = match flag.as_str() {
            // The API-server source and its options: not here.
            "--kubernetes" => continue,
            "--namespace" | "--identity" | "--peer-selector" | "--lease-duration" => {
                it.next();
                continue;
            }
            "--policy-dir" => Some(policies.display().to_string()),
            "--xds-addr" => Some(format!("127.0.0.1:{xds_port}")),
            "--http-addr" => Some(format!("127.0.0.1:{http_port}")),
            "--module-base-url" => Some(format!("http://127.0.0.1:{http_port}")),
            "--wasm-dir" => Some(wasm_dir.display().to_string()),
            _ => None,
        };
        args.push(flag.clone());
        match local {
            Some(value) => {
                it.next();
                args.push(value);
            }
            None => {
                if let Some(value) = it.next_if(|v| !v.starts_with("--")) {
                    args.push(value.clone());
                }
            }
        }
    }
    args
}

// ---------------------------------------------------------------------------------
// The pass-through module of the EnvoyFilter's default_config

/// The module documented in envoyfilter-ratelimit.yaml, encoded here section by section
/// so the manifest's base64 can be checked against its documented meaning:
/// `(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
///  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))`.
/// Every section is under 128 bytes, so each length is one LEB128 byte.
fn pass_through_module() -> Vec<u8> {
    const I32: u8 = 0x7f;
    fn section(id: u8, items: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![id, body.len() as u8 + 1, items];
        out.extend_from_slice(body);
        out
    }
    fn export(name: &str, kind: u8, index: u8) -> Vec<u8> {
        let mut out = vec![name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[kind, index]);
        out
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = () -> (), 1 = (i32) -> i32.
    module.extend(section(1, 2, &[0x60, 0, 0, 0x60, 1, I32, 1, I32]));
    // Functions 0 and 1 of those types.
    module.extend(section(3, 2, &[0, 1]));
    // One memory of at least one page.
    module.extend(section(5, 1, &[0, 1]));
    let exports = [
        export("memory", 2, 0),
        export("proxy_abi_version_0_2_1", 0, 0),
        export("proxy_on_memory_allocate", 0, 1),
    ]
    .concat();
    module.extend(section(7, 3, &exports));
    // Bodies: no locals; `end` / `i32.const 0; end`.
    module.extend(section(10, 2, &[2, 0, 0x0b, 4, 0, 0x41, 0, 0x0b]));
    module
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_base64_encoder_of_this_file_is_standard() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"\0asm\x01"), "AGFzbQE=");
}

// ---------------------------------------------------------------------------------
// Envoy and processes

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHWARD_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy not found at {}; run `cargo xtask setup` first",
        path.display()
    );
    path
}

fn wasm_module(module: &str) -> String {
    let path = root()
        .join("target/meshward-wasm")
        .join(format!("{module}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing; run `cargo xtask build-wasm` first",
        path.display()
    );
    path.display().to_string()
}

/// The node an Istio sidecar of the echo workload sends (the keys the control plane
/// reads: NAMESPACE, WORKLOAD_NAME, LABELS).
fn sidecar_node_with(labels: &Value) -> Value {
    json!({
        "id": "sidecar~10.244.0.12~echo-5d8f7c9b6d-x2x7k.demo~demo.svc.cluster.local",
        "cluster": "echo.demo",
        "metadata": {"NAMESPACE": "demo", "WORKLOAD_NAME": "echo", "LABELS": labels}
    })
}

fn sidecar_node() -> Value {
    sidecar_node_with(&json!({"app": "echo"}))
}

fn router() -> Value {
    json!({
        "name": ROUTER,
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    })
}

/// An inbound-like listener answering 200 itself (no upstream needed): the filters
/// before the router decide.
fn listener(port: u16, http_filters: Vec<Value>) -> Value {
    json!({
        "name": "virtualInbound",
        "traffic_direction": "INBOUND",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": HCM,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "inbound",
                "route_config": {"virtual_hosts": [{
                    "name": "echo",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "hello from echo"}}}]
                }]},
                "http_filters": http_filters
            }
        }]}]
    })
}

/// `envoy --mode validate`: (accepted, Envoy's output).
fn validate(envoy: &Path, dir: &Path, name: &str, bootstrap: &Value) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(bootstrap).unwrap()).unwrap();
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", envoy.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A child process of this test, killed (by its own id) when dropped.
struct Process {
    child: Child,
    log: PathBuf,
    /// The control plane's stdout, kept open: it writes its addresses there, and a
    /// closed pipe would make that write fail.
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Process {
            child,
            log,
            stdout: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The control plane prints `xds ADDR` and `http ADDR` once it listens.
    fn wait_listening(mut self) -> Self {
        let mut stdout = BufReader::new(self.child.stdout.take().expect("stdout piped"));
        for expected in ["xds ", "http "] {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert!(
                line.starts_with(expected),
                "control plane did not start: {line:?}\n{}",
                self.log()
            );
        }
        self.stdout = Some(stdout);
        self
    }

    /// Envoy's listener port, read from the admin API once Envoy is ready.
    fn listener_port(&mut self, admin_file: &Path) -> u16 {
        let deadline = Instant::now() + WAIT;
        loop {
            let admin = std::fs::read_to_string(admin_file)
                .ok()
                .and_then(|a| a.trim().rsplit(':').next().and_then(|p| p.parse().ok()));
            if let Some(admin) = admin {
                if let Ok(reply) = get(admin, "/listeners?format=json") {
                    let listeners: Value = serde_json::from_str(&reply.body).unwrap_or_default();
                    let port = listeners
                        .pointer("/listener_statuses/0/local_address/socket_address/port_value")
                        .and_then(Value::as_u64);
                    if let Some(port) = port.filter(|p| *p != 0) {
                        return port as u16;
                    }
                }
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("Envoy exited ({exit}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Envoy did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the connection is closed after the reply).
fn get(port: u16, path: &str) -> Result<Reply, String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: echo.demo\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write {address}: {e}"))?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut buffer)
            .map_err(|e| format!("read {address}: {e}"))?;
        received.extend_from_slice(&buffer[..n]);
        if let Some(reply) = complete(&String::from_utf8_lossy(&received), n == 0)? {
            return Ok(reply);
        }
    }
}

/// The reply once `text` holds all of it. Envoy keeps a connection open for up to its
/// delayed-close timeout (1 s) after the last reply, so the body's framing, not the
/// close, says when a reply is complete.
fn complete(text: &str, closed: bool) -> Result<Option<Reply>, String> {
    let incomplete = |what: &str| {
        if closed {
            Err(format!("connection closed mid-reply ({what}): {text:?}"))
        } else {
            Ok(None)
        }
    };
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return incomplete("head");
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status line: {head:?}"))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers.get("content-length").and_then(|l| l.parse().ok());
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        // Envoy's admin API streams its answers in chunks.
        match dechunk(body) {
            Ok(body) => body,
            Err(_) => return incomplete("chunks"),
        }
    } else if let Some(length) = length {
        match body.get(..length) {
            Some(body) => body.to_owned(),
            None => return incomplete("body"),
        }
    } else if closed {
        body.to_owned()
    } else {
        return Ok(None);
    };
    Ok(Some(Reply {
        status,
        headers,
        body,
    }))
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|e| format!("chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).ok_or("truncated chunk")?);
        rest = after.get(size + 2..).ok_or("truncated chunk")?;
    }
}
