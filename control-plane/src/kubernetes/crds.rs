//! The `meshward.io/v1alpha1` custom resources: `RateLimitPolicy`, `AuthPolicy`,
//! `IdempotencyPolicy`, `TracePolicy` (the same fields as a policy file) and
//! `RuntimeTuning`. Doc comments become the schema descriptions `kubectl explain`
//! prints; printer columns show `Accepted` and `Programmed` at a glance.

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::model::{Kind, Policy};
use crate::policy::validate::{build_policy, Parts};
use crate::tuning::spec::TuningSettings;

/// Which workloads a policy applies to, like Istio's `selector`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels the workload's pods must all carry. Empty: every workload of the namespace
    /// (the namespace default, used when no more specific policy selects a workload).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Only these workloads (by name). A policy naming its workload is the most specific.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<String>,
}

/// One observed condition (`Accepted`, `Programmed`), as in Kubernetes' metav1.Condition.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Accepted` (the policy is valid) or `Programmed` (the selected proxies ACKed it).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason in CamelCase.
    pub reason: String,
    /// What is wrong, or how many proxies ACKed; NACK messages appear here.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// What the control plane reports about a policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PolicyCondition>,
}

/// Any JSON object: the filter's own configuration, validated by the filter.
fn filter_config(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The filter's JSON configuration (see its README); the filter validates it, and a rejection shows in the Programmed condition.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Rate limits for the selected workloads (the meshward ratelimit filter).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "meshward.io",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    doc = "Rate limits for the workloads its selector picks (meshward ratelimit filter).",
    namespaced,
    status = "PolicyStatus",
    shortname = "mrl",
    category = "meshward",
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicySpec {
    #[serde(default)]
    pub selector: WorkloadSelector,
    /// `perReplica` (default): every sidecar enforces the figures as written. `workload`:
    /// the figures are one budget, split over the workload's connected replicas.
    /// `global`: exact across replicas, decided by the rate-limit service (Redis/Valkey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(perReplica|workload|global)$"))]
    pub scope: Option<String>,
    #[schemars(schema_with = "filter_config")]
    pub config: Value,
}

/// JWT authentication and claim-based authorization for the selected workloads (the
/// meshward authz filter).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "meshward.io",
    version = "v1alpha1",
    kind = "AuthPolicy",
    doc = "JWT authentication and claim rules for the workloads its selector picks (meshward authz filter).",
    namespaced,
    status = "PolicyStatus",
    shortname = "mauth",
    category = "meshward",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuthPolicySpec {
    #[serde(default)]
    pub selector: WorkloadSelector,
    #[schemars(schema_with = "filter_config")]
    pub config: Value,
}

/// `Idempotency-Key` handling for the selected workloads (the meshward idempotency filter).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "meshward.io",
    version = "v1alpha1",
    kind = "IdempotencyPolicy",
    doc = "Idempotency-Key handling for the workloads its selector picks (meshward idempotency filter).",
    namespaced,
    status = "PolicyStatus",
    shortname = "midem",
    category = "meshward",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyPolicySpec {
    #[serde(default)]
    pub selector: WorkloadSelector,
    #[schemars(schema_with = "filter_config")]
    pub config: Value,
}

/// Trace-context propagation for the selected workloads (the meshward trace-inject filter).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "meshward.io",
    version = "v1alpha1",
    kind = "TracePolicy",
    doc = "Trace-context propagation for the workloads its selector picks (meshward trace-inject filter).",
    namespaced,
    status = "PolicyStatus",
    shortname = "mtrace",
    category = "meshward",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TracePolicySpec {
    #[serde(default)]
    pub selector: WorkloadSelector,
    #[schemars(schema_with = "filter_config")]
    pub config: Value,
}

/// Go runtime tuning (GOMEMLIMIT, GOGC) computed per selected workload and pushed to the
/// application's agent.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "meshward.io",
    version = "v1alpha1",
    kind = "RuntimeTuning",
    doc = "Go runtime tuning (GOMEMLIMIT, GOGC) for the workloads its selector picks.",
    namespaced,
    status = "PolicyStatus",
    shortname = "mrt",
    category = "meshward",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeTuningSpec {
    #[serde(default)]
    pub selector: WorkloadSelector,
    #[serde(flatten)]
    pub settings: TuningSettings,
}

/// Every CRD as (file name, YAML), in a stable order: what `cargo xtask crds` writes to
/// `istio-manifests/crds/` and what the drift test compares with.
pub fn all_crds() -> Result<Vec<(String, String)>, String> {
    let crds = [
        RateLimitPolicy::crd(),
        AuthPolicy::crd(),
        IdempotencyPolicy::crd(),
        TracePolicy::crd(),
        RuntimeTuning::crd(),
    ];
    crds.iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_yaml::to_string(crd).map_err(|e| format!("{name}: {e}"))?;
            Ok((
                format!("{name}.yaml"),
                format!("# Generated by `cargo xtask crds` from control-plane/src/kubernetes/crds.rs; do not edit.\n{yaml}"),
            ))
        })
        .collect()
}

/// `istio-manifests/crds/kustomization.yaml`, written next to the CRDs by `cargo xtask
/// crds`: the folder as one kustomize resource (istio-manifests/base/ includes it; a
/// kustomization may name files only inside its own folder).
pub fn crds_kustomization() -> Result<(String, String), String> {
    let mut yaml = String::from(
        "# Generated by `cargo xtask crds` from control-plane/src/kubernetes/crds.rs; do not edit.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for (file, _) in all_crds()? {
        yaml.push_str(&format!("  - {file}\n"));
    }
    Ok(("kustomization.yaml".to_owned(), yaml))
}

