//! How far a policy got: among the proxies connected to this control plane, the ones
//! for which it is the policy in force (its selector matches their workload and no more
//! specific policy wins), and how many of them ACKed — or NACKed — the version they
//! should have now. This is what the `Programmed` condition reports.

use crate::policy::compile::select;
use crate::policy::model::{Policy, Workload};
use crate::xds::world::{NodeInfo, World};

/// One policy's delivery to the proxies it selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Connected proxies this policy configures.
    pub selected: usize,
    /// Of those, the ones that ACKed their current version.
    pub acked: usize,
    /// (node id, Envoy's message) for every proxy that rejected its current version.
    pub rejected: Vec<(String, String)>,
    /// Control-plane replicas whose proxies could not be counted (did not answer).
    #[serde(default)]
    pub unanswered_replicas: Vec<String>,
}

impl Delivery {
    /// Adds another replica's view of the same policy.
    pub fn add(&mut self, other: &Delivery) {
        self.selected += other.selected;
        self.acked += other.acked;
        self.rejected.extend(other.rejected.iter().cloned());
    }
}

/// The delivery of `policy` (a filter policy) as of now.
pub fn delivery(world: &World, policy: &Policy) -> Delivery {
    let policies = world.policies();
    let resource = policy.kind.resource_name();
    let mut delivery = Delivery::default();
    for (id, proxy) in world.proxies() {
        let node = NodeInfo {
            id: id.clone(),
            workload: Workload {
                namespace: proxy.namespace.clone(),
                name: proxy.workload.clone(),
                labels: proxy.labels.clone(),
            },
        };
        let in_force = select(&policies, policy.kind, &node.workload)
            .is_some_and(|p| p.namespace == policy.namespace && p.name == policy.name);
        if !in_force {
            continue;
        }
        delivery.selected += 1;
        let Some(current) = world.resource(resource, &node) else {
            continue;
        };
        let Some(status) = proxy.resources.get(resource) else {
            continue; // not asked for yet
        };
        if status.acked_version.as_deref() == Some(current.version.as_str()) {
            delivery.acked += 1;
        } else if let Some(nack) = status
            .nack
            .as_ref()
            .filter(|n| n.version == current.version)
        {
            delivery.rejected.push((id, nack.message.clone()));
        }
    }
    delivery
}
