//! Plugin-level host calls every filter adapter makes the same way.

use proxy_wasm::types::{BufferType, MapType};

/// The plugin configuration Envoy passed (empty when none was given).
pub fn configuration_bytes() -> Vec<u8> {
    proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Sets (replacing) response headers; a refused header is skipped, never fatal.
pub fn set_response_headers<N: AsRef<str>, V: AsRef<str>>(
    headers: impl IntoIterator<Item = (N, V)>,
) {
    for (name, value) in headers {
        let _ = proxy_wasm::hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            name.as_ref(),
            Some(value.as_ref()),
        );
    }
}
