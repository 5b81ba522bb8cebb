//! What a verified token adds to the request: the principal header (`iss/sub`, the
//! form Istio uses for request principals), configured claims as headers, and
//! optionally the payload segment. Values that could not be sent safely as a header
//! (control characters) are dropped, never forwarded half-cleaned.

use serde_json::Value;

use crate::config::Provider;
use crate::rules::lookup;

/// A verified token, as cached and as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub provider: usize,
    pub claims: serde_json::Map<String, Value>,
    /// `iss/sub`, when the token has a string `sub`.
    pub principal: Option<String>,
    pub payload_segment: String,
}

/// A claim as a header value: strings as they are, numbers and booleans printed,
/// arrays of those joined by `,`. Objects, nulls and unsafe text give `None`.
pub fn claim_header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts = items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            parts.join(",")
        }
        _ => return None,
    };
    is_header_safe(&text).then_some(text)
}

/// RFC 9110 field-value: visible characters, spaces and tabs (obs-text allowed), and no
/// surrounding whitespace.
fn is_header_safe(text: &str) -> bool {
    !text.starts_with([' ', '\t'])
        && !text.ends_with([' ', '\t'])
        && text
            .chars()
            .all(|c| c == '\t' || (c >= ' ' && c != '\u{7f}'))
}

/// Headers to add for `identity`, verified by `provider`.
pub fn identity_headers(
    provider: &Provider,
    identity: &Identity,
    principal_header: &str,
) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(provider.claim_headers.len() + 2);
    if let Some(principal) = identity.principal.as_ref().filter(|p| is_header_safe(p)) {
        headers.push((principal_header.to_owned(), principal.clone()));
    }
    for (claim, header) in &provider.claim_headers {
        if let Some(value) = lookup(&identity.claims, claim).and_then(claim_header_value) {
            headers.push((header.clone(), value));
        }
    }
    if let Some(header) = &provider.payload_header {
        headers.push((header.clone(), identity.payload_segment.clone()));
    }
    headers
}

/// `iss/sub`, when both are strings.
pub fn principal(claims: &serde_json::Map<String, Value>) -> Option<String> {
    let iss = claims.get("iss")?.as_str()?;
    let sub = claims.get("sub")?.as_str()?;
    Some(format!("{iss}/{sub}"))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_and_arrays_become_header_values() {
        assert_eq!(
            claim_header_value(&json!("alice")).as_deref(),
            Some("alice")
        );
        assert_eq!(claim_header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(claim_header_value(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(claim_header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(
            claim_header_value(&json!(["admin", "ops", 7])).as_deref(),
            Some("admin,ops,7")
        );
        assert_eq!(claim_header_value(&json!({"a": 1})), None);
        assert_eq!(claim_header_value(&json!([{"a": 1}])), None);
        assert_eq!(claim_header_value(&json!(null)), None);
    }

    #[test]
    fn values_that_could_split_or_corrupt_a_header_are_dropped() {
        for bad in [
            "a\r\nx-admin: true",
            "a\nb",
            "nul\0",
            "del\u{7f}",
            " lead",
            "trail ",
        ] {
            assert_eq!(claim_header_value(&json!(bad)), None, "{bad:?}");
        }
        assert_eq!(
            claim_header_value(&json!("tab\tinside")).as_deref(),
            Some("tab\tinside")
        );
        assert_eq!(
            claim_header_value(&json!("héllo")).as_deref(),
            Some("héllo")
        );
    }

    #[test]
    fn principal_is_issuer_slash_subject() {
        let claims = json!({"iss": "https://id.example/", "sub": "u1"});
        assert_eq!(
            principal(claims.as_object().unwrap()).as_deref(),
            Some("https://id.example//u1")
        );
        let no_sub = json!({"iss": "https://id.example/"});
        assert_eq!(principal(no_sub.as_object().unwrap()), None);
    }
}
