//! Every manifest parses and is accounted for; the kustomizations render (with this
//! test's renderer and, where installed, `kubectl kustomize`, to the same objects);
//! built-in kinds deserialize into the k8s-openapi types with no field lost (a typo'd
//! field fails, as `kubectl apply`'s strict field validation would); and every object
//! validates against its published schema (Kubernetes, Istio, Prometheus Operator, the
//! meshward.io CRDs) with the npm validators `cargo xtask setup` installs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::kustomize::{kubectl_kustomize, render, sorted};
use crate::support::{documents, root, typed, yaml_files};

/// The kustomizations: the install (`kubectl apply -k istio-manifests/`), its overlays,
/// the per-namespace bootstrap overrides (the base's and the global-state overlay's), the
/// WasmPlugin install and the PodMonitors.
pub const KUSTOMIZATIONS: [&str; 8] = [
    "istio-manifests",
    "istio-manifests/overlays/kind",
    "istio-manifests/overlays/authz-fail-open",
    "istio-manifests/overlays/global-state",
    "istio-manifests/app-namespace",
    "istio-manifests/overlays/global-state/app-namespace",
    "istio-manifests/wasmplugin",
    "istio-manifests/prometheus",
];

/// The kustomizations applied with `-n <namespace>`: no namespace of their own.
pub const PER_NAMESPACE: [&str; 2] = [
    "istio-manifests/app-namespace",
    "istio-manifests/overlays/global-state/app-namespace",
];

/// Applied without kustomize (`kubectl apply -f`, `istioctl install -f`).
const PLAIN: [&str; 3] = [
    "istio-manifests/examples",
    "istio-manifests/istio",
    "e2e/kind/sample-app.yaml",
];

/// YAML that is not a Kubernetes object (a prometheus.yml fragment).
const NOT_OBJECTS: [&str; 1] = ["istio-manifests/prometheus/scrape-config.yaml"];

