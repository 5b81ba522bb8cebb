//! 128-bit digests of request parts (rate-limit keys, idempotency scopes and payload
//! fingerprints): SHA-256 over length-prefixed parts, truncated to 16 bytes — small
//! enough to store per entry, collision-resistant so a client cannot steer two keys
//! into one record.

use sha2::{Digest, Sha256};

pub type Digest128 = [u8; 16];

/// Each part is prefixed with its length (u64, little-endian), so part boundaries
/// cannot be shifted: ("ab", "c") and ("a", "bc") differ.
pub fn digest_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Digest128 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
        hasher.update(part);
    }
    crate::bytes::read_array(&hasher.finalize(), 0)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn part_boundaries_and_order_matter() {
        let ab_c = digest_parts([&b"ab"[..], b"c"]);
        assert_eq!(ab_c, digest_parts([&b"ab"[..], b"c"]));
        assert_ne!(ab_c, digest_parts([&b"a"[..], b"bc"]));
        assert_ne!(ab_c, digest_parts([&b"c"[..], b"ab"]));
        assert_ne!(digest_parts([]), [0u8; 16]);
    }
}
