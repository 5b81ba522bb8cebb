//! The reconciler: for one custom resource, bring the Kubernetes policy source up to
//! date (rebuilt from the controllers' caches, so deletions need no finalizer — the
//! policy lives only in memory) and, on the replica holding the Lease, write the
//! resource's status when it differs from what is there.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::crds::PolicyStatus;
use super::delivery::delivery;
use super::peers::{filter_key, PeerViews, Peers};
use super::resource::{PolicyResource, Stores};
use super::status::{status, Facts};
use crate::policy::model::{Kind, Policy};
use crate::policy::sources::Source;
use crate::xds::world::World;

/// The field manager of our status writes.
pub const FIELD_MANAGER: &str = "meshward-control-plane";

/// Status is re-checked this often even without events (proxies ACK continuously;
/// ACK events also trigger a re-check, debounced).
const RECHECK: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub world: Arc<World>,
    pub stores: Stores,
    /// Whether this replica holds the Lease and so writes status.
    pub leader: Arc<AtomicBool>,
    /// RFC 3339 time for `lastTransitionTime` (a fixed one in tests).
    pub now: fn() -> String,
    /// The other control-plane replicas, whose proxies count too (none: single replica).
    pub peers: Option<Arc<Peers>>,
    /// What was last handed to the world, so unchanged caches cause no push.
    last_sync: Mutex<Option<(Vec<Policy>, Vec<String>)>>,
}

impl Context {
    pub fn new(client: Client, world: Arc<World>, stores: Stores, leader: Arc<AtomicBool>) -> Self {
        Self {
            client,
            world,
            stores,
            leader,
            now: now_rfc3339,
            peers: None,
            last_sync: Mutex::new(None),
        }
    }

    /// Rebuilds the Kubernetes policy source from the caches; pushes only on a change.
    pub fn sync(&self) {
        let current = self.stores.policies();
        let mut last = self
            .last_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_ref() == Some(&current) {
            return;
        }
        *last = Some(current.clone());
        drop(last);
        let (policies, errors) = current;
        self.world.set_source(Source::Kubernetes, policies, errors);
    }
}

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[derive(Debug)]
pub enum Error {
    /// The status write failed (retried by the error policy).
    Patch(kube::Error),
    /// A resource without a namespace or name (cluster-scoped copies cannot happen for
    /// these namespaced types, but the API types allow it).
    Unnamed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Patch(err) => write!(f, "status update failed: {err}"),
            Error::Unnamed => write!(f, "resource without namespace or name"),
        }
    }
}

impl std::error::Error for Error {}

/// What the status of `object` should say now: this replica's view plus the peers'.
pub fn facts<K: PolicyResource>(object: &K, world: &World, peers: &PeerViews) -> Facts {
    match object.to_policy() {
        Err(message) => Facts::Invalid(message),
        Ok(policy) if K::KIND == Kind::Tuning => {
            let local = world.tuning.policy_status(&policy.namespace, &policy.name);
            let key = format!("{}/{}", policy.namespace, policy.name);
            let (mut instances, mut delivered, mut heap_near_limit) =
                (local.instances, local.delivered, local.heap_near_limit);
            for view in peers.views.iter().filter_map(|v| v.tuning.get(&key)) {
                instances += view.instances;
                delivered += view.delivered;
                heap_near_limit.extend(view.heap_near_limit.iter().cloned());
            }
            heap_near_limit.sort();
            Facts::Tuning {
                instances,
                delivered,
                heap_near_limit,
                unanswered_replicas: peers.unanswered.clone(),
            }
        }
        Ok(policy) => {
            let mut total = delivery(world, &policy);
            let key = filter_key(policy.kind, &policy.namespace, &policy.name);
            for view in peers.views.iter().filter_map(|v| v.filters.get(&key)) {
                total.add(view);
            }
            total.unanswered_replicas = peers.unanswered.clone();
            Facts::Filter(total)
        }
    }
}

pub async fn reconcile<K: PolicyResource>(
    object: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.sync();
    if !ctx.leader.load(Ordering::SeqCst) {
        return Ok(Action::requeue(RECHECK));
    }
    let (Some(namespace), name) = (object.namespace(), object.name_any()) else {
        return Err(Error::Unnamed);
    };
    let peers = match &ctx.peers {
        Some(peers) => peers.views().await,
        None => PeerViews::default(),
    };
    let desired = status(
        &facts(&*object, &ctx.world, &peers),
        object.meta().generation,
        object.status(),
        &(ctx.now)(),
    );
    if object.status() != Some(&desired) {
        patch_status::<K>(&ctx.client, &namespace, &name, &desired).await?;
    }
    Ok(Action::requeue(RECHECK))
}

/// A merge patch of `status` only: the spec is never touched, and conditions are
/// replaced as a whole (they are computed as a whole).
async fn patch_status<K: PolicyResource>(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &PolicyStatus,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = json!({ "status": status });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(Error::Patch)
}

pub fn error_policy<K: PolicyResource>(
    object: Arc<K>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    eprintln!(
        "meshward-control-plane: {} {}/{}: {error}; retrying in 5s",
        K::KIND.document_kind(),
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    Action::requeue(Duration::from_secs(5))
}
