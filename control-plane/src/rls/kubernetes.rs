//! `meshward-control-plane rls --kubernetes`: the `RateLimitPolicy` custom resources as a
//! read-only policy source. Unlike the full control plane it neither takes part in the
//! status Lease nor writes status (the control plane that pushes the filters does), so
//! it needs only get/list/watch on `ratelimitpolicies`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::kubernetes::crds::{RateLimitPolicy, ToPolicy};
use crate::policy::sources::Source;
use crate::xds::world::World;

/// How long start-up waits for the first list.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Watches `RateLimitPolicy` resources into `world` (source `Kubernetes`); returns once
/// they have been listed, so the service never answers from an empty policy set.
pub async fn start(
    client: Client,
    world: Arc<World>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(
            Api::<RateLimitPolicy>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let store = reader.clone();
    let sync_world = world.clone();
    let task = tokio::spawn(async move {
        let mut last = None;
        let drain = stream.for_each(|event| {
            match event {
                Ok(_) => sync(&store, &sync_world, &mut last),
                Err(err) => eprintln!("meshward-control-plane: watching RateLimitPolicy: {err}"),
            }
            futures::future::ready(())
        });
        tokio::select! {
            _ = drain => {}
            _ = shutdown.changed() => {}
        }
    });
    // Polled, as `Stores::is_ready` does (awaiting readiness was seen to miss its wake-up).
    let ready = async {
        use futures::FutureExt;
        while !matches!(reader.wait_until_ready().now_or_never(), Some(Ok(()))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(SYNC_TIMEOUT, ready).await.is_err() {
        task.abort();
        return Err(format!(
            "RateLimitPolicy resources could not be listed within {SYNC_TIMEOUT:?}: is the CRD installed and may this service account list them?"
        ));
    }
    let mut last = None;
    sync(&reader, &world, &mut last);
    eprintln!(
        "meshward-control-plane: {} policies from Kubernetes",
        world.policies().len()
    );
    Ok(task)
}

type Snapshot = (Vec<crate::policy::model::Policy>, Vec<String>);

fn sync(store: &Store<RateLimitPolicy>, world: &World, last: &mut Option<Snapshot>) {
    let mut objects = store.state();
    objects.sort_by_key(|o| (o.namespace(), o.name_any()));
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for object in objects {
        match object.to_policy() {
            Ok(policy) => policies.push(policy),
            Err(error) => errors.push(error),
        }
    }
    let current = (policies, errors);
    if last.as_ref() == Some(&current) {
        return;
    }
    *last = Some(current.clone());
    let (policies, errors) = current;
    world.set_source(Source::Kubernetes, policies, errors);
}
