//! Meshward's own protobuf APIs, shared by the control plane and the agents, so the
//! messages are defined once (`proto/meshward/**`).

/// Runtime tuning (docs/adr/0007-runtime-tuning.md).
pub mod tuning {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("meshward.tuning.v1");

        /// The xDS resource type of [`RuntimeTuning`].
        pub const RUNTIME_TUNING_TYPE_URL: &str =
            "type.googleapis.com/meshward.tuning.v1.RuntimeTuning";
    }
}

/// The idempotency store shared by replicas (docs/adr/0009-global-state.md).
pub mod idempotency {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("meshward.idempotency.v1");
    }
}
