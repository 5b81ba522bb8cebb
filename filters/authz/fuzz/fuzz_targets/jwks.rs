//! JSON Web Key Sets (RFC 7517) and signature verification with the keys they give.
//!
//! Input: the JWKS document on the first line, optionally a token on the second; the
//! fixture tokens (signed by the fixture set, see src/lib.rs) are always verified too.
//! Properties of a set that loads: 1 to 64 keys; a key's published `alg` fits its
//! family; HMAC keys only from inline sets and never shorter than their hash; a fetched
//! (remote) set is the inline set without its HMAC keys. Verification: a token verifies
//! only with a key that accepts its `alg` (and carries its `kid`), never when its
//! signature is altered or its `alg` is outside the allowlist; an HS256 token forged with
//! the set's public material as the secret (key confusion) never verifies against a
//! fetched set.

#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use meshward_authz::algorithm::{Algorithm, KeyFamily};
use meshward_authz::base64url;
use meshward_authz::jwks::{self, KeySet, Origin, MAX_KEYS};
use meshward_authz::token;
use meshward_authz::verify::{verify_signature, SignatureError};
use meshward_authz_fuzz::TOKENS;
use serde_json::{json, Value};

fn check_set(set: &KeySet, origin: Origin) {
    assert!((1..=MAX_KEYS).contains(&set.keys.len()));
    for key in &set.keys {
        if let Some(alg) = key.alg {
            assert_eq!(alg.family(), key.family, "{key:?}");
        }
        if key.family == KeyFamily::Hmac {
            assert_eq!(origin, Origin::Inline, "HMAC secrets only inline");
            assert!(key.hmac_len >= key.alg.map_or(32, Algorithm::min_hmac_key_bytes));
        } else {
            assert_eq!(key.hmac_len, 0);
        }
    }
}

fn summary(set: &KeySet) -> Vec<(Option<String>, Option<Algorithm>, KeyFamily)> {
    set.keys
        .iter()
        .map(|k| (k.kid.clone(), k.alg, k.family))
        .collect()
}

/// Verifies `raw` against `set`, checking what an acceptance implies.
fn verify(raw: &str, set: &KeySet, tamper: bool) {
    let Ok(token) = token::parse(raw, 16 * 1024) else {
        return;
    };
    let other = Algorithm::ALL
        .into_iter()
        .find(|alg| *alg != token.alg)
        .expect("twelve algorithms");
    assert!(matches!(
        verify_signature(&token, set, &[other]),
        Err(SignatureError::AlgorithmNotAllowed)
    ));
    if verify_signature(&token, set, &[]).is_err() {
        return;
    }
    assert!(
        set.keys.iter().any(|key| key.accepts(token.alg)
            && token
                .kid
                .as_ref()
                .is_none_or(|kid| key.kid.as_ref() == Some(kid))),
        "{raw} verified without a key for it"
    );
    assert!(verify_signature(&token, set, &[token.alg]).is_ok());
    if tamper {
        let mut signature = token.signature.clone();
        if let Some(first) = signature.first_mut() {
            *first ^= 0x01;
        }
        let altered = format!("{}.{}", token.signing_input, base64url::encode(&signature));
        if let Ok(altered) = token::parse(&altered, 16 * 1024) {
            assert!(
                verify_signature(&altered, set, &[]).is_err(),
                "{raw} verified with an altered signature"
            );
        }
    }
}

/// HS256 tokens signed with each key's public material as the HMAC secret.
fn forged(document: &Value) -> Vec<String> {
    let mut tokens = Vec::new();
    let entries = document.get("keys").and_then(Value::as_array);
    for entry in entries.into_iter().flatten().take(8) {
        let mut secrets: Vec<Vec<u8>> = vec![entry.to_string().into_bytes()];
        for member in ["n", "x", "y"] {
            if let Some(bytes) = entry
                .get(member)
                .and_then(Value::as_str)
                .and_then(|text| base64url::decode(text).ok())
            {
                secrets.push(bytes);
            }
        }
        let header = match entry.get("kid") {
            Some(kid) => json!({"alg": "HS256", "kid": kid}),
            None => json!({"alg": "HS256"}),
        };
        let input = format!(
            "{}.{}",
            base64url::encode(header.to_string().as_bytes()),
            base64url::encode(br#"{"iss":"https://issuer.example","sub":"mallory"}"#)
        );
        for secret in secrets {
            let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&secret) else {
                continue;
            };
            mac.update(input.as_bytes());
            let signature = mac.finalize().into_bytes();
            tokens.push(format!("{input}.{}", base64url::encode(&signature)));
        }
    }
    tokens
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (document, extra) = text.split_once('\n').unwrap_or((&text, ""));
    let inline = jwks::parse(document.as_bytes(), Origin::Inline);
    let remote = jwks::parse(document.as_bytes(), Origin::Remote);
    if let Ok(parsed) = &inline {
        check_set(&parsed.set, Origin::Inline);
    }
    if let Ok(parsed) = &remote {
        check_set(&parsed.set, Origin::Remote);
    }
    match (&inline, &remote) {
        (Ok(i), Ok(r)) if i.set.keys.len() < MAX_KEYS => {
            let mut expected = summary(&i.set);
            expected.retain(|(_, _, family)| *family != KeyFamily::Hmac);
            assert_eq!(summary(&r.set), expected);
        }
        (Ok(i), Err(_)) if i.set.keys.len() < MAX_KEYS => {
            assert!(i.set.keys.iter().all(|k| k.family == KeyFamily::Hmac));
        }
        (Err(_), Ok(_)) => panic!("a fetched set loads where the inline one does not"),
        _ => {}
    }

    let extra = extra.trim();
    for (origin, parsed) in [(Origin::Inline, &inline), (Origin::Remote, &remote)] {
        let Ok(parsed) = parsed else { continue };
        let tamper = origin == Origin::Inline;
        for raw in TOKENS
            .iter()
            .copied()
            .chain((!extra.is_empty()).then_some(extra))
        {
            verify(raw, &parsed.set, tamper);
        }
    }
    if let (Ok(parsed), Ok(document)) = (&remote, serde_json::from_str::<Value>(document)) {
        for raw in forged(&document) {
            let token = token::parse(&raw, 16 * 1024).expect("a forged token is well formed");
            assert!(
                verify_signature(&token, &parsed.set, &[]).is_err(),
                "key confusion: {raw} verified against a fetched set"
            );
        }
    }
});
