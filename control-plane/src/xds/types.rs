//! The resource types the xDS streams serve, by type URL, and what differs per type:
//! which names exist, how a resource is built, who is told about pushes and ACKs, and
//! what a stream's first request of the type registers. Every other type URL is left
//! unanswered.

use meshward_proto::tuning::v1::RUNTIME_TUNING_TYPE_URL;

use super::resources::{Built, TYPED_EXTENSION_CONFIG};
use super::tuning;
use super::world::{NodeInfo, World};
use crate::policy::model::Kind;

/// Who a stream is, by the types it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Envoy: ECDS filter configs; counted as a replica of its workload.
    Proxy,
    /// An application's tuning agent: its runtime tuning document.
    Agent,
}

pub fn role(type_url: &str) -> Option<Role> {
    match type_url {
        TYPED_EXTENSION_CONFIG => Some(Role::Proxy),
        RUNTIME_TUNING_TYPE_URL => Some(Role::Agent),
        _ => None,
    }
}

/// Whether `name` can ever exist for `node` (Delta keeps only these subscriptions).
pub fn known_name(type_url: &str, name: &str, node: &NodeInfo) -> bool {
    match role(type_url) {
        Some(Role::Proxy) => Kind::from_resource_name(name).is_some(),
        Some(Role::Agent) => name == node.id,
        None => false,
    }
}

/// The resource `name` of this type for `node`, if it exists.
pub fn resource(world: &World, type_url: &str, name: &str, node: &NodeInfo) -> Option<Built> {
    match role(type_url)? {
        Role::Proxy => world.resource(name, node),
        Role::Agent => tuning::resource(world, name, node),
    }
}

/// A response with these (name, version) went out.
pub fn on_push(world: &World, type_url: &str, node: &NodeInfo, resources: &[(String, String)]) {
    match role(type_url) {
        Some(Role::Proxy) => world.on_push(node, resources),
        Some(Role::Agent) => world.tuning.on_sent(),
        None => {}
    }
}

/// The client applied these (name, version).
pub fn on_ack(
    world: &World,
    type_url: &str,
    node: &NodeInfo,
    resources: &[(String, String)],
    latency_secs: Option<f64>,
) {
    match role(type_url) {
        Some(Role::Proxy) => world.on_ack(node, resources, latency_secs),
        Some(Role::Agent) => {
            for (name, version) in resources.iter().filter(|(n, _)| *n == node.id) {
                world.tuning.confirm(name, version);
            }
        }
        None => {}
    }
}
