//! `meshward.tuning.v1.RuntimeReports/Report`: heap reports from gRPC agents, on the xDS
//! port (their settings arrive over ADS, see `xds::types`).

use std::sync::Arc;

use meshward_proto::tuning::v1::runtime_reports_server::RuntimeReports;
use meshward_proto::tuning::v1::{ReportReply, RuntimeReport};
use tonic::{Request, Response, Status};

use crate::tuning::state::{Identity, Report};
use crate::xds::world::World;

#[derive(Clone)]
pub struct Reports {
    pub world: Arc<World>,
}

#[tonic::async_trait]
impl RuntimeReports for Reports {
    async fn report(
        &self,
        request: Request<RuntimeReport>,
    ) -> Result<Response<ReportReply>, Status> {
        let report = from_proto(request.into_inner()).map_err(Status::invalid_argument)?;
        let current = self
            .world
            .tuning
            .report(report)
            .map_err(Status::resource_exhausted)?;
        Ok(Response::new(ReportReply {
            current: Some(current.to_proto()),
        }))
    }
}

/// The report, checked; errors name the field.
pub fn from_proto(message: RuntimeReport) -> Result<Report, String> {
    let bytes = |field: &str, value: i64| {
        u64::try_from(value).map_err(|_| format!("{field}: {value} is negative"))
    };
    let report = Report {
        node_id: message.node_id,
        identity: Identity {
            namespace: message.namespace,
            workload: message.workload,
            labels: message.labels.into_iter().collect(),
            pod: message.pod,
            container: message.container,
        },
        memory_limit_bytes: message
            .memory_limit_bytes
            .map(|l| bytes("memoryLimitBytes", l))
            .transpose()?,
        live_heap_bytes: Some(bytes("liveHeapBytes", message.live_heap_bytes)?),
        agent: message.agent,
    };
    report.check()?;
    Ok(report)
}
