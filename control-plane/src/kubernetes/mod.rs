//! Kubernetes mode: the `meshward.io/v1alpha1` custom resources ([`crds`]) reconciled
//! into the policy model by a kube-rs controller ([`controller`]), with status
//! conditions ([`status`], from what the proxies ACKed: [`delivery`], summed over the
//! control-plane replicas: [`peers`]) written by one replica at a time ([`lease`]), and
//! Pod memory limits for runtime tuning ([`pods`]).

pub mod controller;
pub mod crds;
pub mod delivery;
pub mod lease;
pub mod peers;
pub mod pods;
pub mod reconcile;
pub mod resource;
pub mod status;

/// Every API permission the controller uses, as (API group, resource, verbs, whether it
/// is granted in the control plane's own namespace only). The RBAC in
/// `istio-manifests/control-plane/` grants exactly these (a test compares them).
pub const REQUIRED_PERMISSIONS: &[(&str, &str, &[&str], bool)] = &[
    (
        "meshward.io",
        "ratelimitpolicies",
        &["get", "list", "watch"],
        false,
    ),
    (
        "meshward.io",
        "authpolicies",
        &["get", "list", "watch"],
        false,
    ),
    (
        "meshward.io",
        "idempotencypolicies",
        &["get", "list", "watch"],
        false,
    ),
    (
        "meshward.io",
        "tracepolicies",
        &["get", "list", "watch"],
        false,
    ),
    (
        "meshward.io",
        "runtimetunings",
        &["get", "list", "watch"],
        false,
    ),
    (
        "meshward.io",
        "ratelimitpolicies/status",
        &["get", "patch", "update"],
        false,
    ),
    (
        "meshward.io",
        "authpolicies/status",
        &["get", "patch", "update"],
        false,
    ),
    (
        "meshward.io",
        "idempotencypolicies/status",
        &["get", "patch", "update"],
        false,
    ),
    (
        "meshward.io",
        "tracepolicies/status",
        &["get", "patch", "update"],
        false,
    ),
    (
        "meshward.io",
        "runtimetunings/status",
        &["get", "patch", "update"],
        false,
    ),
    ("", "pods", &["get", "list", "watch"], false),
    ("", "events", &["create", "patch"], false),
    ("events.k8s.io", "events", &["create", "patch"], false),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
        true,
    ),
];
