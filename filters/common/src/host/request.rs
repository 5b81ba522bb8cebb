//! Reads the request head from the host in as few crossings as possible: one call
//! for all headers, one more for the peer address only when a rule needs it.
//!
//! In the bundle several filters read the same request head in one callback. While
//! the bundle runs its stages for a request it wraps them in [`sharing`]: the head is
//! then read from the host once, and the filters' own header edits
//! ([`crate::host::plugin::set_headers`] / `remove_headers`) are applied to the shared
//! copy as Envoy applies them (`setCopy` = remove every value, then add one; pseudo
//! headers stay in front), so each stage sees exactly what it would see reading the
//! host after the stages before it.

use std::cell::RefCell;

use std::rc::Rc;

use crate::request::{Headers, RequestHead};
use proxy_wasm::types::MapType;

#[derive(Default)]
struct Shared {
    headers: Option<Headers>,
    source_address: Option<Option<String>>,
}

thread_local! {
    static SHARED: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Runs `stages` with the request head read at most once and shared between them.
/// Only for code that acts on one request, with every header edit made through
/// `plugin`.
pub fn sharing<R>(stages: impl FnOnce() -> R) -> R {
    SHARED.with(|shared| *shared.borrow_mut() = Some(Shared::default()));
    let result = stages();
    SHARED.with(|shared| *shared.borrow_mut() = None);
    result
}

/// A header edit of the request map made through `plugin`: kept in the shared copy.
pub(crate) fn edited(name: &str, value: Option<&str>) {
    SHARED.with(|shared| {
        if let Some(headers) = shared
            .borrow_mut()
            .as_mut()
            .and_then(|s| s.headers.as_mut())
        {
            apply_edit(Rc::make_mut(headers), name, value);
        }
    });
}

/// Envoy's `setCopy`/`remove` on a header list.
fn apply_edit(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    headers.retain(|(n, _)| n != name);
    if let Some(value) = value {
        let at = if name.starts_with(':') {
            headers
                .iter()
                .position(|(n, _)| !n.starts_with(':'))
                .unwrap_or(headers.len())
        } else {
            headers.len()
        };
        headers.insert(at, (name.to_owned(), value.to_owned()));
    }
}

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

/// The request headers: the shared copy when there is one (no host call, no copy), or
/// read from the host (and kept as the shared copy while [`sharing`]).
fn request_headers() -> Headers {
    if let Some(headers) =
        SHARED.with(|shared| shared.borrow().as_ref().and_then(|s| s.headers.clone()))
    {
        return headers;
    }
    let headers = Rc::new(read_headers(MapType::HttpRequestHeaders));
    SHARED.with(|shared| {
        if let Some(shared) = shared.borrow_mut().as_mut() {
            shared.headers = Some(headers.clone());
        }
    });
    headers
}

/// One request header's first value (from the shared copy when there is one): for a
/// filter that can decide from one header before reading them all.
pub fn request_header(name: &str) -> Option<String> {
    let shared = SHARED.with(|shared| {
        shared.borrow().as_ref().and_then(|s| {
            s.headers.as_ref().map(|headers| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        })
    });
    if let Some(value) = shared {
        return value;
    }
    proxy_wasm::hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn source_address() -> Option<String> {
    if let Some(address) = SHARED.with(|shared| {
        shared
            .borrow()
            .as_ref()
            .and_then(|s| s.source_address.clone())
    }) {
        return address;
    }
    let address = proxy_wasm::hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    SHARED.with(|shared| {
        if let Some(shared) = shared.borrow_mut().as_mut() {
            shared.source_address = Some(address.clone());
        }
    });
    address
}

pub fn read_request_head(with_source_address: bool) -> RequestHead {
    read_request_head_with(true, with_source_address)
}

/// The request head with only what is asked for: without `headers` no header is read
/// (a configuration that looks at none saves the call).
pub fn read_request_head_with(headers: bool, with_source_address: bool) -> RequestHead {
    let headers = if headers {
        request_headers()
    } else {
        Headers::default()
    };
    let source_address = if with_source_address {
        source_address()
    } else {
        None
    };
    RequestHead::shared(headers, source_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_edit_replaces_every_value_and_a_removal_removes_them_all() {
        let mut headers = pairs(&[(":path", "/"), ("a", "1"), ("b", "2"), ("a", "3")]);
        apply_edit(&mut headers, "a", Some("9"));
        assert_eq!(headers, pairs(&[(":path", "/"), ("b", "2"), ("a", "9")]));
        apply_edit(&mut headers, "b", None);
        assert_eq!(headers, pairs(&[(":path", "/"), ("a", "9")]));
        apply_edit(&mut headers, "missing", None);
        assert_eq!(headers, pairs(&[(":path", "/"), ("a", "9")]));
    }

    #[test]
    fn a_pseudo_header_stays_in_front() {
        let mut headers = pairs(&[(":method", "GET"), (":path", "/"), ("a", "1")]);
        apply_edit(&mut headers, ":path", Some("/x"));
        assert_eq!(
            headers,
            pairs(&[(":method", "GET"), (":path", "/x"), ("a", "1")])
        );
    }
}
