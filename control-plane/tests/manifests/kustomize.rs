//! Rendering the kustomizations of istio-manifests/ without a cluster.
//!
//! No registry this project may use ships kustomize (Debian's kubernetes-client is
//! kubectl 1.20, whose kustomize v2 lacks `patches`), so this is a small renderer for
//! exactly the subset the manifests use — `resources` (files and folders), `namespace`,
//! `patches` (inline JSON 6902 with a target) and `images` — that refuses every other
//! field rather than guessing. Where `kubectl` is installed (its built-in kustomize), the
//! tests also render with `kubectl kustomize` and require the same objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::documents;

/// Kinds the namespace transformer leaves alone (cluster-scoped).
const CLUSTER_SCOPED: [&str; 5] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
];

/// The objects a kustomization folder renders to, and every file it read.
pub struct Rendered {
    pub objects: Vec<Value>,
    pub files: BTreeSet<PathBuf>,
}

pub fn render(dir: &Path) -> Result<Rendered, String> {
    let mut files = BTreeSet::new();
    let objects = build(dir, &mut files)?;
    Ok(Rendered { objects, files })
}

fn build(dir: &Path, files: &mut BTreeSet<PathBuf>) -> Result<Vec<Value>, String> {
    let path = dir.join("kustomization.yaml");
    let docs = documents(&path);
    let kustomization = docs
        .first()
        .ok_or_else(|| format!("{}: empty", path.display()))?;
    files.insert(path.canonicalize().unwrap_or_else(|_| path.clone()));
    let at = path.display();
    for key in kustomization
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if ![
            "apiVersion",
            "kind",
            "resources",
            "namespace",
            "patches",
            "images",
        ]
        .contains(&key.as_str())
        {
            return Err(format!(
                "{at}: field {key} is not supported by this renderer"
            ));
        }
    }
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().into_iter().flatten() {
        let name = resource
            .as_str()
            .ok_or_else(|| format!("{at}: resources: not a string"))?;
        let target = dir.join(name);
        if target.is_dir() {
            objects.extend(build(&target, files)?);
        } else if target.is_file() {
            // kustomize's load restrictor: files only from inside the folder.
            if name.contains("..") {
                return Err(format!("{at}: {name}: files must be inside the folder"));
            }
            objects.extend(documents(&target));
            files.insert(target.canonicalize().unwrap_or(target));
        } else {
            return Err(format!("{at}: resource {name} not found"));
        }
    }
    if let Some(namespace) = kustomization["namespace"].as_str() {
        for object in &mut objects {
            let kind = object["kind"].as_str().unwrap_or_default();
            if kind.ends_with("Binding") {
                // kustomize also rewrites subjects here; not needed, not imitated.
                return Err(format!("{at}: namespace over a {kind} is not supported"));
            }
            if !CLUSTER_SCOPED.contains(&kind) {
                object["metadata"]["namespace"] = Value::from(namespace);
            }
        }
    }
    for patch in kustomization["patches"].as_array().into_iter().flatten() {
        apply_patch(&mut objects, patch).map_err(|e| format!("{at}: {e}"))?;
    }
    for image in kustomization["images"].as_array().into_iter().flatten() {
        set_image(&mut objects, image).map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(objects)
}

fn matches(object: &Value, target: &Value) -> bool {
    let (group, version) = match object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
    {
        Some((group, version)) => (group, version),
        None => ("", object["apiVersion"].as_str().unwrap_or_default()),
    };
    let want = |field: &str, have: &str| target[field].as_str().is_none_or(|w| w == have);
    want("group", group)
        && want("version", version)
        && want("kind", object["kind"].as_str().unwrap_or_default())
        && want(
            "name",
            object["metadata"]["name"].as_str().unwrap_or_default(),
        )
        && want(
            "namespace",
            object["metadata"]["namespace"].as_str().unwrap_or_default(),
        )
}

fn apply_patch(objects: &mut [Value], patch: &Value) -> Result<(), String> {
    let target = &patch["target"];
    let text = patch["patch"]
        .as_str()
        .ok_or("patches: only inline `patch` with a `target` is supported")?;
    let ops: Value = serde_yaml::from_str(text).map_err(|e| format!("patch: {e}"))?;
    let ops = ops
        .as_array()
        .ok_or("patch: only JSON 6902 (a list of operations) is supported")?;
    let mut hits = 0;
    for object in objects.iter_mut().filter(|o| matches(o, target)) {
        hits += 1;
        for op in ops {
            json_patch(object, op)?;
        }
    }
    if hits == 0 {
        return Err(format!("patch target {target} matches nothing"));
    }
    Ok(())
}