fn parts(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    selector: &WorkloadSelector,
    scope: Option<String>,
    config: &Value,
) -> Parts {
    Parts {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        match_labels: selector.match_labels.clone(),
        workloads: selector.workloads.clone(),
        scope,
        config: config.clone(),
    }
}

fn source(kind: Kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}/{}",
        kind.document_kind(),
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// A custom resource as a policy of the shared model (the same checks as a file).
pub trait ToPolicy {
    fn to_policy(&self) -> Result<Policy, String>;
}

macro_rules! to_policy {
    ($resource:ty, $kind:expr, $scope:expr) => {
        impl ToPolicy for $resource {
            fn to_policy(&self) -> Result<Policy, String> {
                let at = source($kind, &self.metadata);
                let scope: fn(&Self) -> Option<String> = $scope;
                build_policy(
                    parts(
                        $kind,
                        &self.metadata,
                        &self.spec.selector,
                        scope(self),
                        &self.spec.config,
                    ),
                    &at,
                    &at,
                )
            }
        }
    };
}

to_policy!(RateLimitPolicy, Kind::RateLimit, |r| r.spec.scope.clone());
to_policy!(AuthPolicy, Kind::Authz, |_| None);
to_policy!(IdempotencyPolicy, Kind::Idempotency, |_| None);
to_policy!(TracePolicy, Kind::Trace, |_| None);

impl ToPolicy for RuntimeTuning {
    fn to_policy(&self) -> Result<Policy, String> {
        let at = source(Kind::Tuning, &self.metadata);
        let config = serde_json::to_value(&self.spec.settings).map_err(|e| format!("{at}: {e}"))?;
        build_policy(
            parts(
                Kind::Tuning,
                &self.metadata,
                &self.spec.selector,
                None,
                &config,
            ),
            &at,
            &at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Scope;

    #[test]
    fn a_custom_resource_and_a_policy_file_mean_the_same() {
        let resource: RateLimitPolicy = serde_yaml::from_str(
            r#"
apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders-limit, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  scope: workload
  config: {rules: [{name: r, limit: {algorithm: tokenBucket, requests: 10, per: 1s}}]}
"#,
        )
        .unwrap();
        let from_crd = resource.to_policy().unwrap();
        let text = serde_yaml::to_string(&resource).unwrap();
        let from_file = crate::policy::file_source::parse_file("p.yaml", &text)
            .unwrap()
            .remove(0);
        assert_eq!(from_crd.kind, Kind::RateLimit);
        assert_eq!(from_crd.scope, Scope::Workload);
        assert_eq!(
            (
                from_crd.namespace.as_str(),
                from_crd.name.as_str(),
                &from_crd.selector,
                &from_crd.config
            ),
            (
                from_file.namespace.as_str(),
                from_file.name.as_str(),
                &from_file.selector,
                &from_file.config
            )
        );
        assert_eq!(from_crd.source, "RateLimitPolicy/shop/orders-limit");
    }

    #[test]
    fn the_same_checks_refuse_the_same_mistakes() {
        let mut resource = RateLimitPolicy::new(
            "Bad_Name",
            RateLimitPolicySpec {
                selector: WorkloadSelector::default(),
                scope: Some("everywhere".into()),
                config: serde_json::json!({}),
            },
        );
        let err = resource.to_policy().unwrap_err();
        assert!(
            err.contains("metadata.name: \"Bad_Name\" must be a DNS label"),
            "{err}"
        );
        resource.metadata.name = Some("ok".into());
        let err = resource.to_policy().unwrap_err();
        assert!(
            err.contains("spec.scope: expected perReplica, workload or global"),
            "{err}"
        );
    }

    #[test]
    fn a_runtime_tuning_resource_is_a_tuning_policy() {
        let resource: RuntimeTuning = serde_yaml::from_str(
            r#"
apiVersion: meshward.io/v1alpha1
kind: RuntimeTuning
metadata: {name: orders-gc, namespace: shop, generation: 3}
spec:
  selector: {matchLabels: {app: orders}}
  memoryLimitRatio: 0.85
  gogc: {adaptive: {min: 50, max: 400, step: 20}}
"#,
        )
        .unwrap();
        let policy = resource.to_policy().unwrap();
        assert_eq!(policy.kind, Kind::Tuning);
        assert_eq!(policy.config["gogc"]["adaptive"]["step"], 20);
        let mut bad = resource.clone();
        bad.spec.settings.memory_limit_ratio = Some(2.0);
        let err = bad.to_policy().unwrap_err();
        assert!(
            err.starts_with("RuntimeTuning/shop/orders-gc: spec.memoryLimitRatio: 2 is outside"),
            "{err}"
        );
    }

    #[test]
    fn crds_have_descriptions_printer_columns_and_a_status_subresource() {
        let crds = all_crds().unwrap();
        let names: Vec<&str> = crds.iter().map(|(file, _)| file.as_str()).collect();
        assert_eq!(
            names,
            [
                "ratelimitpolicies.meshward.io.yaml",
                "authpolicies.meshward.io.yaml",
                "idempotencypolicies.meshward.io.yaml",
                "tracepolicies.meshward.io.yaml",
                "runtimetunings.meshward.io.yaml",
            ]
        );
        let rate = &crds[0].1;
        assert!(rate.contains("status: {}"), "status subresource: {rate}");
        assert!(rate.contains("name: Programmed"));
        assert!(
            rate.contains("the figures are one budget"),
            "field descriptions"
        );
        assert!(rate.contains("x-kubernetes-preserve-unknown-fields: true"));
    }
}
