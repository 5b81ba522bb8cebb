//! Test applications that sit between two Envoy listeners.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use crate::client::Request;
use crate::upstream::{RecordedRequest, RecordingUpstream, Reply};

/// Headers an HTTP client sets itself and a forwarding app therefore never copies.
const NOT_COPIED: [&str; 5] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
];

/// An application that forwards carelessly: for each request it makes `?calls=N`
/// (default 1) outbound calls to `127.0.0.1:<outbound_port>`, copying every inbound
/// header verbatim — trace headers included, as many real applications do. Set the
/// port once the outbound listener is known.
pub fn careless_app(outbound_port: Arc<AtomicU16>) -> Result<RecordingUpstream, String> {
    RecordingUpstream::start_with(
        "127.0.0.1:0",
        Arc::new(move |inbound: &RecordedRequest| {
            let calls: usize = inbound
                .path
                .split_once("calls=")
                .and_then(|(_, rest)| rest.split('&').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let port = outbound_port.load(Ordering::SeqCst);
            let statuses: Vec<u16> = (0..calls)
                .map(|i| {
                    let mut call = Request::get(&format!("/downstream/{i}"));
                    for (name, value) in &inbound.headers {
                        if !NOT_COPIED.contains(&name.as_str()) {
                            call = call.header(name, value);
                        }
                    }
                    call.send(port).map(|response| response.status).unwrap_or(0)
                })
                .collect();
            Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::to_vec(&serde_json::json!({ "downstream_statuses": statuses }))
                    .unwrap_or_default(),
            }
        }),
    )
}
