//! Outgoing gRPC calls from a filter (`dispatch_grpc_call`), the way every filter makes
//! them: Envoy frames the message, applies the timeout and calls back
//! `on_grpc_call_response(token, status, size)` on the context that dispatched.

use std::time::Duration;

use proxy_wasm::types::BufferType;

/// gRPC status code OK.
pub const OK: u32 = 0;

/// Starts a unary call to `service/method` on the cluster `target` names — the value of
/// [`crate::grpc_target::service_target`] for an HTTP/2 cluster of the Envoy config,
/// never a bare cluster name (Envoy could take it for a `GrpcService` and abort).
/// Returns the token `on_grpc_call_response` gets, or why it could not start.
pub fn dispatch(
    target: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout: Duration,
) -> Result<u32, String> {
    proxy_wasm::hostcalls::dispatch_grpc_call(
        target,
        service,
        method,
        Vec::new(),
        Some(message),
        timeout,
    )
    .map_err(|status| {
        format!("cannot call {service}/{method}: {status:?} (is the cluster defined, with HTTP/2?)")
    })
}

/// The response message of the call being answered (`size` from the callback).
pub fn response(size: usize) -> Vec<u8> {
    proxy_wasm::hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The gRPC status message of a failed call, for logs.
pub fn status_message() -> String {
    match proxy_wasm::hostcalls::get_grpc_status() {
        Ok((code, Some(message))) => format!("grpc status {code}: {message}"),
        Ok((code, None)) => format!("grpc status {code}"),
        Err(status) => format!("grpc status unavailable ({status:?})"),
    }
}
