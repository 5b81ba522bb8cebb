//! Reads the request head from the host in as few crossings as possible: one call
//! for all headers, one more for the peer address only when a rule needs it.

use crate::request::RequestHead;
use proxy_wasm::types::MapType;

pub fn read_request_head(with_source_address: bool) -> RequestHead {
    // `get_map` would unwrap `String::from_utf8` on every value and trap the VM on a
    // header carrying obs-text bytes (legal in HTTP/1.1); read bytes and convert
    // lossily instead. Names are tokens, validated by Envoy's codecs.
    let headers = proxy_wasm::hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
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
