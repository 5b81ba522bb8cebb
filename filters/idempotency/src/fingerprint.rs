//! What identifies a request's payload (SHA-256 over method, path, query and body) and
//! which record a request belongs to (the scope: caller identity, method, route and
//! client key), both as 128-bit digests.

use meshward_filter_common::digest::digest_parts;
pub use meshward_filter_common::digest::Digest128;

/// `:path` is split into path and query by the caller's [`RequestHead`] accessors; the
/// full `:path` is used here so the query is covered byte for byte.
pub fn fingerprint(method: &str, full_path: &str, body: &[u8]) -> Digest128 {
    digest_parts([method.as_bytes(), full_path.as_bytes(), body])
}

/// The record a request maps to: one caller can never reach another caller's record.
pub fn scope(identity: &[&str], method: &str, route: &str, key: &str) -> Digest128 {
    let mut parts: Vec<&[u8]> = identity.iter().map(|part| part.as_bytes()).collect();
    parts.extend([method.as_bytes(), route.as_bytes(), key.as_bytes()]);
    digest_parts(parts)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn fingerprints_cover_method_path_query_and_body() {
        let base = fingerprint("POST", "/orders?x=1", b"{}");
        assert_eq!(base, fingerprint("POST", "/orders?x=1", b"{}"));
        assert_ne!(base, fingerprint("PATCH", "/orders?x=1", b"{}"));
        assert_ne!(base, fingerprint("POST", "/orders?x=2", b"{}"));
        assert_ne!(base, fingerprint("POST", "/orders?x=1", b"{ }"));
    }

    #[test]
    fn scopes_separate_callers_and_part_boundaries() {
        assert_ne!(
            scope(&["alice"], "POST", "r", "k"),
            scope(&["bob"], "POST", "r", "k")
        );
        assert_ne!(
            scope(&["ab"], "POST", "r", "k"),
            scope(&["a", "b"], "POST", "r", "k")
        );
        assert_eq!(
            scope(&["alice"], "POST", "r", "k"),
            scope(&["alice"], "POST", "r", "k")
        );
    }
}
