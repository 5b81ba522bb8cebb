//! The agent's side of the ADS exchange, as pure functions: the node it identifies
//! itself with, the requests it sends (subscribe, ACK, NACK) and how a response is
//! read. No network here, so all of it is unit-tested.
//!
//! Protocol (SotW, one type): the first request carries the node and subscribes to
//! [`RUNTIME_TUNING_TYPE_URL`] with the resource name = the node id. Every response is
//! answered: an ACK echoes its `version_info` and `nonce`; a NACK echoes the nonce,
//! keeps the version last accepted and says why in `error_detail`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{node::UserAgentVersionType, Node};
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc::Status;
use meshward_proto::tuning::v1::{RuntimeTuning, RUNTIME_TUNING_TYPE_URL};
use prost::Message;

/// SotW responses may wrap each resource in an `envoy.service.discovery.v3.Resource`.
const RESOURCE_WRAPPER_TYPE_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";
/// `google.rpc.Code.INVALID_ARGUMENT`, as Envoy uses in its NACKs.
const INVALID_ARGUMENT: i32 = 3;

/// Who the agent is: what goes into the node metadata and every report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
    pub namespace: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub pod: String,
    pub container: String,
    /// The container memory limit (cgroup or override); `None`: none.
    pub memory_limit_bytes: Option<u64>,
    /// Agent name/version, as `user_agent_name` and in reports.
    pub agent: String,
}

