//! RBAC: exactly what the controller needs (`kubernetes::REQUIRED_PERMISSIONS`), for the
//! identity the Deployment runs as, in the rendered install.

use std::collections::BTreeSet;

use kube::Resource;
use meshward_control_plane::kubernetes::crds::{
    AuthPolicy, IdempotencyPolicy, RateLimitPolicy, RuntimeTuning, TracePolicy,
};
use meshward_control_plane::kubernetes::REQUIRED_PERMISSIONS;
use serde_json::{json, Value};

use crate::objects::rendered;
use crate::support::{one, str_at};

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
    let docs = rendered("istio-manifests");
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
