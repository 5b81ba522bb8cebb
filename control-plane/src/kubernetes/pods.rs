//! Container memory limits from the Pod spec, for runtime tuning in Kubernetes mode: a
//! reflector cache of Pods (trimmed to what is read here) answering "what is the memory
//! limit of container C of pod P".

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::tuning::state::PodMemoryLimits;

/// Istio's injected sidecar: never the application container.
const SIDECAR: &str = "istio-proxy";

pub struct PodLimits {
    pub store: Store<Pod>,
}

impl PodMemoryLimits for PodLimits {
    fn limit(&self, namespace: &str, pod: &str, container: &str) -> Option<Option<u64>> {
        let pod = self.store.get(&ObjectRef::new(pod).within(namespace))?;
        let containers = &pod.spec.as_ref()?.containers;
        let chosen = if container.is_empty() {
            // No name given: the application container, if there is exactly one.
            let mut apps = containers.iter().filter(|c| c.name != SIDECAR);
            match (apps.next(), apps.next()) {
                (Some(only), None) => only,
                _ => return None,
            }
        } else {
            containers.iter().find(|c| c.name == container)?
        };
        let limit = chosen
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| parse_quantity(&q.0));
        Some(limit)
    }
}

/// Drops what the cache does not need (status, managed fields, most of the spec) so a
/// cluster's worth of Pods stays small in memory.
pub fn trim(pod: &mut Pod) {
    pod.status = None;
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.init_containers = None;
        spec.volumes = None;
        for container in &mut spec.containers {
            container.env = None;
            container.args = None;
            container.command = None;
            container.volume_mounts = None;
            container.liveness_probe = None;
            container.readiness_probe = None;
            container.startup_probe = None;
        }
    }
}

/// A Kubernetes quantity in bytes: plain or exponent numbers, decimal (k, M, G, T, P, E)
/// and binary (Ki … Ei) suffixes, fractions ("0.5Gi"). `None` when unparseable or
/// absurd; rounded down to whole bytes.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    let bytes = value * factor;
    // u64::MAX as f64 rounds up; stay strictly below it.
    (bytes.is_finite() && (0.0..1.8e19).contains(&bytes)).then(|| bytes.floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("0.5Gi"), Some(1 << 29));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("128974848"), Some(128_974_848));
        assert_eq!(parse_quantity("129e6"), Some(129_000_000));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        for bad in ["", "Mi", "12Zi", "-1Gi", "abc", "1e400", "20E"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    fn container(name: &str, memory: Option<&str>) -> Container {
        Container {
            name: name.into(),
            resources: memory.map(|m| ResourceRequirements {
                limits: Some([("memory".to_string(), Quantity(m.into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn limits(pods: Vec<Pod>) -> PodLimits {
        let mut writer: Writer<Pod> = Writer::default();
        for pod in pods {
            writer.apply_watcher_event(&Event::Apply(pod));
        }
        PodLimits {
            store: writer.as_reader(),
        }
    }

    fn pod(name: &str, containers: Vec<Container>) -> Pod {
        let mut pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            status: None,
        };
        trim(&mut pod);
        pod
    }

    #[test]
    fn limits_come_from_the_application_container() {
        let limits = limits(vec![
            pod(
                "orders-1",
                vec![
                    container("app", Some("512Mi")),
                    container(SIDECAR, Some("1Gi")),
                ],
            ),
            pod(
                "orders-2",
                vec![container("app", None), container(SIDECAR, Some("1Gi"))],
            ),
            pod(
                "multi",
                vec![container("a", Some("1Gi")), container("b", Some("2Gi"))],
            ),
        ]);
        assert_eq!(limits.limit("shop", "orders-1", ""), Some(Some(512 << 20)));
        assert_eq!(
            limits.limit("shop", "orders-1", SIDECAR),
            Some(Some(1 << 30))
        );
        assert_eq!(
            limits.limit("shop", "orders-2", ""),
            Some(None),
            "known pod, no limit"
        );
        assert_eq!(
            limits.limit("shop", "multi", ""),
            None,
            "ambiguous: fall back to the agent"
        );
        assert_eq!(limits.limit("shop", "multi", "b"), Some(Some(2 << 30)));
        assert_eq!(limits.limit("shop", "gone", ""), None);
        assert_eq!(limits.limit("other", "orders-1", ""), None);
    }
}