fn text(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

/// The node, with the metadata keys Envoy/Istio use (`NAMESPACE`, `WORKLOAD_NAME`,
/// `LABELS`) plus `POD_NAME`, `CONTAINER_NAME` and `MEMORY_LIMIT_BYTES` (a decimal
/// string) when known; unknown ones are left out rather than sent empty.
pub fn node(identity: &Identity) -> Node {
    let labels = Struct {
        fields: identity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("NAMESPACE".to_owned(), text(&identity.namespace));
    fields.insert("WORKLOAD_NAME".to_owned(), text(&identity.workload));
    fields.insert(
        "LABELS".to_owned(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    if !identity.pod.is_empty() {
        fields.insert("POD_NAME".to_owned(), text(&identity.pod));
    }
    if !identity.container.is_empty() {
        fields.insert("CONTAINER_NAME".to_owned(), text(&identity.container));
    }
    if let Some(limit) = identity.memory_limit_bytes {
        fields.insert("MEMORY_LIMIT_BYTES".to_owned(), text(&limit.to_string()));
    }
    let (name, version) = identity
        .agent
        .split_once('/')
        .unwrap_or((identity.agent.as_str(), ""));
    Node {
        id: identity.node_id.clone(),
        cluster: identity.workload.clone(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        user_agent_name: name.to_owned(),
        user_agent_version_type: (!version.is_empty())
            .then(|| UserAgentVersionType::UserAgentVersion(version.to_owned())),
        ..Default::default()
    }
}

/// The first request of a stream: the node and the subscription. `accepted_version` is
/// the version last ACKed on an earlier stream (empty on the first): like Envoy, a
/// reconnecting agent says what it has, so an unchanged document is not sent again.
pub fn subscribe(identity: &Identity, accepted_version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node(identity)),
        version_info: accepted_version.to_owned(),
        resource_names: vec![identity.node_id.clone()],
        type_url: RUNTIME_TUNING_TYPE_URL.to_owned(),
        ..Default::default()
    }
}

/// Accepts `response`: echoes its version and nonce.
pub fn ack(node_id: &str, response: &DiscoveryResponse) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: response.version_info.clone(),
        response_nonce: response.nonce.clone(),
        resource_names: vec![node_id.to_owned()],
        type_url: RUNTIME_TUNING_TYPE_URL.to_owned(),
        ..Default::default()
    }
}

/// Rejects `response`: echoes its nonce, keeps `accepted_version` (what the agent still
/// has) and says why.
pub fn nack(
    node_id: &str,
    response: &DiscoveryResponse,
    accepted_version: &str,
    error: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: accepted_version.to_owned(),
        response_nonce: response.nonce.clone(),
        resource_names: vec![node_id.to_owned()],
        type_url: RUNTIME_TUNING_TYPE_URL.to_owned(),
        error_detail: Some(Status {
            code: INVALID_ARGUMENT,
            message: error.to_owned(),
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

/// The settings for `node_id` in `response`: `Ok(None)` when it carries none (nothing to
/// apply, still ACKed), an error (to NACK with) when a resource is of another type,
/// cannot be decoded, or none of several is for this node.
pub fn decode(
    node_id: &str,
    response: &DiscoveryResponse,
) -> Result<Option<RuntimeTuning>, String> {
    let mut found = Vec::new();
    for (index, any) in response.resources.iter().enumerate() {
        let (type_url, bytes) = if any.type_url == RESOURCE_WRAPPER_TYPE_URL {
            let wrapper = Resource::decode(any.value.as_slice())
                .map_err(|e| format!("resource {index}: cannot decode Resource wrapper: {e}"))?;
            let inner = wrapper.resource.ok_or_else(|| {
                format!(
                    "resource {index} ({:?}): the wrapper is empty",
                    wrapper.name
                )
            })?;
            (inner.type_url, inner.value)
        } else {
            (any.type_url.clone(), any.value.clone())
        };
        if type_url != RUNTIME_TUNING_TYPE_URL {
            return Err(format!(
                "resource {index}: type {type_url:?}, expected {RUNTIME_TUNING_TYPE_URL}"
            ));
        }
        let tuning = RuntimeTuning::decode(bytes.as_slice())
            .map_err(|e| format!("resource {index}: cannot decode RuntimeTuning: {e}"))?;
        found.push(tuning);
    }
    if found.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = found.iter().map(|t| t.node_id.clone()).collect();
    found
        .into_iter()
        // A document that names no node can only be meant for the one subscriber.
        .find(|t| t.node_id == node_id || (ids.len() == 1 && t.node_id.is_empty()))
        .map(Some)
        .ok_or_else(|| format!("no RuntimeTuning for node {node_id:?} (got {ids:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn identity() -> Identity {
        Identity {
            node_id: "orders-1.shop".into(),
            namespace: "shop".into(),
            workload: "orders".into(),
            labels: [
                ("app".to_owned(), "orders".to_owned()),
                ("tier".to_owned(), "web".to_owned()),
            ]
            .into_iter()
            .collect(),
            pod: "orders-7d9f".into(),
            container: "app".into(),
            memory_limit_bytes: Some(268_435_456),
            agent: "meshward-tuning-agent-rust/0.1.0".into(),
        }
    }

    fn string_field<'a>(fields: &'a Struct, key: &str) -> Option<&'a str> {
        match fields.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn node_metadata_has_the_workload_keys_and_the_limit_as_a_string() {
        let node = node(&identity());
        assert_eq!(node.id, "orders-1.shop");
        assert_eq!(node.cluster, "orders");
        assert_eq!(node.user_agent_name, "meshward-tuning-agent-rust");
        assert_eq!(
            node.user_agent_version_type,
            Some(UserAgentVersionType::UserAgentVersion("0.1.0".into()))
        );
        let metadata = node.metadata.unwrap();
        assert_eq!(string_field(&metadata, "NAMESPACE"), Some("shop"));
        assert_eq!(string_field(&metadata, "WORKLOAD_NAME"), Some("orders"));
        assert_eq!(string_field(&metadata, "POD_NAME"), Some("orders-7d9f"));
        assert_eq!(string_field(&metadata, "CONTAINER_NAME"), Some("app"));
        assert_eq!(
            string_field(&metadata, "MEMORY_LIMIT_BYTES"),
            Some("268435456")
        );
        let Some(Kind::StructValue(labels)) = &metadata.fields["LABELS"].kind else {
            panic!("LABELS is not a struct: {metadata:?}");
        };
        assert_eq!(labels.fields.len(), 2);
        assert_eq!(string_field(labels, "app"), Some("orders"));
        assert_eq!(string_field(labels, "tier"), Some("web"));
    }

    #[test]
    fn unknown_pod_container_and_limit_are_left_out() {
        let node = node(&Identity {
            pod: String::new(),
            container: String::new(),
            memory_limit_bytes: None,
            labels: BTreeMap::new(),
            agent: "bare".into(),
            ..identity()
        });
        let metadata = node.metadata.unwrap();
        let mut keys: Vec<&str> = metadata.fields.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["LABELS", "NAMESPACE", "WORKLOAD_NAME"]);
        assert_eq!(node.user_agent_name, "bare");
        assert_eq!(node.user_agent_version_type, None);
    }

    #[test]
    fn subscribe_carries_node_type_and_name() {
        let first = subscribe(&identity(), "");
        assert_eq!(
            first.node.as_ref().map(|n| n.id.as_str()),
            Some("orders-1.shop")
        );
        assert_eq!(first.type_url, RUNTIME_TUNING_TYPE_URL);
        assert_eq!(first.resource_names, ["orders-1.shop"]);
        assert_eq!(first.version_info, "");
        assert_eq!(first.response_nonce, "");
        assert!(first.error_detail.is_none());
        // Reconnecting: says which version it has.
        assert_eq!(subscribe(&identity(), "v7").version_info, "v7");
    }

    fn response(version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            nonce: nonce.into(),
            type_url: RUNTIME_TUNING_TYPE_URL.into(),
            resources,
            ..Default::default()
        }
    }

    fn tuning_any(tuning: &RuntimeTuning) -> Any {
        Any {
            type_url: RUNTIME_TUNING_TYPE_URL.into(),
            value: tuning.encode_to_vec(),
        }
    }

    fn tuning(node_id: &str) -> RuntimeTuning {
        RuntimeTuning {
            node_id: node_id.into(),
            policy: "shop/orders-gc".into(),
            version: "3f2a".into(),
            memory_limit_bytes: Some(483_183_820),
            gc_percent: Some(150),
            heap_near_limit: false,
            reason: "GOGC fixed".into(),
        }
    }

    #[test]
    fn ack_echoes_version_and_nonce() {
        let ack = ack("orders-1.shop", &response("v2", "n5", vec![]));
        assert_eq!(ack.version_info, "v2");
        assert_eq!(ack.response_nonce, "n5");
        assert_eq!(ack.type_url, RUNTIME_TUNING_TYPE_URL);
        assert_eq!(ack.resource_names, ["orders-1.shop"]);
        assert!(ack.node.is_none() && ack.error_detail.is_none());
    }

    #[test]
    fn nack_keeps_the_accepted_version_and_says_why() {
        let nack = nack(
            "orders-1.shop",
            &response("v3", "n6", vec![]),
            "v2",
            "bad bytes",
        );
        assert_eq!(nack.version_info, "v2");
        assert_eq!(nack.response_nonce, "n6");
        assert_eq!(nack.resource_names, ["orders-1.shop"]);
        let detail = nack.error_detail.unwrap();
        assert_eq!(detail.code, INVALID_ARGUMENT);
        assert_eq!(detail.message, "bad bytes");
    }

    #[test]
    fn decodes_plain_and_wrapped_resources() {
        let plain = response("v1", "n1", vec![tuning_any(&tuning("orders-1.shop"))]);
        assert_eq!(
            decode("orders-1.shop", &plain),
            Ok(Some(tuning("orders-1.shop")))
        );

        let wrapped = Any {
            type_url: RESOURCE_WRAPPER_TYPE_URL.into(),
            value: Resource {
                name: "orders-1.shop".into(),
                resource: Some(tuning_any(&tuning("orders-1.shop"))),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        let response = response("v1", "n1", vec![wrapped]);
        assert_eq!(
            decode("orders-1.shop", &response),
            Ok(Some(tuning("orders-1.shop")))
        );
    }

    #[test]
    fn picks_this_nodes_document_and_accepts_an_empty_response() {
        let both = response(
            "v1",
            "n1",
            vec![
                tuning_any(&tuning("other.shop")),
                tuning_any(&tuning("orders-1.shop")),
            ],
        );
        assert_eq!(
            decode("orders-1.shop", &both),
            Ok(Some(tuning("orders-1.shop")))
        );
        assert_eq!(
            decode("orders-1.shop", &response("v1", "n1", vec![])),
            Ok(None)
        );
    }

    #[test]
    fn undecodable_resources_are_errors_to_nack_with() {
        let garbage = Any {
            type_url: RUNTIME_TUNING_TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let err = decode("orders-1.shop", &response("v1", "n1", vec![garbage])).unwrap_err();
        assert!(
            err.starts_with("resource 0: cannot decode RuntimeTuning"),
            "{err}"
        );

        let wrong_type = Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: Vec::new(),
        };
        let err = decode("orders-1.shop", &response("v1", "n1", vec![wrong_type])).unwrap_err();
        assert!(err.contains("google.protobuf.StringValue"), "{err}");

        let foreign = response("v1", "n1", vec![tuning_any(&tuning("other.shop"))]);
        let err = decode("orders-1.shop", &foreign).unwrap_err();
        assert!(
            err.contains("no RuntimeTuning for node \"orders-1.shop\""),
            "{err}"
        );
    }
}
