//! State-of-the-world xDS streams (ADS `StreamAggregatedResources` and ECDS
//! `StreamExtensionConfigs`): one task per stream.
//!
//! Protocol, per type URL: the node is read from the first request; every response has
//! a fresh nonce; a request echoing the last nonce is an ACK when it also echoes that
//! response's version (recorded, not answered) or, when it carries `error_detail`, a
//! NACK (message recorded, that version never sent again); a request with an older
//! nonce is stale and ignored; the newest request's `resource_names` is the
//! subscription; a response goes out only when the version (a hash of the content)
//! differs from what the proxy has; resources named before they exist are sent when
//! they appear.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use super::next_nonce;
use super::resources::{short_hash, TYPED_EXTENSION_CONFIG};
use super::world::{node_info, NodeInfo, World};

struct Sent {
    version: String,
    nonce: String,
    at: Instant,
    resources: Vec<(String, String)>,
    acked: bool,
}

#[derive(Default)]
struct TypeState {
    names: BTreeSet<String>,
    sent: Option<Sent>,
    rejected: HashSet<String>,
}

pub type ResponseStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

/// Serves one stream until the proxy or the server ends it.
pub fn serve(world: Arc<World>, requests: Streaming<DiscoveryRequest>) -> ResponseStream {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(world, requests, tx));
    ReceiverStream::new(rx)
}

async fn run(
    world: Arc<World>,
    mut requests: impl tokio_stream::Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut changes = world.subscribe();
    let mut node: Option<NodeInfo> = None;
    let mut types: BTreeMap<String, TypeState> = BTreeMap::new();
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(Ok(request)) = request else { break };
                if node.is_none() {
                    let Some(first) = request.node.as_ref() else {
                        let _ = tx.send(Err(Status::invalid_argument("the first request must carry the node"))).await;
                        break;
                    };
                    let info = node_info(first);
                    world.connect(&info);
                    node = Some(info);
                }
                let Some(node) = node.as_ref() else { break };
                if request.type_url != TYPED_EXTENSION_CONFIG {
                    // Only ECDS resources are served; other types stay unanswered.
                    continue;
                }
                let state = types.entry(request.type_url.clone()).or_default();
                if !handle_request(&world, node, state, &request) {
                    continue; // stale
                }
                if !send_if_changed(&world, node, &request.type_url, state, &tx).await {
                    break;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() || world.is_closing() { break }
                let Some(node) = node.as_ref() else { continue };
                let mut open = true;
                for (type_url, state) in &mut types {
                    open &= send_if_changed(&world, node, type_url, state, &tx).await;
                }
                if !open { break }
            }
        }
    }
    if let Some(node) = node {
        world.disconnect(&node);
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
            Some(error) => {
                state.rejected.insert(sent.version.clone());
                world.on_nack(node, &sent.resources, &error.message);
            }
            // An ACK echoes the version it applied. Envoy clears `error_detail` once a
            // NACK is sent, so its next request (a subscription change) carries the
            // rejected nonce with its previous version: not an ACK.
            None if !sent.acked && request.version_info == sent.version => {
                sent.acked = true;
                world.on_ack(node, &sent.resources, Some(sent.at.elapsed().as_secs_f64()));
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
            acked: true,
        });
    }
    state.names = request.resource_names.iter().cloned().collect();
    true
}

/// Sends the subscribed resources when their version differs from what the proxy has
/// and was not rejected. `false` when the stream is closed.
async fn send_if_changed(
    world: &World,
    node: &NodeInfo,
    type_url: &str,
    state: &mut TypeState,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> bool {
    let built: Vec<_> = state
        .names
        .iter()
        .filter_map(|name| world.resource(name, node))
        .collect();
    if built.is_empty() && state.sent.as_ref().is_none_or(|s| s.resources.is_empty()) {
        return true; // nothing exists yet: sent when it appears
    }
    let fingerprint: String = built
        .iter()
        .map(|b| format!("{}={};", b.name, b.version))
        .collect();
    let version = short_hash(fingerprint.as_bytes());
    if state.sent.as_ref().is_some_and(|s| s.version == version)
        || state.rejected.contains(&version)
    {
        return true;
    }
    let nonce = next_nonce();
    let resources: Vec<(String, String)> = built
        .iter()
        .map(|b| (b.name.clone(), b.version.clone()))
        .collect();
    let response = DiscoveryResponse {
        version_info: version.clone(),
        resources: built.into_iter().map(|b| b.any).collect(),
        type_url: type_url.into(),
        nonce: nonce.clone(),
        ..Default::default()
    };
    world.on_push(node, &resources);
    state.sent = Some(Sent {
        version,
        nonce,
        at: Instant::now(),
        resources,
        acked: false,
    });
    tx.send(Ok(response)).await.is_ok()
}
