//! Test-only JWT kit: generates signing keys, publishes their public halves as a JWKS
//! document and signs compact JWS tokens with every algorithm Meshward accepts.
//!
//! It signs with the RustCrypto primitives directly (not with `jsonwebtoken`, which the
//! authz filter verifies with), so a bug in how the filter drives `jsonwebtoken` cannot
//! be mirrored by the signer and cancel out. Used by the authz unit tests, the e2e
//! suite and the authz benchmark.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_core::OsRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer as _};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};
use sha2::{Sha256, Sha384, Sha512};

/// Every algorithm Meshward accepts, by its JOSE name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }
}

enum KeyMaterial {
    Hmac(Vec<u8>),
    Rsa(&'static RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// One signing key with its `kid` and algorithm.
pub struct Signer {
    pub alg: Alg,
    pub kid: String,
    key: KeyMaterial,
}

/// RSA-2048 keys are slow to generate; a test binary shares a small pool of them.
/// `slot` picks a distinct key (key rotation tests need two).
pub fn rsa_key(slot: usize) -> &'static RsaPrivateKey {
    static POOL: [OnceLock<RsaPrivateKey>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    POOL[slot % POOL.len()]
        .get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA-2048 key generation"))
}

impl Signer {
    /// A fresh key for `alg` (HMAC: a random secret as long as the hash; RSA: pool slot 0).
    pub fn generate(alg: Alg, kid: &str) -> Self {
        Self::generate_in_slot(alg, kid, 0)
    }

    /// Like [`Signer::generate`], RSA keys taken from pool `slot`.
    pub fn generate_in_slot(alg: Alg, kid: &str, slot: usize) -> Self {
        let key = match alg {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => {
                let mut secret = vec![0u8; hash_len(alg)];
                rand_core::RngCore::fill_bytes(&mut OsRng, &mut secret);
                KeyMaterial::Hmac(secret)
            }
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyMaterial::Rsa(rsa_key(slot))
            }
            Alg::ES256 => KeyMaterial::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Alg::ES384 => KeyMaterial::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
            Alg::EdDSA => KeyMaterial::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
        };
        Self {
            alg,
            kid: kid.to_owned(),
            key,
        }
    }

    /// An HMAC signer with a given secret (any length, so short-key tests can be written).
    pub fn hmac(alg: Alg, kid: &str, secret: &[u8]) -> Self {
        assert!(matches!(alg, Alg::HS256 | Alg::HS384 | Alg::HS512));
        Self {
            alg,
            kid: kid.to_owned(),
            key: KeyMaterial::Hmac(secret.to_vec()),
        }
    }

    /// The same key material, presented under another algorithm (for confusion tests).
    pub fn with_alg(mut self, alg: Alg) -> Self {
        self.alg = alg;
        self
    }

    /// The key as it appears in a JWKS: public half only (HMAC: the secret, `kty: oct`),
    /// with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.key {
            KeyMaterial::Hmac(secret) => json!({"kty": "oct", "k": b64(secret)}),
            KeyMaterial::Rsa(key) => json!({
                "kty": "RSA",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            }),
            KeyMaterial::P256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256",
                       "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))})
            }
            KeyMaterial::P384(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-384",
                       "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))})
            }
            KeyMaterial::Ed25519(key) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())})
            }
        };
        let object = jwk.as_object_mut().expect("object");
        object.insert("kid".into(), json!(self.kid));
        object.insert("alg".into(), json!(self.alg.name()));
        object.insert("use".into(), json!("sig"));
        jwk
    }

    /// The RSA modulus bytes: public material an attacker could use as an HMAC secret
    /// (the classic key-confusion forgery).
    pub fn rsa_public_modulus(&self) -> Option<Vec<u8>> {
        match &self.key {
            KeyMaterial::Rsa(key) => Some(key.n().to_bytes_be()),
            _ => None,
        }
    }

    /// Signs `claims` with the header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({}), claims)
    }

    /// Signs with extra header members merged over the default header (`null` removes one).
    pub fn sign_with_header(&self, extra_header: &Value, claims: &Value) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), json!(self.alg.name()));
        header.insert("typ".into(), json!("JWT"));
        header.insert("kid".into(), json!(self.kid));
        if let Some(extra) = extra_header.as_object() {
            for (name, value) in extra {
                if value.is_null() {
                    header.remove(name);
                } else {
                    header.insert(name.clone(), value.clone());
                }
            }
        }
        let signing_input = format!(
            "{}.{}",
            b64(Value::Object(header).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.signature(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }

    /// The raw JWS signature over `message` with this key and algorithm.
    pub fn signature(&self, message: &[u8]) -> Vec<u8> {
        match (&self.key, self.alg) {
            (KeyMaterial::Hmac(secret), Alg::HS256) => hmac_sign::<Hmac<Sha256>>(secret, message),
            (KeyMaterial::Hmac(secret), Alg::HS384) => hmac_sign::<Hmac<Sha384>>(secret, message),
            (KeyMaterial::Hmac(secret), Alg::HS512) => hmac_sign::<Hmac<Sha512>>(secret, message),
            (KeyMaterial::Rsa(key), Alg::RS256) => {
                rsa::pkcs1v15::SigningKey::<Sha256>::new((*key).clone())
                    .sign(message)
                    .to_vec()
            }
            (KeyMaterial::Rsa(key), Alg::RS384) => {
                rsa::pkcs1v15::SigningKey::<Sha384>::new((*key).clone())
                    .sign(message)
                    .to_vec()
            }
            (KeyMaterial::Rsa(key), Alg::RS512) => {
                rsa::pkcs1v15::SigningKey::<Sha512>::new((*key).clone())
                    .sign(message)
                    .to_vec()
            }
            (KeyMaterial::Rsa(key), Alg::PS256) => {
                rsa::pss::SigningKey::<Sha256>::new((*key).clone())
                    .sign_with_rng(&mut OsRng, message)
                    .to_vec()
            }
            (KeyMaterial::Rsa(key), Alg::PS384) => {
                rsa::pss::SigningKey::<Sha384>::new((*key).clone())
                    .sign_with_rng(&mut OsRng, message)
                    .to_vec()
            }
            (KeyMaterial::Rsa(key), Alg::PS512) => {
                rsa::pss::SigningKey::<Sha512>::new((*key).clone())
                    .sign_with_rng(&mut OsRng, message)
                    .to_vec()
            }
            (KeyMaterial::P256(key), Alg::ES256) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            (KeyMaterial::P384(key), Alg::ES384) => {
                let signature: p384::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            (KeyMaterial::Ed25519(key), Alg::EdDSA) => {
                use ed25519_dalek::Signer as _;
                key.sign(message).to_bytes().to_vec()
            }
            (_, alg) => panic!("this key cannot sign {}", alg.name()),
        }
    }
}

fn hash_len(alg: Alg) -> usize {
    match alg {
        Alg::HS384 => 48,
        Alg::HS512 => 64,
        _ => 32,
    }
}

fn hmac_sign<M: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A JWKS document (`{"keys": [...]}`) with the public halves of `signers`.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.public_jwk()).collect::<Vec<_>>()}).to_string()
}

/// base64url without padding, as JOSE writes it.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header and an empty signature (`alg: none` style).
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// Seconds since the Unix epoch, for `exp`/`nbf`/`iat`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
