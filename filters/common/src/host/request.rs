//! Reads the request head from the host in as few crossings as possible: one call
//! for all headers, one more for the peer address only when a rule needs it.

use crate::request::RequestHead;
use proxy_wasm::types::MapType;

/// All pairs of a header map. The SDK's `get_map` unwraps `String::from_utf8` on every
/// value and would trap the VM on a header carrying obs-text bytes (legal in HTTP/1.1,
/// from a client or an upstream); this reads bytes and converts lossily. Names are
/// tokens, validated by Envoy's codecs.
pub fn read_headers(map: MapType) -> Vec<(String, String)> {
    proxy_wasm::hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

pub fn read_request_head(with_source_address: bool) -> RequestHead {
    let headers = read_headers(MapType::HttpRequestHeaders);
    let source_address = if with_source_address {
        proxy_wasm::hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    } else {
        None
    };
    RequestHead::new(headers, source_address)
}
