//! Compact JWS parsing (RFC 7515 §7.1) with the checks that come before any key is
//! looked at: size first (before decoding anything), exactly three strict base64url
//! segments, a JSON-object header whose `alg` is a supported algorithm (`none` in any
//! casing is refused outright) and whose `crit` names nothing we do not implement
//! (we implement no extensions), and a JSON-object payload.
//!
//! Embedded key headers (`jwk`, `jku`, `x5u`, `x5c`) are never read: keys come only
//! from the provider's configured key set.

use serde_json::{Map, Value};

use crate::algorithm::Algorithm;
use crate::base64url;

/// Why a token was refused before signature verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    TooLarge { max: usize },
    Malformed(&'static str),
    AlgNone,
    UnsupportedAlgorithm(String),
    UnsupportedCritical(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::TooLarge { max } => write!(f, "the token is larger than {max} bytes"),
            TokenError::Malformed(what) => write!(f, "the token is malformed: {what}"),
            TokenError::AlgNone => f.write_str("unsigned tokens (alg none) are not accepted"),
            TokenError::UnsupportedAlgorithm(_) => {
                f.write_str("the token's signing algorithm is not supported")
            }
            TokenError::UnsupportedCritical(_) => {
                f.write_str("the token requires an unsupported critical header extension")
            }
        }
    }
}

/// A syntactically valid compact JWS; nothing about it is trusted yet.
#[derive(Debug, Clone)]
pub struct Token<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub payload: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The payload segment as received (forwarded as is when configured).
    pub payload_segment: &'a str,
    pub signature: Vec<u8>,
    pub signature_segment: &'a str,
}

pub fn parse(raw: &str, max_bytes: usize) -> Result<Token<'_>, TokenError> {
    if raw.len() > max_bytes {
        return Err(TokenError::TooLarge { max: max_bytes });
    }
    let mut segments = raw.split('.');
    let (Some(header_segment), Some(payload_segment), Some(signature_segment), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Malformed(
            "expected three dot-separated segments",
        ));
    };
    let signing_input = raw
        .get(..header_segment.len() + 1 + payload_segment.len())
        .ok_or(TokenError::Malformed(
            "expected three dot-separated segments",
        ))?;

    let header = decode_object(header_segment, "the header")?;
    let (alg, kid) = read_header(&header)?;
    let payload = decode_object(payload_segment, "the payload")?;
    if signature_segment.is_empty() {
        return Err(TokenError::Malformed("the signature is empty"));
    }
    let signature = base64url::decode(signature_segment)
        .map_err(|_| TokenError::Malformed("the signature is not canonical base64url"))?;
    Ok(Token {
        alg,
        kid,
        payload,
        signing_input,
        payload_segment,
        signature,
        signature_segment,
    })
}

fn decode_object(segment: &str, which: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = base64url::decode(segment).map_err(|_| {
        TokenError::Malformed(match which {
            "the header" => "the header is not canonical base64url",
            _ => "the payload is not canonical base64url",
        })
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(TokenError::Malformed(match which {
            "the header" => "the header is not a JSON object",
            _ => "the payload is not a JSON object",
        })),
    }
}

fn read_header(header: &Map<String, Value>) -> Result<(Algorithm, Option<String>), TokenError> {
    let alg = match header.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(TokenError::AlgNone)
        }
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| TokenError::UnsupportedAlgorithm(name.clone()))?,
        _ => return Err(TokenError::Malformed("the header has no `alg` string")),
    };
    if let Some(crit) = header.get("crit") {
        // RFC 7515 §4.1.11: a non-empty array of names; we understand none of them.
        let names = crit
            .as_array()
            .filter(|names| !names.is_empty())
            .ok_or(TokenError::Malformed("`crit` must be a non-empty array"))?;
        let first = names
            .first()
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed("`crit` must list header names"))?;
        return Err(TokenError::UnsupportedCritical(first.to_owned()));
    }
    // RFC 7797 unencoded payloads change what is signed; refuse rather than misverify.
    if header
        .get("b64")
        .is_some_and(|b64| b64 != &Value::Bool(true))
    {
        return Err(TokenError::UnsupportedCritical("b64".to_owned()));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed("`kid` must be a string")),
    };
    Ok((alg, kid))
}

