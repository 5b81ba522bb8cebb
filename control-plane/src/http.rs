//! The HTTP endpoint: `/status` (JSON: policies, refused files, workloads with their
//! replica counts, per proxy the pushed and ACKed versions and NACK messages),
//! `/metrics` (Prometheus), `/modules/<module>.wasm` (the wasm modules Envoy fetches as
//! a remote data source, with their sha256 in `x-sha256`) and `/healthz`; runtime
//! tuning's `/tuning/v1/...` routes come from [`crate::tuning::http`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::xds::world::World;

#[derive(Clone)]
pub struct HttpState {
    pub world: Arc<World>,
    /// module file name (`meshward_ratelimit.wasm`) → (bytes, sha256 hex).
    pub modules: Arc<BTreeMap<String, (Vec<u8>, String)>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/delivery", get(delivery))
        .route("/metrics", get(metrics))
        .route("/modules/{file}", get(module))
        .merge(crate::tuning::http::routes())
        .with_state(state)
}

/// This replica's view of every policy's delivery, for the status writer (peers.rs).
async fn delivery(State(state): State<HttpState>) -> Json<crate::kubernetes::peers::ReplicaView> {
    Json(crate::kubernetes::peers::local_view(&state.world))
}

async fn status(State(state): State<HttpState>) -> Json<serde_json::Value> {
    Json(state.world.status())
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.world.metrics.encode(),
    )
        .into_response()
}

async fn module(State(state): State<HttpState>, Path(file): Path<String>) -> Response {
    match state.modules.get(&file) {
        Some((bytes, sha256)) => (
            [
                (header::CONTENT_TYPE, "application/wasm".to_owned()),
                (header::HeaderName::from_static("x-sha256"), sha256.clone()),
            ],
            bytes.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no module {file}\n")).into_response(),
    }
}

/// Reads `*.wasm` from `dir` with their sha256.
pub fn load_modules(dir: &PathBuf) -> Result<BTreeMap<String, (Vec<u8>, String)>, String> {
    let mut modules = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read wasm directory {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let sha256 = crate::xds::resources::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            modules.insert(name.to_owned(), (bytes, sha256));
        }
    }
    Ok(modules)
}
