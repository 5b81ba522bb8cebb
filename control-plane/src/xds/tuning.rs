//! Runtime tuning documents on ADS streams (docs/adr/0007): a tuning client is
//! identified by its node (`NAMESPACE`, `WORKLOAD_NAME`, `LABELS` as for Envoy, plus
//! `POD_NAME`, `CONTAINER_NAME`, `MEMORY_LIMIT_BYTES`), its one resource is named after
//! its node id and carries a `meshward.tuning.v1.RuntimeTuning`.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use envoy_types::pb::google::protobuf::Any;
use meshward_proto::tuning::v1::RUNTIME_TUNING_TYPE_URL;
use prost::Message;
use tonic::Status;

use super::resources::Built;
use super::world::{NodeInfo, World};
use crate::tuning::state::{check_identity, Identity};

/// What a tuning client's node says beyond the workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMetadata {
    pub pod: String,
    pub container: String,
    /// `MEMORY_LIMIT_BYTES`: `None` absent; `Err` when it is not a byte count.
    pub memory_limit_bytes: Result<Option<u64>, String>,
}

pub fn agent_metadata(node: &Node) -> AgentMetadata {
    let field = |key: &str| {
        node.metadata
            .as_ref()
            .and_then(|m| m.fields.get(key))
            .and_then(|v| v.kind.as_ref())
    };
    let text = |key: &str| match field(key) {
        Some(ValueKind::StringValue(s)) => s.clone(),
        _ => String::new(),
    };
    let memory_limit_bytes = match field("MEMORY_LIMIT_BYTES") {
        None => Ok(None),
        Some(ValueKind::StringValue(s)) if s.is_empty() => Ok(None),
        Some(ValueKind::StringValue(s)) => s.parse::<u64>().map(Some).map_err(|_| {
            format!("node metadata MEMORY_LIMIT_BYTES: expected a byte count such as \"536870912\" (or 0 for none), got {s:?}")
        }),
        Some(ValueKind::NumberValue(n)) if *n >= 0.0 && n.fract() == 0.0 => Ok(Some(*n as u64)),
        Some(other) => Err(format!(
            "node metadata MEMORY_LIMIT_BYTES: expected a decimal string, got {other:?}"
        )),
    };
    AgentMetadata {
        pod: text("POD_NAME"),
        container: text("CONTAINER_NAME"),
        memory_limit_bytes,
    }
}

/// Registers the stream's instance; the error ends the stream with a message.
pub fn attach(world: &World, node: &NodeInfo, metadata: &AgentMetadata) -> Result<(), Status> {
    let limit = metadata
        .memory_limit_bytes
        .clone()
        .map_err(Status::invalid_argument)?;
    let identity = Identity {
        namespace: node.workload.namespace.clone(),
        workload: node.workload.name.clone(),
        labels: node.workload.labels.clone(),
        pod: metadata.pod.clone(),
        container: metadata.container.clone(),
    };
    check_identity(&node.id, &identity)
        .map_err(|e| Status::invalid_argument(format!("node: {e}")))?;
    world
        .tuning
        .attach(&node.id, identity, limit)
        .map(|_| ())
        .map_err(Status::resource_exhausted)
}

/// The node's own document; other names do not exist for it.
pub fn resource(world: &World, name: &str, node: &NodeInfo) -> Option<Built> {
    if name != node.id {
        return None;
    }
    let document = world.tuning.document(name)?;
    Some(Built {
        name: name.to_owned(),
        version: document.version.clone(),
        any: Any {
            type_url: RUNTIME_TUNING_TYPE_URL.into(),
            value: document.to_proto().encode_to_vec(),
        },
        code: None,
    })
}