/// The unverified `iss` claim, used only to pick which provider verifies the token.
pub fn issuer<'t>(token: &'t Token<'_>) -> Option<&'t str> {
    token.payload.get("iss").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn seg(value: &Value) -> String {
        base64url::encode(value.to_string().as_bytes())
    }

    fn token(header: Value, payload: Value) -> String {
        format!("{}.{}.c2ln", seg(&header), seg(&payload))
    }

    #[test]
    fn parses_a_well_formed_token() {
        let raw = token(
            json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}),
            json!({"iss": "https://issuer", "sub": "alice"}),
        );
        let parsed = parse(&raw, 8192).unwrap();
        assert_eq!(parsed.alg, Algorithm::ES256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.signature, b"sig");
        assert_eq!(issuer(&parsed), Some("https://issuer"));
        assert_eq!(
            parsed.signing_input,
            raw.rsplit_once('.').map(|(input, _)| input).unwrap()
        );
    }

    #[test]
    fn rejects_alg_none_in_any_casing() {
        for none in ["none", "None", "NONE", "nOnE"] {
            let raw = token(json!({"alg": none}), json!({"sub": "x"}));
            assert_eq!(
                parse(&raw, 8192).unwrap_err(),
                TokenError::AlgNone,
                "{none}"
            );
        }
    }

    #[test]
    fn rejects_unknown_algorithms_and_missing_alg() {
        let raw = token(json!({"alg": "HS1"}), json!({}));
        assert_eq!(
            parse(&raw, 8192).unwrap_err(),
            TokenError::UnsupportedAlgorithm("HS1".into())
        );
        let raw = token(json!({"kid": "k"}), json!({}));
        assert!(matches!(parse(&raw, 8192), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn rejects_critical_extensions_and_unencoded_payloads() {
        let raw = token(
            json!({"alg": "RS256", "crit": ["exp"], "exp": 1}),
            json!({}),
        );
        assert_eq!(
            parse(&raw, 8192).unwrap_err(),
            TokenError::UnsupportedCritical("exp".into())
        );
        let raw = token(json!({"alg": "RS256", "crit": []}), json!({}));
        assert!(matches!(parse(&raw, 8192), Err(TokenError::Malformed(_))));
        let raw = token(json!({"alg": "RS256", "b64": false}), json!({}));
        assert_eq!(
            parse(&raw, 8192).unwrap_err(),
            TokenError::UnsupportedCritical("b64".into())
        );
    }

    #[test]
    fn rejects_non_canonical_or_malformed_segments() {
        let good = token(json!({"alg": "RS256"}), json!({"sub": "a"}));
        let (header, rest) = good.split_once('.').unwrap();
        // Padding, standard alphabet, and a flipped unused trailing bit.
        for bad in [
            format!("{header}=.{rest}"),
            format!("{}.{rest}", header.replacen('J', "+", 1)),
            format!("{good}.extra"),
            good.replace(".c2ln", ".c2l"),
            good.replace(".c2ln", "."),
            "onlyone".to_owned(),
            format!("{header}.{}.c2ln", base64url::encode(b"[1,2]")),
            format!("{}.{rest}", base64url::encode(b"not json")),
        ] {
            assert!(
                matches!(parse(&bad, 8192), Err(TokenError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn size_is_checked_before_decoding() {
        let garbage = "!".repeat(9000);
        assert_eq!(
            parse(&garbage, 8192).unwrap_err(),
            TokenError::TooLarge { max: 8192 }
        );
    }

    #[test]
    fn embedded_key_headers_are_ignored_not_used() {
        let raw = token(
            json!({"alg": "RS256", "jku": "https://evil/jwks", "jwk": {"kty": "RSA"}, "x5u": "https://evil", "x5c": ["AAAA"]}),
            json!({}),
        );
        let parsed = parse(&raw, 8192).unwrap();
        assert_eq!(parsed.kid, None);
    }
}
