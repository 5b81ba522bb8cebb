//! Signature verification: choose the key, check that it may verify the token's `alg`
//! (key confusion is refused here), check ECDSA scalars, then let `jsonwebtoken`'s
//! RustCrypto backend do the arithmetic.

use crate::algorithm::{ecdsa_scalars_in_range, Algorithm};
use crate::jwks::{Jwk, KeySet};
use crate::token::Token;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The token names a `kid` the key set does not have.
    UnknownKid,
    /// The `alg` is outside the provider's allowlist, or no key may verify it
    /// (an HMAC token against an RSA key is this case).
    AlgorithmNotAllowed,
    BadSignature,
}

/// Verifies `token` against `keys`. `allowed` is the provider's algorithm allowlist
/// (empty: any algorithm the key accepts).
pub fn verify_signature(
    token: &Token<'_>,
    keys: &KeySet,
    allowed: &[Algorithm],
) -> Result<(), SignatureError> {
    if !allowed.is_empty() && !allowed.contains(&token.alg) {
        return Err(SignatureError::AlgorithmNotAllowed);
    }
    match &token.kid {
        Some(kid) => {
            // A set may reuse a `kid` across key types: take the one that fits `alg`.
            let mut named = keys
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid.as_str()));
            let first = named.next().ok_or(SignatureError::UnknownKid)?;
            let key = std::iter::once(first)
                .chain(named)
                .find(|key| key.accepts(token.alg))
                .ok_or(SignatureError::AlgorithmNotAllowed)?;
            scalars_in_range(token)?;
            check(token, key)
        }
        // No `kid`: try every key that may verify this algorithm (the set is bounded).
        None => {
            let mut candidates = keys.keys.iter().filter(|key| key.accepts(token.alg));
            let first = candidates
                .next()
                .ok_or(SignatureError::AlgorithmNotAllowed)?;
            scalars_in_range(token)?;
            std::iter::once(first)
                .chain(candidates)
                .find(|key| check(token, key).is_ok())
                .map(|_| ())
                .ok_or(SignatureError::BadSignature)
        }
    }
}

fn scalars_in_range(token: &Token<'_>) -> Result<(), SignatureError> {
    match token.alg.ecdsa_order() {
        Some(order) if !ecdsa_scalars_in_range(&token.signature, order) => {
            Err(SignatureError::BadSignature)
        }
        _ => Ok(()),
    }
}

fn check(token: &Token<'_>, key: &Jwk) -> Result<(), SignatureError> {
    match jsonwebtoken::crypto::verify(
        token.signature_segment,
        token.signing_input.as_bytes(),
        &key.key,
        token.alg.to_jsonwebtoken(),
    ) {
        Ok(true) => Ok(()),
        _ => Err(SignatureError::BadSignature),
    }
}
