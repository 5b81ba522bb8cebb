//! Compact JWS parsing (JWT header, segments, token) before any key is involved.
//!
//! The input is used twice. As a raw token: whatever parses has exactly three segments,
//! the signing input and segments as received, a canonical signature that is not empty,
//! a header that is a JSON object whose `alg` is the algorithm reported (never `none`),
//! without `crit`, with `b64` absent or `true`, whose `kid` is the one reported, and a
//! JSON-object payload; the size limit is exact. As lines `header JSON`, `payload JSON`,
//! `signature bytes` encoded into a token: an `alg` of `none` in any casing is refused as
//! such; a JSON-object header with a supported `alg`, no `crit` or `b64`, a string or no
//! `kid`, a JSON-object payload and a signature is accepted; and what is accepted
//! passes the raw-token checks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_authz::algorithm::Algorithm;
use meshward_authz::base64url;
use meshward_authz::token::{self, TokenError};
use serde_json::Value;

fn object(segment: &str) -> serde_json::Map<String, Value> {
    let bytes = base64url::decode(segment).expect("an accepted segment is base64url");
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => map,
        other => panic!("an accepted segment is a JSON object, got {other:?}"),
    }
}

fn check_accepted(raw: &str) {
    let Ok(token) = token::parse(raw, raw.len()) else {
        return;
    };
    if let Some(smaller) = raw.len().checked_sub(1) {
        assert_eq!(
            token::parse(raw, smaller).err(),
            Some(TokenError::TooLarge { max: smaller })
        );
    }
    let segments: Vec<&str> = raw.split('.').collect();
    let [header, payload, signature] = segments.as_slice() else {
        panic!("{raw:?} was accepted without three segments");
    };
    assert_eq!(token.signing_input, format!("{header}.{payload}"));
    assert_eq!(token.payload_segment, *payload);
    assert_eq!(token.signature_segment, *signature);
    assert!(!token.signature.is_empty());
    assert_eq!(base64url::encode(&token.signature), *signature);

    let header = object(header);
    assert_eq!(
        header.get("alg").and_then(Value::as_str),
        Some(token.alg.name())
    );
    assert!(!token.alg.name().eq_ignore_ascii_case("none"));
    assert!(header.get("crit").is_none(), "crit is never accepted");
    assert!(matches!(header.get("b64"), None | Some(Value::Bool(true))));
    assert_eq!(
        header.get("kid").and_then(Value::as_str),
        token.kid.as_deref()
    );
    assert_eq!(object(payload), token.payload);
    assert_eq!(
        token::issuer(&token),
        token.payload.get("iss").and_then(Value::as_str)
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_accepted(&text);

    let mut lines = text.splitn(3, '\n');
    let (header_text, payload_text, signature) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    let raw = format!(
        "{}.{}.{}",
        base64url::encode(header_text.as_bytes()),
        base64url::encode(payload_text.as_bytes()),
        base64url::encode(signature.as_bytes())
    );
    check_accepted(&raw);
    let parsed = token::parse(&raw, raw.len());
    let header: Option<Value> = serde_json::from_str(header_text).ok();
    let header = header.as_ref().and_then(Value::as_object);
    let alg = header.and_then(|h| h.get("alg")).and_then(Value::as_str);
    if alg.is_some_and(|alg| alg.eq_ignore_ascii_case("none")) {
        assert_eq!(parsed.err(), Some(TokenError::AlgNone), "{header_text}");
        return;
    }
    let payload_is_object = matches!(serde_json::from_str(payload_text), Ok(Value::Object(_)));
    let well_formed = header.is_some_and(|h| {
        alg.and_then(Algorithm::from_name).is_some()
            && h.get("crit").is_none()
            && h.get("b64").is_none()
            && matches!(h.get("kid"), None | Some(Value::String(_)))
    }) && payload_is_object
        && !signature.is_empty();
    if well_formed {
        let token = parsed.unwrap_or_else(|err| panic!("{raw:?} refused: {err}"));
        assert_eq!(Some(token.alg.name()), alg);
    }
});
