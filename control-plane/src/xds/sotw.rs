//! State-of-the-world xDS streams (ADS `StreamAggregatedResources` and ECDS
//! `StreamExtensionConfigs`): one task per stream.
//!
//! Protocol, per type URL: the node is read from the first request; every response has
//! a fresh nonce; a request echoing the last nonce is an ACK when it also echoes that
//! response's version (recorded, not answered) or, when it carries `error_detail`, a
//! NACK (message recorded, that version never sent again — unless the proxy is still
//! fetching its wasm module: then it is sent again later, [`super::code_cache`]); a
//! request with an older nonce is stale and ignored; the newest request's
//! `resource_names` is the subscription; a response goes out only when the version (a
//! hash of the content) differs from what the proxy has; resources named before they
//! exist are sent when they appear.
//!
//! One change per response: Envoy accepts or rejects a response as a whole, so a
//! response carries the last ACKed content of every resource plus at most one changed
//! resource, and the next change waits for the answer. A NACK then names exactly one
//! resource version, which is never sent again, while the other resources keep
//! updating. (The first response of a stream carries everything at once; if that is
//! rejected, the resource whose wasm plugin Envoy names is the culprit, and the other
//! changes are retried one by one.)

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::code_cache::{failure, surfaced, CodeCache, Failure, Verdict};
use super::next_nonce;
use super::resources::{pairs, resend, short_hash, Built};
use super::stream::{self, Protocol, Responses};
use super::types;
use super::world::{NodeInfo, World};
use crate::policy::model::Kind;
use envoy_types::pb::envoy::config::core::v3::Node;

struct Sent {
    version: String,
    nonce: String,
    at: Instant,
    resources: Vec<Built>,
    /// ACKed or NACKed: the next change may go out.
    settled: bool,
}

#[derive(Default)]
struct TypeState {
    names: BTreeSet<String>,
    sent: Option<Sent>,
    /// What the proxy has accepted, per resource.
    acked: BTreeMap<String, Built>,
    /// (name, version) the proxy rejected.
    rejected: HashSet<(String, String)>,
    /// The modules the proxy has; versions NACKed for a module it is still fetching.
    cache: CodeCache,
}

pub type ResponseStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

/// Serves one stream until the proxy or the server ends it.
pub fn serve(world: Arc<World>, requests: Streaming<DiscoveryRequest>) -> ResponseStream {
    stream::serve::<Sotw>(world, requests)
}

struct Sotw;

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    type State = TypeState;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn type_url(request: &DiscoveryRequest) -> &str {
        &request.type_url
    }

    fn handle(
        world: &World,
        node: &NodeInfo,
        state: &mut TypeState,
        request: &DiscoveryRequest,
        _first: bool,
    ) -> bool {
        handle_request(world, node, state, request)
    }

    fn retry_at(state: &TypeState, now: Instant) -> Option<Instant> {
        state.cache.next_wake(now)
    }

    async fn send(
        world: &World,
        node: &NodeInfo,
        type_url: &str,
        state: &mut TypeState,
        tx: &Responses<DiscoveryResponse>,
    ) -> bool {
        send_if_changed(world, node, type_url, state, tx).await
    }
}

/// Applies ACK/NACK and the subscription; `false` for a stale request.
fn handle_request(
    world: &World,
    node: &NodeInfo,
    state: &mut TypeState,
    request: &DiscoveryRequest,
) -> bool {
    if !request.response_nonce.is_empty() {
        let Some(sent) = state
            .sent
            .as_mut()
            .filter(|s| s.nonce == request.response_nonce)
        else {
            return false;
        };
        match &request.error_detail {
            Some(_) if sent.settled => {}
            Some(error) => {
                sent.settled = true;
                // The proxy keeps what it had, and says which version that is: what we
                // would compose from the ACKed content, so it is not sent again.
                sent.version = request.version_info.clone();
                let changed: Vec<Built> = sent
                    .resources
                    .iter()
                    .filter(|b| state.acked.get(&b.name).map(|a| &a.version) != Some(&b.version))
                    .cloned()
                    .collect();
                // Exactly one change: that version is rejected for good — unless the
                // proxy is fetching its module (sent again later). Several (a
                // reconnect): Envoy stops at the first filter it cannot create and names
                // its plugin; that one is the culprit (rejected, or held back while its
                // module is fetched) — it must not go out again as it was: Envoy keeps
                // the hash of a configuration it failed to create and would ACK the same
                // bytes unapplied. Without a name, the changes are retried one by one.
                let culprit = match changed.as_slice() {
                    [only] => Some(only),
                    several => culprit(&error.message, several),
                };
                let verdict =
                    culprit.map(|b| (b, state.cache.on_nack(&error.message, b, Instant::now())));
                match verdict {
                    Some((built, Verdict::Fetching { attempt, delay })) => world.on_module_fetch(
                        node,
                        &pairs(std::slice::from_ref(built)),
                        &error.message,
                        attempt,
                        delay,
                    ),
                    Some((built, Verdict::Rejected { gave_up })) => {
                        state
                            .rejected
                            .insert((built.name.clone(), built.version.clone()));
                        world.on_nack(
                            node,
                            &pairs(std::slice::from_ref(built)),
                            &surfaced(&error.message, gave_up),
                        );
                    }
                    None => world.on_nack(node, &pairs(&changed), &error.message),
                }
            }
            // An ACK echoes the version it applied. Envoy clears `error_detail` once a
            // NACK is sent, so its next request (a subscription change) carries the
            // rejected nonce with its previous version: not an ACK.
            None if !sent.settled && request.version_info == sent.version => {
                sent.settled = true;
                for built in &sent.resources {
                    state.acked.insert(built.name.clone(), built.clone());
                }
                state.cache.on_ack(&sent.resources, Instant::now());
                types::on_ack(
                    world,
                    &request.type_url,
                    node,
                    &pairs(&sent.resources),
                    Some(sent.at.elapsed().as_secs_f64()),
                );
            }
            // The in-flight nonce with another version and no error: the proxy did not
            // apply it (Envoy does this for a type it no longer watches). It keeps what
            // it had; settle, or this stream would never send again.
            None if !sent.settled => {
                sent.settled = true;
                sent.version = request.version_info.clone();
            }
            None => {}
        }
    } else if !request.version_info.is_empty() && state.sent.is_none() {
        // A reconnecting proxy says what it has: no need to send that version again.
        state.sent = Some(Sent {
            version: request.version_info.clone(),
            nonce: String::new(),
            at: Instant::now(),
            resources: Vec::new(),
            settled: true,
        });
    }
    state.names = request.resource_names.iter().cloned().collect();
    true
}