/// One RFC 6902 operation (add, replace, remove).
fn json_patch(object: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("op without path")?;
    let (parent_path, last) = path.rsplit_once('/').ok_or(format!("bad path {path}"))?;
    let last = last.replace("~1", "/").replace("~0", "~");
    let parent = object
        .pointer_mut(parent_path)
        .ok_or(format!("{path}: parent not found"))?;
    let value = op.get("value").cloned();
    match (op["op"].as_str(), parent) {
        (Some("add" | "replace"), Value::Object(map)) => {
            let value = value.ok_or(format!("{path}: no value"))?;
            if op["op"] == "replace" && !map.contains_key(&last) {
                return Err(format!("replace {path}: nothing there"));
            }
            map.insert(last, value);
        }
        (Some("remove"), Value::Object(map)) => {
            map.remove(&last)
                .ok_or(format!("remove {path}: nothing there"))?;
        }
        (Some(kind), Value::Array(list)) => {
            let index = if last == "-" {
                list.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("{path}: index"))?
            };
            match kind {
                "add" if index <= list.len() => {
                    list.insert(index, value.ok_or(format!("{path}: no value"))?)
                }
                "replace" if index < list.len() => {
                    list[index] = value.ok_or(format!("{path}: no value"))?
                }
                "remove" if index < list.len() => {
                    list.remove(index);
                }
                _ => return Err(format!("{kind} {path}: out of range")),
            }
        }
        (kind, _) => return Err(format!("{kind:?} {path}: not supported here")),
    }
    Ok(())
}

/// kustomize's `images`: containers whose image name (without tag or digest) is `name`.
fn set_image(objects: &mut [Value], image: &Value) -> Result<(), String> {
    let name = image["name"].as_str().ok_or("images: no name")?;
    for object in objects.iter_mut() {
        for list in ["containers", "initContainers"] {
            let containers = object
                .pointer_mut(&format!("/spec/template/spec/{list}"))
                .and_then(Value::as_array_mut);
            for container in containers.into_iter().flatten() {
                let current = container["image"].as_str().unwrap_or_default().to_owned();
                let (current_name, current_tag) = match current.split_once('@') {
                    Some((n, digest)) => (n.to_owned(), format!("@{digest}")),
                    None => match current.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                        Some((n, tag)) => (n.to_owned(), format!(":{tag}")),
                        None => (current.clone(), String::new()),
                    },
                };
                if current_name != name {
                    continue;
                }
                let new_name = image["newName"].as_str().unwrap_or(&current_name);
                let tag = match (image["digest"].as_str(), image["newTag"].as_str()) {
                    (Some(digest), _) => format!("@{digest}"),
                    (None, Some(tag)) => format!(":{tag}"),
                    (None, None) => current_tag,
                };
                container["image"] = Value::from(format!("{new_name}{tag}"));
            }
        }
    }
    Ok(())
}

/// `kubectl kustomize DIR`, when kubectl is installed (None otherwise).
pub fn kubectl_kustomize(dir: &Path) -> Option<Result<Vec<Value>, String>> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        // Purely local: no cluster, no kubeconfig needed.
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .ok()?;
    if !out.status.success() {
        return Some(Err(format!(
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs: Result<Vec<Value>, String> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).map_err(|e: serde_yaml::Error| e.to_string()))
        .collect();
    Some(docs.map(|d| d.into_iter().filter(|v: &Value| !v.is_null()).collect()))
}

/// Numbers as YAML parsers disagree on them: `10000.0` and `10000` are one value.
fn normalize(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        Value::Object(map) => map.values_mut().for_each(normalize),
        _ => {}
    }
}

/// Objects in a stable order with numbers normalized, for comparing two renderings.
pub fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    objects.iter_mut().for_each(normalize);
    objects.sort_by_key(|o| {
        (
            o["apiVersion"].to_string(),
            o["kind"].to_string(),
            o["metadata"]["namespace"].to_string(),
            o["metadata"]["name"].to_string(),
        )
    });
    objects
}

#[test]
fn json_patch_and_images_behave_like_kustomize() {
    let mut object = serde_json::json!({"metadata": {"annotations": {"a/b": "x"}}, "l": [1, 2, 3]});
    for op in [
        serde_json::json!({"op": "replace", "path": "/metadata/annotations/a~1b", "value": "y"}),
        serde_json::json!({"op": "remove", "path": "/l/1"}),
        serde_json::json!({"op": "add", "path": "/l/-", "value": 9}),
    ] {
        json_patch(&mut object, &op).unwrap();
    }
    assert_eq!(
        object,
        serde_json::json!({"metadata": {"annotations": {"a/b": "y"}}, "l": [1, 3, 9]})
    );
    assert!(json_patch(
        &mut object,
        &serde_json::json!({"op": "replace", "path": "/nope", "value": 1})
    )
    .is_err());
    let mut objects = vec![
        serde_json::json!({"spec": {"template": {"spec": {"containers": [
            {"image": "meshward/control-plane:0.1.0"}, {"image": "other:1"}, {"image": "host:5000/meshward/control-plane"}
        ]}}}}),
    ];
    set_image(
        &mut objects,
        &serde_json::json!({"name": "meshward/control-plane", "newTag": "dev"}),
    )
    .unwrap();
    let images: Vec<&str> = objects[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            "meshward/control-plane:dev",
            "other:1",
            "host:5000/meshward/control-plane"
        ]
    );
}
