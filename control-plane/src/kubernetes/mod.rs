//! Policies as Kubernetes custom resources: their types and schemas ([`crds`]), defined
//! once in Rust; `cargo xtask crds` writes them to `istio-manifests/crds/`. They convert
//! into the same policy model as the file source, through the same checks.

pub mod crds;