/// The objects `kubectl kustomize <dir>` gives (this test's renderer).
pub fn rendered(dir: &str) -> Vec<Value> {
    render(&root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .objects
}

fn plain_files() -> Vec<PathBuf> {
    PLAIN
        .iter()
        .flat_map(|p| {
            let path = root().join(p);
            if path.is_dir() {
                yaml_files(&path, &[])
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Every object this repository ships, with where it comes from.
pub fn all_objects() -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for dir in KUSTOMIZATIONS {
        for object in rendered(dir) {
            all.push((format!("kustomize {dir}"), object));
        }
    }
    for file in plain_files() {
        let source = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for object in documents(&file) {
            all.push((source.clone(), object));
        }
    }
    all
}

/// Serializing the typed value gives back the document: no field was unknown to the
/// type (serde would drop it silently).
fn strict<T: DeserializeOwned + Serialize>(document: &Value) {
    let value: T = typed(document);
    let back = serde_json::to_value(&value).unwrap();
    assert_eq!(
        &back, document,
        "{} {}: a field is unknown to the API type (typo?) — compare the two",
        document["kind"], document["metadata"]["name"]
    );
}

#[test]
fn every_manifest_is_accounted_for_parses_and_uses_known_fields() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    // No orphan: every YAML file under istio-manifests/ is rendered by a kustomization,
    // is one, is applied as is, or is declared not to be an object.
    let canonical = |p: PathBuf| p.canonicalize().unwrap_or(p);
    let mut accounted: BTreeSet<PathBuf> = plain_files().into_iter().map(canonical).collect();
    for dir in KUSTOMIZATIONS {
        accounted.extend(render(&root().join(dir)).unwrap().files);
    }
    accounted.extend(NOT_OBJECTS.iter().map(|f| canonical(root().join(f))));
    for file in yaml_files(&root().join("istio-manifests"), &[]) {
        assert!(
            accounted.contains(&canonical(file.clone())),
            "{} is in no kustomization and not listed in PLAIN/NOT_OBJECTS",
            file.display()
        );
    }
    for file in NOT_OBJECTS {
        documents(&root().join(file));
    }

    let objects = all_objects();
    assert!(objects.len() >= 40, "only {} objects", objects.len());
    for (source, document) in &objects {
        let at = format!(
            "{source} ({} {})",
            document["kind"], document["metadata"]["name"]
        );
        let api_version = document["apiVersion"].as_str().unwrap_or_default();
        let kind = document["kind"].as_str().unwrap_or_default();
        assert!(!api_version.is_empty() && !kind.is_empty(), "{at}");
        assert!(
            document["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{at}: metadata.name"
        );
        // Namespaced objects say where they go (applying must not depend on the
        // caller's namespace) — except the per-namespace kustomizations, made to be
        // given one.
        let cluster_scoped = matches!(
            kind,
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
        );
        if !PER_NAMESPACE
            .iter()
            .any(|dir| source == &format!("kustomize {dir}"))
        {
            assert_eq!(
                document["metadata"]["namespace"].is_string(),
                !cluster_scoped,
                "{at}: metadata.namespace"
            );
        } else {
            assert!(
                document["metadata"]["namespace"].is_null(),
                "{at}: applied with -n, it must not name a namespace"
            );
        }
        match (api_version, kind) {
            ("v1", "Namespace") => strict::<Namespace>(document),
            ("v1", "ServiceAccount") => strict::<ServiceAccount>(document),
            ("v1", "ConfigMap") => strict::<ConfigMap>(document),
            ("v1", "Service") => strict::<Service>(document),
            ("apps/v1", "Deployment") => strict::<Deployment>(document),
            ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(document),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(document),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                strict::<ClusterRoleBinding>(document)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(document),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(document),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                typed::<CustomResourceDefinition>(document);
            }
            // Schema-checked by every_object_validates_against_its_published_schema and
            // in depth by the tests of mesh.rs, wasmplugin.rs and examples.rs.
            ("meshward.io/v1alpha1", _)
            | ("networking.istio.io/v1alpha3", "EnvoyFilter")
            | ("networking.istio.io/v1", "DestinationRule")
            | ("extensions.istio.io/v1alpha1", "WasmPlugin")
            | ("install.istio.io/v1alpha1", "IstioOperator")
            | ("monitoring.coreos.com/v1", "PodMonitor") => {}
            _ => panic!("{at}: {api_version} {kind} has no check here; add one"),
        }
    }
}

#[test]
fn kustomizations_render_like_kubectl_kustomize() {
    let mut compared = 0;
    for dir in KUSTOMIZATIONS {
        let ours = sorted(rendered(dir));
        assert!(!ours.is_empty(), "{dir} renders nothing");
        match kubectl_kustomize(&root().join(dir)) {
            None => {}
            Some(Err(e)) => panic!("{e}"),
            Some(Ok(theirs)) => {
                let theirs = sorted(theirs);
                assert_eq!(ours.len(), theirs.len(), "{dir}: object count");
                for (a, b) in ours.iter().zip(&theirs) {
                    assert_eq!(
                        a, b,
                        "{dir}: {} {} differs from kubectl kustomize",
                        a["kind"], a["metadata"]["name"]
                    );
                }
                compared += 1;
            }
        }
    }
    if compared == 0 {
        eprintln!("kubectl not installed: rendered with this test's kustomize subset only");
    }
    // The install is the base plus nothing else; the kind overlay adds the demo
    // namespace's bootstrap override and the :dev image.
    let base = rendered("istio-manifests");
    let kind = rendered("istio-manifests/overlays/kind");
    assert_eq!(kind.len(), base.len() + 1);
    assert!(kind
        .iter()
        .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["namespace"] == "demo"));
}

fn node() -> PathBuf {
    let venv = root().join(".venv/bin/node");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("node")
    }
}

/// Runs the npm validators on `objects`: (all valid, output).
fn schema_check(dir: &Path, objects: &[(String, Value)]) -> (bool, String) {
    let modules = root().join(".tools/node");
    assert!(
        modules.join("node_modules/kubernetes-models").is_dir(),
        "the schema validators are not installed in {}; run `cargo xtask setup`",
        modules.display()
    );
    // The script resolves its packages from the folder it runs in.
    let script = modules.join("validate.mjs");
    std::fs::copy(root().join("tools/manifest-schemas/validate.mjs"), &script).unwrap();
    let input = dir.join("objects.json");
    let items: Vec<Value> = objects
        .iter()
        .map(|(source, object)| json!({"source": source, "object": object}))
        .collect();
    std::fs::write(&input, serde_json::to_string(&items).unwrap()).unwrap();
    let out = Command::new(node())
        .arg(&script)
        .arg(&input)
        .output()
        .unwrap_or_else(|e| panic!("node: {e}; run `cargo xtask setup`"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_object_validates_against_its_published_schema() {
    let dir = tempfile::tempdir().unwrap();
    let objects = all_objects();
    let (ok, text) = schema_check(dir.path(), &objects);
    assert!(ok, "schema validation failed:\n{text}");
    assert!(
        text.contains(&format!("{} valid, 0 invalid", objects.len())),
        "{text}"
    );

    // The validators must see mistakes, or the check above proves nothing.
    let base = rendered("istio-manifests");
    let find = |kind: &str| base.iter().find(|o| o["kind"] == kind).unwrap().clone();
    let mut deployment = find("Deployment");
    deployment["spec"]["replicas"] = json!("two");
    let mut envoy_filter = find("EnvoyFilter");
    envoy_filter["spec"]["configPatches"][0]["applyTo"] = json!("HTTP_FILTERS");
    let mut wasm_plugin = rendered("istio-manifests/wasmplugin")[0].clone();
    wasm_plugin["spec"]["failStrategy"] = json!("FAIL_SOMETIMES");
    let mut policy =
        documents(&root().join("istio-manifests/examples/ratelimitpolicy.yaml"))[0].clone();
    policy["spec"]["scope"] = json!(7);
    let crds: Vec<(String, Value)> = base
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| ("crd".to_owned(), o.clone()))
        .collect();
    let mut broken: Vec<(String, Value)> = vec![
        ("broken".into(), deployment),
        ("broken".into(), envoy_filter),
        ("broken".into(), wasm_plugin),
        ("broken".into(), policy),
    ];
    broken.extend(crds);
    let (ok, text) = schema_check(dir.path(), &broken);
    assert!(!ok, "{text}");
    for expected in [
        "spec/replicas must be integer",
        "applyTo must be equal to one of the allowed values",
        "failStrategy must be equal to one of the allowed values",
        "scope",
        "4 invalid",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}
