//! Which bucket a request is charged to: the rule's key parts are read from the request
//! and hashed (SHA-256, truncated to 128 bits) into a fixed-size digest, so the stored
//! state is small and a client cannot steer two keys into one bucket.

use meshward_filter_common::digest::{digest_parts, Digest128};
use meshward_filter_common::request::{strip_address_port, RequestHead};

pub type KeyDigest = Digest128;

/// One compiled part of a rule's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The downstream connection's IP address.
    ConnectionAddress,
    /// The client address taken from `x-forwarded-for`, trusting `trusted_hops`
    /// proxies in front of this one (Envoy's `xff_num_trusted_hops` semantics: the
    /// entry `trusted_hops` places from the right). Falls back to the connection
    /// address when the header has too few entries.
    ForwardedFor {
        trusted_hops: u32,
    },
    Header {
        name: String,
        default: Option<String>,
    },
    Path,
    Method,
    QueryParameter {
        name: String,
        default: Option<String>,
    },
    Cookie {
        name: String,
        default: Option<String>,
    },
}

impl KeyPart {
    pub fn needs_source_address(&self) -> bool {
        matches!(
            self,
            KeyPart::ConnectionAddress | KeyPart::ForwardedFor { .. }
        )
    }

    /// Whether the part reads request headers (`ConnectionAddress` reads only the peer).
    pub fn needs_headers(&self) -> bool {
        !matches!(self, KeyPart::ConnectionAddress)
    }

    fn value<'a>(&'a self, request: &'a RequestHead) -> Option<&'a str> {
        match self {
            KeyPart::ConnectionAddress => request.source_ip(),
            KeyPart::ForwardedFor { trusted_hops } => {
                forwarded_client(request, *trusted_hops).or_else(|| request.source_ip())
            }
            KeyPart::Header { name, default } => request.header(name).or(default.as_deref()),
            KeyPart::Path => request.path(),
            KeyPart::Method => request.method(),
            KeyPart::QueryParameter { name, default } => {
                request.query_parameter(name).or(default.as_deref())
            }
            KeyPart::Cookie { name, default } => request.cookie(name).or(default.as_deref()),
        }
    }
}

fn forwarded_client(request: &RequestHead, trusted_hops: u32) -> Option<&str> {
    let entries: Vec<&str> = request
        .header_values("x-forwarded-for")
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let from_right = usize::try_from(trusted_hops).ok()?;
    let index = entries.len().checked_sub(from_right.checked_add(1)?)?;
    entries.get(index).map(|entry| strip_address_port(entry))
}

/// The key a request is charged to, or `None` when a part is missing and has no
/// default (the rule then does not apply to this request).
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    pub digest: KeyDigest,
    /// Human-readable form for debug logs.
    pub display: String,
}

pub fn resolve(parts: &[KeyPart], request: &RequestHead) -> Option<ResolvedKey> {
    values(parts, request).map(|values| resolved(&values))
}

/// Each part's value, or `None` when one is missing without a default.
pub fn values<'a>(parts: &'a [KeyPart], request: &'a RequestHead) -> Option<Vec<&'a str>> {
    parts.iter().map(|part| part.value(request)).collect()
}

/// The key of these values.
pub fn resolved(values: &[&str]) -> ResolvedKey {
    ResolvedKey {
        digest: digest_parts(values.iter().map(|value| value.as_bytes())),
        display: values.join("|"),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn request(headers: &[(&str, &str)], source: Option<&str>) -> RequestHead {
        RequestHead::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source.map(str::to_string),
        )
    }

    #[test]
    fn forwarded_for_honours_trusted_hops() {
        let req = request(
            &[
                ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2"),
            ],
            Some("10.0.0.3:1234"),
        );
        assert_eq!(forwarded_client(&req, 0), Some("10.0.0.2"));
        assert_eq!(forwarded_client(&req, 2), Some("203.0.113.9"));
        assert_eq!(forwarded_client(&req, 3), None);
        let part = KeyPart::ForwardedFor { trusted_hops: 3 };
        assert_eq!(
            part.value(&req),
            Some("10.0.0.3"),
            "too few entries falls back to the peer"
        );
    }

    #[test]
    fn missing_part_without_default_means_no_key() {
        let req = request(&[(":path", "/a")], None);
        let parts = [KeyPart::Header {
            name: "x-api-key".into(),
            default: None,
        }];
        assert!(resolve(&parts, &req).is_none());
        let parts = [KeyPart::Header {
            name: "x-api-key".into(),
            default: Some("anonymous".into()),
        }];
        assert_eq!(resolve(&parts, &req).unwrap().display, "anonymous");
    }

    #[test]
    fn digests_separate_keys_and_part_boundaries() {
        let parts = [
            KeyPart::Header {
                name: "a".into(),
                default: None,
            },
            KeyPart::Header {
                name: "b".into(),
                default: None,
            },
        ];
        let one = resolve(&parts, &request(&[("a", "ab"), ("b", "c")], None)).unwrap();
        let two = resolve(&parts, &request(&[("a", "a"), ("b", "bc")], None)).unwrap();
        let again = resolve(&parts, &request(&[("b", "c"), ("a", "ab")], None)).unwrap();
        assert_ne!(one.digest, two.digest);
        assert_eq!(one.digest, again.digest);
    }

    #[test]
    fn empty_key_is_one_shared_bucket() {
        let a = resolve(&[], &request(&[], None)).unwrap();
        let b = resolve(&[], &request(&[("x", "y")], Some("1.1.1.1:1"))).unwrap();
        assert_eq!(a.digest, b.digest);
    }
}
