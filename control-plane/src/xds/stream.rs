//! The stream loop SotW and Delta share: read the node from the first request,
//! register the proxy, feed each ECDS request to the protocol, recompute on every world
//! change, end on shutdown, and unregister when the stream goes away. What a request
//! means and what a response carries is the protocol's ([`super::sotw`], [`super::delta`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::resources::TYPED_EXTENSION_CONFIG;
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
    if world.is_closing() {
        return; // opened during shutdown: end at once
    }
    let mut node: Option<NodeInfo> = None;
    let mut types: BTreeMap<String, P::State> = BTreeMap::new();
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(Ok(request)) = request else { break };
                if node.is_none() {
                    let Some(first) = P::node(&request) else {
                        let _ = tx.send(Err(Status::invalid_argument("the first request must carry the node"))).await;
                        break;
                    };
                    let info = node_info(first);
                    world.connect(&info);
                    node = Some(info);
                }
                let Some(node) = node.as_ref() else { break };
                let type_url = P::type_url(&request);
                if type_url != TYPED_EXTENSION_CONFIG {
                    // Only ECDS resources are served; other types stay unanswered.
                    continue;
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
                let mut open = true;
                for (type_url, state) in &mut types {
                    open &= P::send(&world, node, type_url, state, &tx).await;
                }
                if !open { break }
            }
        }
    }
    if let Some(node) = node {
        world.disconnect(&node);
    }
}
