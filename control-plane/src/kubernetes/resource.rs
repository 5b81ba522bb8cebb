//! What the controller needs from each of the five custom resource types, and the
//! reflector stores that hold them (the Kubernetes policy source is rebuilt from these).

use std::fmt::Debug;

use kube::runtime::reflector::Store;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::crds::{
    AuthPolicy, IdempotencyPolicy, PolicyStatus, RateLimitPolicy, RuntimeTuning, ToPolicy,
    TracePolicy,
};
use crate::policy::model::{Kind, Policy};

/// A meshward custom resource the controller reconciles.
pub trait PolicyResource:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + ToPolicy
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn status(&self) -> Option<&PolicyStatus>;
}

macro_rules! policy_resource {
    ($resource:ty, $kind:expr) => {
        impl PolicyResource for $resource {
            const KIND: Kind = $kind;
            fn status(&self) -> Option<&PolicyStatus> {
                self.status.as_ref()
            }
        }
    };
}

policy_resource!(RateLimitPolicy, Kind::RateLimit);
policy_resource!(AuthPolicy, Kind::Authz);
policy_resource!(IdempotencyPolicy, Kind::Idempotency);
policy_resource!(TracePolicy, Kind::Trace);
policy_resource!(RuntimeTuning, Kind::Tuning);

/// The controllers' caches of every custom resource.
#[derive(Clone)]
pub struct Stores {
    pub rate_limit: Store<RateLimitPolicy>,
    pub auth: Store<AuthPolicy>,
    pub idempotency: Store<IdempotencyPolicy>,
    pub trace: Store<TracePolicy>,
    pub tuning: Store<RuntimeTuning>,
}

impl Stores {
    /// Every valid resource as a policy, and one error per invalid one, in a stable order.
    pub fn policies(&self) -> (Vec<Policy>, Vec<String>) {
        let mut policies = Vec::new();
        let mut errors = Vec::new();
        collect(&self.rate_limit, &mut policies, &mut errors);
        collect(&self.auth, &mut policies, &mut errors);
        collect(&self.idempotency, &mut policies, &mut errors);
        collect(&self.trace, &mut policies, &mut errors);
        collect(&self.tuning, &mut policies, &mut errors);
        (policies, errors)
    }

    /// Whether every type has been listed once. Checked by polling: awaiting the stores'
    /// readiness directly was seen to miss its wake-up (kube-runtime 5, with several
    /// controllers on one runtime) and hang until something else polled it.
    pub fn is_ready(&self) -> bool {
        use futures::FutureExt;
        let ready = |r: Option<Result<(), kube::runtime::reflector::store::WriterDropped>>| {
            matches!(r, Some(Ok(())))
        };
        ready(self.rate_limit.wait_until_ready().now_or_never())
            && ready(self.auth.wait_until_ready().now_or_never())
            && ready(self.idempotency.wait_until_ready().now_or_never())
            && ready(self.trace.wait_until_ready().now_or_never())
            && ready(self.tuning.wait_until_ready().now_or_never())
    }

    pub async fn wait_until_ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn collect<K: PolicyResource>(
    store: &Store<K>,
    policies: &mut Vec<Policy>,
    errors: &mut Vec<String>,
) {
    let mut objects = store.state();
    // The store's order is a hash map's: sort so equal content means equal lists.
    objects.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    for object in objects {
        match object.to_policy() {
            Ok(policy) => policies.push(policy),
            Err(error) => errors.push(error),
        }
    }
}
