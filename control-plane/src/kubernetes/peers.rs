//! `Programmed` across control-plane replicas. Proxies spread their xDS streams over all
//! replicas, but only the Lease holder writes status, so it asks every peer for its local
//! view (`GET /delivery` on the HTTP port: per policy, the proxies it serves, ACKs and
//! NACKs) and adds them to its own. Peers are the running pods of the control plane's
//! namespace matching `--peer-selector`. A peer that does not answer within a second is
//! named in the status instead of being silently left out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::delivery::{delivery, Delivery};
use crate::policy::model::Kind;
use crate::xds::world::World;

const FETCH_TIMEOUT: Duration = Duration::from_secs(1);
/// A reconcile round over every policy asks each peer once.
const CACHE_FOR: Duration = Duration::from_secs(1);
const MAX_VIEW_BYTES: usize = 8 << 20;

/// A runtime-tuning policy's delivery as one replica sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningView {
    pub instances: usize,
    pub delivered: usize,
    pub heap_near_limit: Vec<String>,
}

/// One replica's view of every policy in force: filter policies by
/// `Kind/namespace/name`, tuning policies by `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    pub filters: BTreeMap<String, Delivery>,
    pub tuning: BTreeMap<String, TuningView>,
}

pub fn filter_key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.document_kind())
}

/// What this replica serves (the `/delivery` document).
pub fn local_view(world: &World) -> ReplicaView {
    let mut view = ReplicaView::default();
    for policy in world.policies().iter() {
        if policy.kind == Kind::Tuning {
            let status = world.tuning.policy_status(&policy.namespace, &policy.name);
            view.tuning.insert(
                format!("{}/{}", policy.namespace, policy.name),
                TuningView {
                    instances: status.instances,
                    delivered: status.delivered,
                    heap_near_limit: status.heap_near_limit,
                },
            );
        } else {
            view.filters.insert(
                filter_key(policy.kind, &policy.namespace, &policy.name),
                delivery(world, policy),
            );
        }
    }
    view
}

/// The peers' views, and the peers that did not answer.
#[derive(Debug, Clone, Default)]
pub struct PeerViews {
    pub views: Vec<ReplicaView>,
    pub unanswered: Vec<String>,
}

/// Finds and asks the other control-plane replicas.
pub struct Peers {
    pub pods: Store<Pod>,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    /// This replica's pod name (not a peer).
    pub identity: String,
    pub http_port: u16,
    cache: Mutex<Option<(Instant, PeerViews)>>,
}

impl Peers {
    pub fn new(
        pods: Store<Pod>,
        namespace: String,
        selector: BTreeMap<String, String>,
        identity: String,
        http_port: u16,
    ) -> Self {
        Self {
            pods,
            namespace,
            selector,
            identity,
            http_port,
            cache: Mutex::new(None),
        }
    }

    /// (pod name, IP) of every running peer.
    pub fn addresses(&self) -> Vec<(String, String)> {
        let mut peers: Vec<(String, String)> = self
            .pods
            .state()
            .iter()
            .filter(|pod| pod.metadata.namespace.as_deref() == Some(self.namespace.as_str()))
            .filter(|pod| pod.metadata.name.as_deref() != Some(self.identity.as_str()))
            .filter(|pod| {
                let labels = pod.metadata.labels.as_ref();
                self.selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                (status.phase.as_deref() == Some("Running"))
                    .then(|| Some((pod.metadata.name.clone()?, status.pod_ip.clone()?)))
                    .flatten()
            })
            .collect();
        peers.sort();
        peers
    }

    /// Every peer's view, fetched concurrently (cached for a second).
    pub async fn views(&self) -> PeerViews {
        if let Some((at, views)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            if at.elapsed() < CACHE_FOR {
                return views.clone();
            }
        }
        let fetches = self.addresses().into_iter().map(|(name, ip)| async move {
            let address = format!("{ip}:{}", self.http_port);
            (name, fetch_view(&address).await)
        });
        let mut result = PeerViews::default();
        for (name, view) in futures::future::join_all(fetches).await {
            match view {
                Ok(view) => result.views.push(view),
                Err(err) => {
                    eprintln!("meshward-control-plane: peer {name}: {err}");
                    result.unanswered.push(name);
                }
            }
        }
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), result.clone()));
        result
    }
}

/// `GET /delivery` from a peer's HTTP port (plain HTTP/1.0: the body ends with the
/// connection), bounded in time and size.
pub async fn fetch_view(address: &str) -> Result<ReplicaView, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        stream
            .write_all(format!("GET /delivery HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream
            .take(u64::try_from(MAX_VIEW_BYTES).unwrap_or(u64::MAX))
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {address} within {FETCH_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "unexpected answer: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("bad /delivery document: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn pod(name: &str, namespace: &str, app: &str, phase: &str, ip: &str) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some(ip.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn peers_are_the_other_running_pods_of_the_selector_in_our_namespace() {
        let mut writer: Writer<Pod> = Writer::default();
        for pod in [
            pod(
                "cp-0",
                "meshward-system",
                "meshward-control-plane",
                "Running",
                "10.0.0.1",
            ),
            pod(
                "cp-1",
                "meshward-system",
                "meshward-control-plane",
                "Running",
                "10.0.0.2",
            ),
            pod(
                "cp-2",
                "meshward-system",
                "meshward-control-plane",
                "Pending",
                "10.0.0.3",
            ),
            pod("other", "meshward-system", "grafana", "Running", "10.0.0.4"),
            pod(
                "cp-9",
                "elsewhere",
                "meshward-control-plane",
                "Running",
                "10.0.0.5",
            ),
        ] {
            writer.apply_watcher_event(&Event::Apply(pod));
        }
        let peers = Peers::new(
            writer.as_reader(),
            "meshward-system".into(),
            [("app".to_string(), "meshward-control-plane".to_string())].into(),
            "cp-0".into(),
            18001,
        );
        assert_eq!(
            peers.addresses(),
            [("cp-1".to_string(), "10.0.0.2".to_string())]
        );
    }

    #[test]
    fn deliveries_add_up() {
        let mut total = Delivery {
            selected: 2,
            acked: 2,
            rejected: vec![],
            unanswered_replicas: vec![],
        };
        total.add(&Delivery {
            selected: 3,
            acked: 1,
            rejected: vec![("n".into(), "bad".into())],
            unanswered_replicas: vec![],
        });
        assert_eq!(
            (total.selected, total.acked, total.rejected.len()),
            (5, 3, 1)
        );
    }
}
