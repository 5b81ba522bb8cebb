//! Incremental (Delta) xDS streams (ADS `DeltaAggregatedResources` and ECDS
//! `DeltaExtensionConfigs`).
//!
//! Per type URL the stream tracks the subscribed names and the version the proxy has of
//! each (`initial_resource_versions` on the first request seeds it). Only resources
//! whose version changed are sent; a subscribed resource that stops existing is listed
//! in `removed_resources`; a NACKed (name, version) is never sent again (unless the
//! proxy is still fetching its wasm module: then it is sent again later,
//! [`super::code_cache`]); ACKs are recorded and not answered. One response is in
//! flight at a time and it carries at most one changed resource, so a NACK always names
//! the resource at fault.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::code_cache::{surfaced, CodeCache, Verdict};
use super::next_nonce;
use super::resources::{pairs, resend, Built};
use super::stream::{self, Protocol, Responses};
use super::types;
use super::world::{NodeInfo, World};
use envoy_types::pb::envoy::config::core::v3::Node;

struct Pending {
    nonce: String,
    at: Instant,
    resources: Vec<Built>,
}

#[derive(Default)]
struct TypeState {
    subscribed: BTreeSet<String>,
    /// What the proxy has: name → version.
    known: HashMap<String, String>,
    pending: Vec<Pending>,
    rejected: HashSet<(String, String)>,
    /// The modules the proxy has; versions NACKed for a module it is still fetching.
    cache: CodeCache,
}

pub type ResponseStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

/// Serves one stream until the proxy or the server ends it.
pub fn serve(world: Arc<World>, requests: Streaming<DeltaDiscoveryRequest>) -> ResponseStream {
    stream::serve::<Delta>(world, requests)
}

struct Delta;

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    type State = TypeState;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn type_url(request: &DeltaDiscoveryRequest) -> &str {
        &request.type_url
    }

    fn handle(
        world: &World,
        node: &NodeInfo,
        state: &mut TypeState,
        request: &DeltaDiscoveryRequest,
        first: bool,
    ) -> bool {
        handle_request(world, node, state, request, first);
        true
    }

    fn retry_at(state: &TypeState, now: Instant) -> Option<Instant> {
        state.cache.next_wake(now)
    }

    async fn send(
        world: &World,
        node: &NodeInfo,
        type_url: &str,
        state: &mut TypeState,
        tx: &Responses<DeltaDiscoveryResponse>,
    ) -> bool {
        send_changes(world, node, type_url, state, tx).await
    }
}

fn handle_request(
    world: &World,
    node: &NodeInfo,
    state: &mut TypeState,
    request: &DeltaDiscoveryRequest,
    first: bool,
) {
    // Only names this server knows are kept: a client cannot grow the state at will.
    let known_name = |name: &String| types::known_name(&request.type_url, name, node);
    if first {
        for (name, version) in request
            .initial_resource_versions
            .iter()
            .filter(|(n, _)| known_name(n))
        {
            state.known.insert(name.clone(), version.clone());
        }
    }
    if !request.response_nonce.is_empty() {
        if let Some(at) = state
            .pending
            .iter()
            .position(|p| p.nonce == request.response_nonce)
        {
            let pending = state.pending.remove(at);
            match &request.error_detail {
                Some(error) => {
                    for built in &pending.resources {
                        // The proxy kept its previous version, which we do not know
                        // — unless a newer version is already on its way.
                        if state.known.get(&built.name) == Some(&built.version) {
                            state.known.remove(&built.name);
                        }
                    }
                    // A module the proxy is still fetching: sent again later, not
                    // rejected.
                    let verdict = match pending.resources.as_slice() {
                        [only] => state.cache.on_nack(&error.message, only, Instant::now()),
                        _ => Verdict::Rejected { gave_up: None },
                    };
                    match verdict {
                        Verdict::Fetching { attempt, delay } => world.on_module_fetch(
                            node,
                            &pairs(&pending.resources),
                            &error.message,
                            attempt,
                            delay,
                        ),
                        Verdict::Rejected { gave_up } => {
                            for built in &pending.resources {
                                state
                                    .rejected
                                    .insert((built.name.clone(), built.version.clone()));
                            }
                            world.on_nack(
                                node,
                                &pairs(&pending.resources),
                                &surfaced(&error.message, gave_up),
                            );
                        }
                    }
                }
                None => {
                    state.cache.on_ack(&pending.resources, Instant::now());
                    types::on_ack(
                        world,
                        &request.type_url,
                        node,
                        &pairs(&pending.resources),
                        Some(pending.at.elapsed().as_secs_f64()),
                    );
                }
            }
        }
    }
    state.subscribed.extend(
        request
            .resource_names_subscribe
            .iter()
            .filter(|n| known_name(n))
            .cloned(),
    );
    for name in &request.resource_names_unsubscribe {
        state.subscribed.remove(name);
        state.known.remove(name);
    }
}

async fn send_changes(
    world: &World,
    node: &NodeInfo,
    type_url: &str,
    state: &mut TypeState,
    tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) -> bool {
    // One response in flight, one changed resource per response: Envoy accepts or
    // rejects a Delta response as a whole too, so this is what makes a NACK name
    // exactly one resource version and lets the others keep updating.
    if !state.pending.is_empty() {
        return true;
    }
    let now = Instant::now();
    let mut resources = Vec::new();
    let mut removed = Vec::new();
    for name in &state.subscribed {
        match types::resource(world, type_url, name, node) {
            Some(built) => {
                let current = state.known.get(name) == Some(&built.version);
                let withheld = state
                    .rejected
                    .contains(&(name.clone(), built.version.clone()))
                    || state.cache.held(&built, now);
                if !current && !withheld && resources.is_empty() {
                    resources.push(built);
                }
            }
            None if state.known.contains_key(name) => removed.push(name.clone()),
            None => {}
        }
    }
    if resources.is_empty() && removed.is_empty() {
        return true;
    }
    for name in &removed {
        state.known.remove(name);
    }
    let sent = pairs(&resources);
    for (name, version) in &sent {
        state.known.insert(name.clone(), version.clone());
    }
    for built in &mut resources {
        if let Some(resent) = state
            .cache
            .attempt(built)
            .and_then(|attempt| resend(built, attempt))
        {
            *built = resent;
        }
        if state.cache.resending(built) {
            world.metrics.module_fetch_retries.inc();
        }
    }
    let pending = resources.clone();
    let nonce = next_nonce();
    let response = DeltaDiscoveryResponse {
        system_version_info: sent
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        resources: resources
            .into_iter()
            .map(|b| Resource {
                name: b.name,
                version: b.version,
                resource: Some(b.any),
                ..Default::default()
            })
            .collect(),
        type_url: type_url.into(),
        removed_resources: removed,
        nonce: nonce.clone(),
        ..Default::default()
    };
    types::on_push(world, type_url, node, &sent);
    state.pending.push(Pending {
        nonce,
        at: Instant::now(),
        resources: pending,
    });
    // A proxy that never answers must not grow this without bound.
    if state.pending.len() > 32 {
        state.pending.remove(0);
    }
    tx.send(Ok(response)).await.is_ok()
}