/// Among the changes of a rejected response, the one whose wasm plugin (the module of
/// its kind) Envoy's message names.
fn culprit<'b>(message: &str, changed: &'b [Built]) -> Option<&'b Built> {
    let Some(Failure::PluginNotCreated(plugin)) = failure(message) else {
        return None;
    };
    let mut named = changed
        .iter()
        .filter(|b| Kind::from_resource_name(&b.name).is_some_and(|k| k.module() == plugin));
    match (named.next(), named.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// Whether (name, version) is not to be sent: rejected, or waiting for its re-send time.
fn withheld(state: &TypeState, built: &Built, now: Instant) -> bool {
    state
        .rejected
        .contains(&(built.name.clone(), built.version.clone()))
        || state.cache.held(built, now)
}

/// What the next response carries: the ACKed content of every subscribed resource plus
/// at most one change (see the module documentation).
fn compose(world: &World, node: &NodeInfo, type_url: &str, state: &TypeState) -> Vec<Built> {
    let now = Instant::now();
    let current: Vec<Built> = state
        .names
        .iter()
        .filter_map(|name| types::resource(world, type_url, name, node))
        .collect();
    let first_answer =
        state.acked.is_empty() && state.sent.as_ref().is_none_or(|s| s.resources.is_empty());
    if first_answer {
        // A new or reconnecting proxy gets everything at once (it may hold content we
        // never saw, and omitting a resource could read as its removal). If that is
        // rejected, the changes are retried one by one.
        return current
            .into_iter()
            .filter(|b| !withheld(state, b, now))
            .collect();
    }
    let mut out = Vec::with_capacity(current.len());
    let mut changed = false;
    for built in current {
        let acked = state.acked.get(&built.name);
        if let Some(acked) = acked.filter(|a| a.version == built.version) {
            // The bytes the proxy has (a re-send's differ, not its version).
            out.push(acked.clone());
            continue;
        }
        if !withheld(state, &built, now) && !changed {
            changed = true;
            out.push(built);
        } else if let Some(acked) = acked {
            out.push(acked.clone());
        }
    }
    out
}

/// Sends the next response when it differs from what the proxy has and the previous one
/// was answered. `false` when the stream is closed.
async fn send_if_changed(
    world: &World,
    node: &NodeInfo,
    type_url: &str,
    state: &mut TypeState,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> bool {
    if state.sent.as_ref().is_some_and(|s| !s.settled) {
        return true; // one response in flight at a time
    }
    let built = compose(world, node, type_url, state);
    // Nothing exists yet (sent when it appears), or the proxy has nothing and all there
    // is waits (rejected, or its module being fetched): an empty response says nothing.
    if built.is_empty()
        && state
            .sent
            .as_ref()
            .is_none_or(|s| s.resources.is_empty() || s.version.is_empty())
    {
        return true;
    }
    let fingerprint: String = built
        .iter()
        .map(|b| format!("{}={};", b.name, b.version))
        .collect();
    let version = short_hash(fingerprint.as_bytes());
    if state.sent.as_ref().is_some_and(|s| s.version == version) {
        return true;
    }
    let mut built = built;
    for change in built
        .iter_mut()
        .filter(|b| state.acked.get(&b.name).map(|a| &a.version) != Some(&b.version))
    {
        if let Some(resent) = state
            .cache
            .attempt(change)
            .and_then(|attempt| resend(change, attempt))
        {
            *change = resent;
        }
        if state.cache.resending(change) {
            world.metrics.module_fetch_retries.inc();
        }
    }
    let nonce = next_nonce();
    let response = DiscoveryResponse {
        version_info: version.clone(),
        resources: built.iter().map(|b| b.any.clone()).collect(),
        type_url: type_url.into(),
        nonce: nonce.clone(),
        ..Default::default()
    };
    types::on_push(world, type_url, node, &pairs(&built));
    state.sent = Some(Sent {
        version,
        nonce,
        at: Instant::now(),
        resources: built,
        settled: false,
    });
    tx.send(Ok(response)).await.is_ok()
}
