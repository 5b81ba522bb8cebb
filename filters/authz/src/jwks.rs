//! JSON Web Key Sets (RFC 7517) turned into verification keys. Entries that cannot be
//! used safely are skipped with a warning rather than failing the whole set, the way an
//! issuer's published set often mixes signing and encryption keys: `use` other than
//! `sig`, unknown or incompatible `alg`, RSA moduli under 2048 bits, HMAC secrets
//! shorter than the hash, malformed coordinates.

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use crate::algorithm::{Algorithm, KeyFamily};
use crate::base64url;

/// A published set larger than this is truncated (with a warning): verification tries
/// keys without a `kid` one by one, so the set size bounds per-request work.
pub const MAX_KEYS: usize = 64;
const MIN_RSA_BITS: usize = 2048;

/// One usable verification key.
#[derive(Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when published: then only that algorithm is accepted.
    pub alg: Option<Algorithm>,
    pub family: KeyFamily,
    /// HMAC secret length, checked against the token's hash size at verification.
    pub hmac_len: usize,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family
            && self.alg.is_none_or(|own| own == alg)
            && (self.family != KeyFamily::Hmac || self.hmac_len >= alg.min_hmac_key_bytes())
    }
}

#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

impl KeySet {
    pub fn by_kid(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|key| key.kid.as_deref() == Some(kid))
    }
}

/// A parsed set and what was skipped (each warning names the entry and the reason).
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub set: KeySet,
    pub warnings: Vec<String>,
}

/// Where a key set comes from: HMAC (`oct`) keys are secrets and are accepted only from
/// the filter's own configuration, never from a fetched (usually public) document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Inline,
    Remote,
}

/// Parses a JWKS document. Fails only when the document itself is unusable (not JSON,
/// no `keys` array, or no usable key at all); bad entries become warnings.
pub fn parse(document: &[u8], origin: Origin) -> Result<Parsed, String> {
    let value: Value = serde_json::from_slice(document)
        .map_err(|err| format!("the JWKS is not valid JSON: {err}"))?;
    let entries = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no `keys` array")?;
    let mut parsed = Parsed::default();
    for (index, entry) in entries.iter().enumerate() {
        if parsed.set.keys.len() == MAX_KEYS {
            parsed.warnings.push(format!(
                "keys[{index}..]: more than {MAX_KEYS} keys; the rest are ignored"
            ));
            break;
        }
        match parse_key(entry, origin) {
            Ok(key) => parsed.set.keys.push(key),
            Err(reason) => {
                let kid = entry
                    .get("kid")
                    .and_then(Value::as_str)
                    .unwrap_or("(no kid)");
                parsed
                    .warnings
                    .push(format!("keys[{index}] (kid {kid}) skipped: {reason}"));
            }
        }
    }
    if parsed.set.keys.is_empty() {
        return Err(format!(
            "the JWKS has no usable signing key{}",
            parsed
                .warnings
                .first()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ));
    }
    Ok(parsed)
}

fn parse_key(entry: &Value, origin: Origin) -> Result<Jwk, String> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name).ok_or_else(|| format!("missing `{name}`"))?;
        base64url::decode(value).map_err(|_| format!("`{name}` is not base64url"))
    };
    if let Some(usage) = entry.get("use") {
        if usage != "sig" {
            return Err(format!("`use` is {usage}, not \"sig\""));
        }
    }
    let alg = match text("alg") {
        None => None,
        Some(name) => Some(
            Algorithm::from_name(name)
                .ok_or_else(|| format!("`alg` {name} is not a supported signing algorithm"))?,
        ),
    };
    let kid = match entry.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("`kid` is not a string".into()),
    };
    let kty = text("kty").ok_or("missing `kty`")?;
    let crv = text("crv");
    let (family, key, hmac_len) =
        match (kty, crv) {
            ("RSA", _) => {
                let n = bytes("n")?;
                let e = bytes("e")?;
                let bits = significant_bits(&n);
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "RSA modulus of {bits} bits; at least {MIN_RSA_BITS} required"
                    ));
                }
                // The checks the verifier would otherwise fail on at every request
                // (exponent range, modulus size limit), done once.
                rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(&n),
                    rsa::BigUint::from_bytes_be(&e),
                )
                .map_err(|err| format!("unusable RSA key: {err}"))?;
                (
                    KeyFamily::Rsa,
                    DecodingKey::from_rsa_raw_components(&n, &e),
                    0,
                )
            }
            ("EC", Some("P-256")) => (KeyFamily::P256, ec_key(&bytes("x")?, &bytes("y")?, 32)?, 0),
            ("EC", Some("P-384")) => (KeyFamily::P384, ec_key(&bytes("x")?, &bytes("y")?, 48)?, 0),
            ("EC", other) => return Err(format!("unsupported curve {other:?}")),
            ("OKP", Some("Ed25519")) => {
                let x = bytes("x")?;
                let point: [u8; 32] = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| "Ed25519 `x` must be 32 bytes".to_owned())?;
                ed25519_dalek::VerifyingKey::from_bytes(&point)
                    .map_err(|_| "Ed25519 `x` is not a valid point".to_owned())?;
                let encoded = base64url::encode(&x);
                let key = DecodingKey::from_ed_components(&encoded)
                    .map_err(|err| format!("invalid Ed25519 key: {err}"))?;
                (KeyFamily::Ed25519, key, 0)
            }
            ("OKP", other) => return Err(format!("unsupported curve {other:?}")),
            ("oct", _) if origin == Origin::Remote => return Err(
                "HMAC (`oct`) keys are secrets: accepted inline only, never from a fetched JWKS"
                    .into(),
            ),
            ("oct", _) => {
                let secret = bytes("k")?;
                let needed = alg.map_or(32, Algorithm::min_hmac_key_bytes);
                if secret.len() < needed {
                    return Err(format!(
                        "HMAC secret of {} bytes; at least {needed} required",
                        secret.len()
                    ));
                }
                let len = secret.len();
                (KeyFamily::Hmac, DecodingKey::from_secret(&secret), len)
            }
            (other, _) => return Err(format!("unsupported `kty` {other}")),
        };
    if let Some(alg) = alg {
        if alg.family() != family {
            return Err(format!("`alg` {} does not fit a {kty} key", alg.name()));
        }
    }
    Ok(Jwk {
        kid,
        alg,
        family,
        hmac_len,
        key,
    })
}

