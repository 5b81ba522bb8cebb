//! The stream loop SotW and Delta share: read the node from the first request,
//! register the client by the types it asks for (an Envoy proxy for ECDS, a tuning
//! agent for runtime tuning: [`super::types`]), feed each request of a served type to
//! the protocol, recompute on every world change (agents: also on every tuning document
//! change) and when a re-send after a code-cache miss is due, end on shutdown, and
//! unregister when the stream goes away. What a request means and what a response
//! carries is the protocol's ([`super::sotw`], [`super::delta`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::tuning::{agent_metadata, attach};
use super::types::{role, Role};
use super::world::{node_info, NodeInfo, World};

pub type Responses<R> = mpsc::Sender<Result<R, Status>>;

/// One xDS flavour: its messages and its per-type-URL stream state.
pub trait Protocol: 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    type State: Default + Send;

    fn node(request: &Self::Request) -> Option<&Node>;
    fn type_url(request: &Self::Request) -> &str;

    /// Applies ACK/NACK and subscription changes (`first`: the first request of this
    /// type on the stream); `false` when the request is to be ignored (stale).
    fn handle(
        world: &World,
        node: &NodeInfo,
        state: &mut Self::State,
        request: &Self::Request,
        first: bool,
    ) -> bool;

    /// When a version held back after a code-cache-miss NACK is due to be sent again.
    fn retry_at(state: &Self::State, now: Instant) -> Option<Instant>;

    /// Sends what the proxy should get next, if anything; `false` when the stream is closed.
    fn send(
        world: &World,
        node: &NodeInfo,
        type_url: &str,
        state: &mut Self::State,
        tx: &Responses<Self::Response>,
    ) -> impl Future<Output = bool> + Send;
}

/// Serves one stream until the proxy or the server ends it.
pub fn serve<P: Protocol>(
    world: Arc<World>,
    requests: impl Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static,
) -> ReceiverStream<Result<P::Response, Status>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run::<P>(world, requests, tx));
    ReceiverStream::new(rx)
}

async fn run<P: Protocol>(
    world: Arc<World>,
    mut requests: impl Stream<Item = Result<P::Request, Status>> + Unpin,
    tx: Responses<P::Response>,
) {
    let mut changes = world.subscribe();
    let mut tuning_changes = world.tuning.subscribe();
    if world.is_closing() {
        return; // opened during shutdown: end at once
    }
    let mut node: Option<NodeInfo> = None;
    let mut metadata = None;
    // Registered as a proxy (a replica of its workload) / as a tuning agent.
    let (mut proxy, mut agent) = (false, false);
    let mut types: BTreeMap<String, P::State> = BTreeMap::new();
    loop {
        // Re-sends after a proxy's code-cache miss (`super::code_cache`) are timed.
        let now = Instant::now();
        let retry_at = types.values().filter_map(|s| P::retry_at(s, now)).min();
        let retry =
            tokio::time::sleep_until(tokio::time::Instant::from_std(retry_at.unwrap_or(now)));
        tokio::select! {
            request = requests.next() => {
                let Some(Ok(request)) = request else { break };
                if node.is_none() {
                    let Some(first) = P::node(&request) else {
                        let _ = tx.send(Err(Status::invalid_argument("the first request must carry the node"))).await;
                        break;
                    };
                    node = Some(node_info(first));
                    metadata = Some(agent_metadata(first));
                }
                let Some(node) = node.as_ref() else { break };
                let type_url = P::type_url(&request);
                // Registered on the first request of a served type: a tuning agent is
                // no replica of its workload (rate-limit splits count proxies only).
                match role(type_url) {
                    // Other types stay unanswered.
                    None => continue,
                    Some(Role::Proxy) if !proxy => {
                        world.connect(node);
                        proxy = true;
                    }
                    Some(Role::Agent) if !agent => {
                        let Some(metadata) = metadata.as_ref() else { break };
                        if let Err(status) = attach(&world, node, metadata) {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                        agent = true;
                    }
                    Some(_) => {}
                }
                let first = !types.contains_key(type_url);
                let state = types.entry(type_url.to_owned()).or_default();
                if !P::handle(&world, node, state, &request, first) {
                    continue; // stale
                }
                if !P::send(&world, node, type_url, state, &tx).await {
                    break;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() || world.is_closing() { break }
                let Some(node) = node.as_ref() else { continue };
                if !send_all::<P>(&world, node, &mut types, &tx).await { break }
            }
            () = retry, if retry_at.is_some() => {
                if world.is_closing() { break }
                let Some(node) = node.as_ref() else { continue };
                if !send_all::<P>(&world, node, &mut types, &tx).await { break }
            }
            // Heap reports move documents without a world change; only agents care.
            changed = tuning_changes.changed(), if agent => {
                if changed.is_err() || world.is_closing() { break }
                let Some(node) = node.as_ref() else { continue };
                if !send_all::<P>(&world, node, &mut types, &tx).await { break }
            }
        }
    }
    if let Some(node) = node {
        if proxy {
            world.disconnect(&node);
        }
        if agent {
            world.tuning.detach(&node.id);
        }
    }
}

/// Recomputes every type of the stream; `false` when the stream is closed.
async fn send_all<P: Protocol>(
    world: &World,
    node: &NodeInfo,
    types: &mut BTreeMap<String, P::State>,
    tx: &Responses<P::Response>,
) -> bool {
    let mut open = true;
    for (type_url, state) in types {
        open &= P::send(world, node, type_url, state, tx).await;
    }
    open
}
