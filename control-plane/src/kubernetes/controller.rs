//! Kubernetes mode, wired up: one kube-rs `Controller` per custom resource type
//! (`Controller::new(..).run(reconcile, error_policy, ctx)`), a Pod reflector for
//! memory limits, and the status Lease. Status is re-checked when what `Programmed`
//! depends on changes (ACKs, NACKs, proxies coming and going) and when this replica
//! becomes the status writer.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Config, Controller, Error as ControllerError};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::crds::{AuthPolicy, IdempotencyPolicy, RateLimitPolicy, RuntimeTuning, TracePolicy};
use super::lease::{self, LeaseConfig};
use super::peers::Peers;
use super::pods::{trim, PodLimits};
use super::reconcile::{error_policy, reconcile, Context};
use super::resource::{PolicyResource, Stores};
use crate::policy::model::Kind;
use crate::xds::world::World;

/// How Kubernetes mode runs.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// The control plane's namespace (where the Lease lives).
    pub namespace: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    /// How long start-up waits for the first list of every resource type before giving up.
    pub sync_timeout: Duration,
    /// Labels of the control plane's own pods (in `namespace`): the status writer adds
    /// their proxies to `Programmed`. Empty: a single replica, no peers asked.
    pub peer_selector: std::collections::BTreeMap<String, String>,
    /// The HTTP port peers serve `/delivery` on (every replica uses the same).
    pub peer_http_port: u16,
}

/// Status re-checks are batched: at most one round per this period.
const RECHECK_BATCH: Duration = Duration::from_millis(500);

/// Starts the controllers and waits until every resource type has been listed once and
/// the policies are in force — so no proxy is ever served a configuration made before
/// the cluster's policies were known (an AuthPolicy missing would mean allow-all).
pub async fn start(
    client: Client,
    world: Arc<World>,
    options: KubernetesOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let leader = Arc::new(AtomicBool::new(false));
    let gained = watch::channel(0u64).0;
    let mut tasks = Vec::new();

    let pods = start_pods(client.clone(), world.clone(), shutdown.clone(), &mut tasks);
    world.tuning.set_pod_memory_limits(Arc::new(PodLimits {
        store: pods.clone(),
    }));

    let rate_limit = controller::<RateLimitPolicy>(&client, &world, &gained);
    let auth = controller::<AuthPolicy>(&client, &world, &gained);
    let idempotency = controller::<IdempotencyPolicy>(&client, &world, &gained);
    let trace = controller::<TracePolicy>(&client, &world, &gained);
    let tuning = controller::<RuntimeTuning>(&client, &world, &gained);
    let stores = Stores {
        rate_limit: rate_limit.store(),
        auth: auth.store(),
        idempotency: idempotency.store(),
        trace: trace.store(),
        tuning: tuning.store(),
    };
    let mut ctx = Context::new(client.clone(), world, stores.clone(), leader.clone());
    if !options.peer_selector.is_empty() {
        ctx.peers = Some(Arc::new(Peers::new(
            pods,
            options.namespace.clone(),
            options.peer_selector.clone(),
            options.identity.clone(),
            options.peer_http_port,
        )));
    }
    let ctx = Arc::new(ctx);
    tasks.push(run(rate_limit, ctx.clone(), shutdown.clone()));
    tasks.push(run(auth, ctx.clone(), shutdown.clone()));
    tasks.push(run(idempotency, ctx.clone(), shutdown.clone()));
    tasks.push(run(trace, ctx.clone(), shutdown.clone()));
    tasks.push(run(tuning, ctx.clone(), shutdown.clone()));

    let config = LeaseConfig {
        namespace: options.namespace.clone(),
        identity: options.identity.clone(),
        duration: options.lease_duration,
    };
    let mut lease_stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            _ = lease::run(client, config, leader, move || gained.send_modify(|g| *g += 1)) => {}
            _ = lease_stop.changed() => {}
        }
    }));

    if tokio::time::timeout(options.sync_timeout, stores.wait_until_ready())
        .await
        .is_err()
    {
        for task in &tasks {
            task.abort();
        }
        return Err(format!(
            "the meshward.io custom resources could not be listed within {:?}: are the CRDs installed (kubectl apply -f istio-manifests/crds/) and does the service account have the RBAC in istio-manifests/control-plane/?",
            options.sync_timeout
        ));
    }
    ctx.sync();
    Ok(tasks)
}

fn controller<K: PolicyResource>(
    client: &Client,
    world: &World,
    gained: &watch::Sender<u64>,
) -> Controller<K> {
    // Filter policies follow ACKs/NACKs; RuntimeTuning follows agents' deliveries and
    // heap flags; every kind re-checks when this replica becomes the status writer.
    let delivery = if K::KIND == Kind::Tuning {
        world.tuning.subscribe_status()
    } else {
        world.subscribe_delivery()
    };
    let trigger = futures::stream::select(batched(delivery), batched(gained.subscribe()));
    Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .with_config(Config::default().debounce(Duration::from_millis(200)))
        .reconcile_all_on(trigger)
}

/// One item per burst of changes, at most one per [`RECHECK_BATCH`].
fn batched(receiver: watch::Receiver<u64>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        tokio::time::sleep(RECHECK_BATCH).await;
        receiver.borrow_and_update();
        Some(((), receiver))
    })
}

fn run<K: PolicyResource>(
    controller: Controller<K>,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let sync_ctx = ctx.clone();
    tokio::spawn(async move {
        controller
            .graceful_shutdown_on(async move {
                let _ = shutdown.changed().await;
            })
            .run(reconcile::<K>, error_policy::<K>, ctx)
            .for_each(move |result| {
                match result {
                    // A deleted resource: it is gone from the cache, so its policy goes
                    // away with a rebuild (no finalizer needed for in-memory state).
                    Err(ControllerError::ObjectNotFound(_)) => sync_ctx.sync(),
                    Err(ControllerError::QueueError(err)) => {
                        eprintln!(
                            "meshward-control-plane: watching {}: {err}",
                            K::KIND.document_kind()
                        );
                    }
                    _ => {}
                }
                futures::future::ready(())
            })
            .await;
    })
}

/// Pod memory limits can change (a Deployment edit rolls new pods): after a burst of Pod
/// events the tuning documents are recomputed, at most once per [`RECHECK_BATCH`].
fn start_pods(
    client: Client,
    world: Arc<World>,
    mut shutdown: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<Pod> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(trim),
    );
    let changed = watch::channel(0u64).0;
    let mut recompute = batched(changed.subscribe()).boxed();
    let recompute_world = world.clone();
    let mut recompute_stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                next = recompute.next() => {
                    if next.is_none() { break }
                    recompute_world.tuning.recompute();
                }
                _ = recompute_stop.changed() => break,
            }
        }
    }));
    tasks.push(tokio::spawn(async move {
        let drain = stream.for_each(|event| {
            match event {
                Ok(_) => changed.send_modify(|n| *n += 1),
                Err(err) => eprintln!("meshward-control-plane: watching Pods: {err}"),
            }
            futures::future::ready(())
        });
        tokio::select! {
            _ = drain => {}
            _ = shutdown.changed() => {}
        }
    }));
    reader
}