fn ec_key(x: &[u8], y: &[u8], coordinate_len: usize) -> Result<DecodingKey, String> {
    if x.len() != coordinate_len || y.len() != coordinate_len {
        return Err(format!(
            "EC coordinates must be {coordinate_len} bytes each"
        ));
    }
    let sec1 = [&[0x04u8][..], x, y].concat();
    let on_curve = match coordinate_len {
        32 => p256::PublicKey::from_sec1_bytes(&sec1).is_ok(),
        _ => p384::PublicKey::from_sec1_bytes(&sec1).is_ok(),
    };
    if !on_curve {
        return Err("the EC point is not on the curve".into());
    }
    DecodingKey::from_ec_components(&base64url::encode(x), &base64url::encode(y))
        .map_err(|err| format!("invalid EC key: {err}"))
}

fn significant_bits(big_endian: &[u8]) -> usize {
    let mut bytes = big_endian.iter().skip_while(|&&b| b == 0);
    match bytes.next() {
        None => 0,
        Some(&first) => {
            let rest = bytes.count();
            rest * 8 + (8 - first.leading_zeros() as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        base64url::encode(bytes)
    }

    fn rsa_entry(bits: usize) -> Value {
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0xc1;
        json!({"kty": "RSA", "kid": format!("rsa{bits}"), "n": b64(&n), "e": "AQAB"})
    }

    #[test]
    fn keeps_usable_keys_and_explains_skipped_ones() {
        let doc = json!({"keys": [
            rsa_entry(2048),
            rsa_entry(1024),
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xff; 256]), "e": "AQAB"},
            {"kty": "oct", "kid": "short", "alg": "HS256", "k": b64(&[7; 16])},
            {"kty": "oct", "kid": "hs512-too-short", "alg": "HS512", "k": b64(&[7; 32])},
            {"kty": "oct", "kid": "ok", "k": b64(&[7; 32])},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "bad-len", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[1; 32])},
            {"kty": "RSA", "kid": "wrong-alg", "alg": "ES256", "n": b64(&[0xff; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": b64(&[0xff; 256]), "e": "AQAB"},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(&[1; 32])},
        ]})
        .to_string();
        let parsed = parse(doc.as_bytes(), Origin::Inline).unwrap();
        let kids: Vec<_> = parsed
            .set
            .keys
            .iter()
            .map(|k| k.kid.clone().unwrap())
            .collect();
        assert_eq!(kids, ["rsa2048", "ok"]);
        assert_eq!(parsed.warnings.len(), 9, "{:#?}", parsed.warnings);
        let all = parsed.warnings.join("\n");
        assert!(all.contains("keys[1] (kid rsa1024) skipped: RSA modulus of 1024 bits"));
        assert!(all.contains("(kid enc) skipped: `use` is \"enc\""));
        assert!(all.contains("(kid short) skipped: HMAC secret of 16 bytes; at least 32"));
        assert!(all.contains("(kid hs512-too-short) skipped: HMAC secret of 32 bytes; at least 64"));
        assert!(all.contains("(kid wrong-alg) skipped: `alg` ES256 does not fit a RSA key"));
        assert!(all.contains("(kid oaep) skipped: `alg` RSA-OAEP is not a supported"));
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        assert!(parse(b"not json", Origin::Inline)
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse(b"{}", Origin::Inline)
            .unwrap_err()
            .contains("no `keys` array"));
        let err = parse(
            json!({"keys": [rsa_entry(1024)]}).to_string().as_bytes(),
            Origin::Inline,
        )
        .unwrap_err();
        assert!(err.contains("no usable signing key"), "{err}");
        assert!(err.contains("1024 bits"), "{err}");
    }

    #[test]
    fn hmac_keys_accept_only_hashes_they_are_long_enough_for() {
        let doc = json!({"keys": [{"kty": "oct", "kid": "k", "k": b64(&[7; 48])}]}).to_string();
        let key = parse(doc.as_bytes(), Origin::Inline)
            .unwrap()
            .set
            .keys
            .remove(0);
        assert!(key.accepts(Algorithm::HS256));
        assert!(key.accepts(Algorithm::HS384));
        assert!(!key.accepts(Algorithm::HS512));
        assert!(!key.accepts(Algorithm::RS256));
    }

    #[test]
    fn a_published_alg_pins_the_key_to_it() {
        let mut entry = rsa_entry(2048);
        entry["alg"] = json!("PS256");
        let doc = json!({"keys": [entry]}).to_string();
        let key = parse(doc.as_bytes(), Origin::Inline)
            .unwrap()
            .set
            .keys
            .remove(0);
        assert!(key.accepts(Algorithm::PS256));
        assert!(!key.accepts(Algorithm::RS256));
        assert!(!key.accepts(Algorithm::HS256));
    }

    #[test]
    fn modulus_size_ignores_leading_zero_bytes() {
        assert_eq!(significant_bits(&[0, 0, 1]), 1);
        assert_eq!(significant_bits(&[0x80, 0]), 16);
        assert_eq!(significant_bits(&[]), 0);
    }
}
