//! The gRPC services Envoy talks to: Aggregated Discovery (ADS) and the Extension
//! Config Discovery Service (ECDS), each in SotW and Delta form, all backed by the same
//! stream handlers.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryService;
use tonic::{Request, Response, Status, Streaming};

use super::resources::{short_hash, TYPED_EXTENSION_CONFIG};
use super::world::{node_info, World};
use super::{delta, next_nonce, sotw};

#[derive(Clone)]
pub struct Xds {
    pub world: Arc<World>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = sotw::ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(sotw::serve(
            self.world.clone(),
            request.into_inner(),
        )))
    }

    type DeltaAggregatedResourcesStream = delta::ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(delta::serve(
            self.world.clone(),
            request.into_inner(),
        )))
    }
}

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for Xds {
    type StreamExtensionConfigsStream = sotw::ResponseStream;

    async fn stream_extension_configs(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        Ok(Response::new(sotw::serve(
            self.world.clone(),
            request.into_inner(),
        )))
    }

    type DeltaExtensionConfigsStream = delta::ResponseStream;

    async fn delta_extension_configs(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        Ok(Response::new(delta::serve(
            self.world.clone(),
            request.into_inner(),
        )))
    }

    /// One-shot fetch (REST-style polling clients).
    async fn fetch_extension_configs(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        let node = request
            .node
            .as_ref()
            .map(node_info)
            .ok_or_else(|| Status::invalid_argument("the request must carry the node"))?;
        let built: Vec<_> = request
            .resource_names
            .iter()
            .filter_map(|name| self.world.resource(name, &node))
            .collect();
        let fingerprint: String = built
            .iter()
            .map(|b| format!("{}={};", b.name, b.version))
            .collect();
        Ok(Response::new(DiscoveryResponse {
            version_info: short_hash(fingerprint.as_bytes()),
            resources: built.into_iter().map(|b| b.any).collect(),
            type_url: TYPED_EXTENSION_CONFIG.into(),
            nonce: next_nonce(),
            ..Default::default()
        }))
    }
}
