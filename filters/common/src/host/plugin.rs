//! Plugin-level host calls every filter adapter makes the same way.

use proxy_wasm::types::{Action, BufferType, MapType};

/// The plugin configuration Envoy passed (empty when none was given).
pub fn configuration_bytes() -> Vec<u8> {
    proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Sets (replacing) headers of `map`; a refused header is skipped, never fatal.
pub fn set_headers<N: AsRef<str>, V: AsRef<str>>(
    map: MapType,
    headers: impl IntoIterator<Item = (N, V)>,
) {
    for (name, value) in headers {
        let _ = proxy_wasm::hostcalls::set_map_value(map, name.as_ref(), Some(value.as_ref()));
        if map == MapType::HttpRequestHeaders {
            crate::host::request::edited(name.as_ref(), Some(value.as_ref()));
        }
    }
}

/// Removes headers of `map` (every value of each name).
pub fn remove_headers<N: AsRef<str>>(map: MapType, names: impl IntoIterator<Item = N>) {
    for name in names {
        let _ = proxy_wasm::hostcalls::set_map_value(map, name.as_ref(), None);
        if map == MapType::HttpRequestHeaders {
            crate::host::request::edited(name.as_ref(), None);
        }
    }
}

/// Sends a local reply and stops the request: a filter that refused a request must
/// never let it continue (proxy-wasm 0.2.5 traps on a host failure here anyway).
pub fn send_local_reply<N: AsRef<str>, V: AsRef<str>>(
    status: u16,
    headers: &[(N, V)],
    body: &[u8],
) -> Action {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    let _ = proxy_wasm::hostcalls::send_http_response(u32::from(status), pairs, Some(body));
    Action::Pause
}
