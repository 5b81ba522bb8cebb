//! The example custom resources are what the controller accepts (same types, same
//! checks, and the strict file format), each filter configuration in them is accepted by
//! the filter itself (real Envoy), and the Istio examples agree with the filters.

use std::collections::BTreeSet;

use kube::Resource;
use meshward_control_plane::kubernetes::crds::{
    AuthPolicy, IdempotencyPolicy, RateLimitPolicy, RuntimeTuning, ToPolicy, TracePolicy,
};
use meshward_control_plane::policy::file_source::parse_file;
use meshward_control_plane::policy::model::Kind;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::support::{
    documents, envoy_binary, listener, root, router, sidecar_node, str_at, typed, validate,
    wasm_module, yaml_files, WASM_FILTER,
};

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
    // examples/istio/ holds Istio resources (destination_rule_* below).
    for file in yaml_files(&dir, &["istio"]) {
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
pub fn wasm_listener_bootstrap(filters: &[(Kind, Value)]) -> Value {
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

/// The DestinationRule example hashes on the header the idempotency filter reads, for
/// the workload the IdempotencyPolicy example selects.
#[test]
fn destination_rule_gives_idempotency_key_affinity() {
    let rule =
        &documents(&root().join("istio-manifests/examples/istio/destinationrule-idempotency.yaml"))
            [0];
    let policy = &documents(&root().join("istio-manifests/examples/idempotencypolicy.yaml"))[0];
    let header = str_at(
        rule,
        "/spec/trafficPolicy/loadBalancer/consistentHash/httpHeaderName",
    );
    // The filter's key header (filters/idempotency/README.md); HTTP names are
    // case-insensitive.
    assert!(header.eq_ignore_ascii_case("idempotency-key"), "{header}");
    let app = str_at(policy, "/spec/selector/matchLabels/app");
    let namespace = str_at(policy, "/metadata/namespace");
    assert_eq!(
        str_at(rule, "/spec/host"),
        format!("{app}.{namespace}.svc.cluster.local")
    );
    assert_eq!(str_at(rule, "/metadata/namespace"), namespace);
}
