//! What a filter passes as the "cluster" of `dispatch_grpc_call`: a serialized
//! `envoy.config.core.v3.GrpcService` with `envoy_grpc.cluster_name` = the cluster.
//!
//! Envoy first tries to parse that argument as a `GrpcService`, and only if that fails
//! takes it as a cluster name. Some names are valid protobuf by accident —
//! `meshward-store` is (fields 13 and 12 with fixed-size payloads) — and then Envoy
//! builds a call with no target and aborts (`async_client_manager_impl.cc: unset
//! oneof`, found with real Envoy 1.40). Encoding the message ourselves removes the
//! guess, for every cluster name a user may choose.

/// The longest cluster name [`service_target`] encodes (one-byte protobuf lengths keep
/// the result valid UTF-8, which the host call needs).
pub const MAX_CLUSTER_NAME: usize = 120;

/// The encoded `GrpcService` for `cluster`; `None` when the name is empty or longer than
/// [`MAX_CLUSTER_NAME`]. Compute it once at configure time.
pub fn service_target(cluster: &str) -> Option<String> {
    let name_len = u8::try_from(cluster.len())
        .ok()
        .filter(|n| *n > 0 && usize::from(*n) <= MAX_CLUSTER_NAME)?;
    // GrpcService { envoy_grpc (1): EnvoyGrpc { cluster_name (1): cluster } }
    let mut out = String::with_capacity(cluster.len() + 4);
    out.push('\n');
    out.push(char::from(name_len + 2));
    out.push('\n');
    out.push(char::from(name_len));
    out.push_str(cluster);
    Some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use prost::Message;

    /// `envoy.config.core.v3.GrpcService`, only `envoy_grpc`.
    #[derive(Clone, PartialEq, Message)]
    struct GrpcService {
        #[prost(message, optional, tag = "1")]
        envoy_grpc: Option<EnvoyGrpc>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct EnvoyGrpc {
        #[prost(string, tag = "1")]
        cluster_name: String,
    }

    #[test]
    fn the_cluster_travels_as_a_grpc_service_message() {
        // Why: this name parses as a (meaningless) GrpcService all by itself.
        assert!(GrpcService::decode(&b"meshward-store"[..]).is_ok());
        let longest = "c".repeat(MAX_CLUSTER_NAME);
        for cluster in ["meshward-store", "meshward-rls", "a", longest.as_str()] {
            let target = service_target(cluster).unwrap();
            let parsed = GrpcService::decode(target.as_bytes()).unwrap();
            assert_eq!(
                parsed.envoy_grpc.map(|g| g.cluster_name).as_deref(),
                Some(cluster)
            );
        }
        assert_eq!(service_target(&"c".repeat(MAX_CLUSTER_NAME + 1)), None);
        assert_eq!(service_target(""), None);
    }
}
