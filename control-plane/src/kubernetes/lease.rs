//! One status writer among the control-plane replicas: a `coordination.k8s.io/v1` Lease
//! in the control plane's namespace. Every replica serves xDS; only the holder writes
//! status, so replicas never fight over conditions. Writes are optimistic (the
//! Lease's `resourceVersion` is sent back), so two replicas can never both win.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

pub const LEASE_NAME: &str = "meshward-control-plane-status";

/// Who we are and how long a claim lasts.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    /// This replica (the pod name).
    pub identity: String,
    pub duration: Duration,
}

/// One attempt to take or keep the Lease at `now`; `Ok(true)` when we hold it.
pub async fn try_hold(
    client: &Client,
    config: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return conflict_is_false(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    if !ours {
        let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
        let expires = spec
            .renew_time
            .as_ref()
            .and_then(|t| t.0.checked_add(SignedDuration::from_secs(held_for)).ok());
        if spec.holder_identity.is_some() && expires.is_some_and(|e| e > now) {
            return Ok(false);
        }
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);
    // `replace` sends the resourceVersion we read: a concurrent writer makes it a 409.
    conflict_is_false(
        api.replace(LEASE_NAME, &PostParams::default(), &lease)
            .await,
    )
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Keeps trying to hold the Lease (every third of its duration), updating `leader` and
/// calling `on_gain` when this replica becomes the holder. An API error drops the
/// leadership: better no status writer for a moment than two.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leader: Arc<AtomicBool>,
    on_gain: impl Fn() + Send,
) {
    let period = (config.duration / 3).max(Duration::from_millis(100));
    loop {
        let held = match try_hold(&client, &config, Timestamp::now()).await {
            Ok(held) => held,
            Err(err) => {
                eprintln!("meshward-control-plane: lease {LEASE_NAME}: {err}");
                false
            }
        };
        let was = leader.swap(held, Ordering::SeqCst);
        if held && !was {
            eprintln!(
                "meshward-control-plane: {} now writes policy status",
                config.identity
            );
            on_gain();
        } else if !held && was {
            eprintln!(
                "meshward-control-plane: {} no longer writes policy status",
                config.identity
            );
        }
        tokio::time::sleep(period).await;
    }
}
