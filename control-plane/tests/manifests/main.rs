//! The Kubernetes manifests (istio-manifests/, e2e/kind/), checked without a cluster (the
//! generated CRDs have their own drift test, tests/crds.rs):
//!
//! - objects.rs: every file parses and is accounted for; every kustomization renders
//!   (a small renderer here, compared with `kubectl kustomize` where installed);
//!   built-in kinds round-trip through the k8s-openapi types (no unknown field); every
//!   object validates against its published schema (npm validators, .tools/node);
//! - examples.rs: the example custom resources are what the controller accepts, their
//!   filter configurations what the filters accept (real Envoy), the DestinationRule
//!   hashes on the idempotency key;
//! - rbac.rs: exactly `kubernetes::REQUIRED_PERMISSIONS` for the Deployment's account;
//! - mesh.rs: the pieces of the install agree (EnvoyFilters, bootstrap override,
//!   Deployment, Service, PDB, sample app, image), and every EnvoyFilter patch passes
//!   `envoy --mode validate` inside a sidecar-shaped bootstrap;
//! - global_state.rs: the global-state overlay (Valkey, the control plane's Redis and
//!   service flags, the bootstrap override with `meshward-rls`/`meshward-store`) agrees
//!   with the base and the filters, its override passes `envoy --mode validate` with the
//!   mesh patches, and the binary serves the RLS and the store with those flags;
//! - sidecar.rs: that sidecar run for real, without a control plane (fail open/closed as
//!   documented) and with the control plane binary started with the Deployment's flags;
//! - wasmplugin.rs: the WasmPlugin install mirrors the EnvoyFilters, configs accepted;
//! - dashboard.rs: the Grafana dashboard is current Grafana 10+ JSON;
//! - kustomize.rs: the renderer.
//!
//! Envoy comes from `.venv/bin/envoy` (or `MESHWARD_ENVOY`), the modules from
//! `target/meshward-wasm/`, the validators from `.tools/node/`; without them these tests
//! fail and say which command to run.

mod dashboard;
mod examples;
mod global_state;
mod kustomize;
mod mesh;
mod objects;
mod rbac;
mod sidecar;
mod support;
mod wasmplugin;
