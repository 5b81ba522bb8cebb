//! Reads the request head from the host in as few crossings as possible: one call
//! for all headers, one more for the peer address only when a rule needs it.

use crate::request::RequestHead;
use proxy_wasm::types::MapType;

pub fn read_request_head(with_source_address: bool) -> RequestHead {
    let headers = proxy_wasm::hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
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
