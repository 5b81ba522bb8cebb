//! Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, and canonical
//! encodings only (unused trailing bits must be zero), so one token has exactly one
//! spelling. A lenient decoder lets `…Q` and `…R` name the same signature, which breaks
//! token-keyed caches and deny lists.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBase64Url;

pub fn decode(text: &str) -> Result<Vec<u8>, NotBase64Url> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| NotBase64Url)
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn accepts_canonical_unpadded_url_safe_text() {
        assert_eq!(decode("aGk").unwrap(), b"hi");
        assert_eq!(decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(decode("").unwrap(), b"");
    }

    #[test]
    fn rejects_padding_standard_alphabet_and_non_canonical_bits() {
        assert_eq!(decode("aGk="), Err(NotBase64Url));
        assert_eq!(decode("+/8"), Err(NotBase64Url));
        // "aGl" decodes to "hi" only if the unused low bits are ignored.
        assert_eq!(decode("aGl"), Err(NotBase64Url));
        assert_eq!(decode("a"), Err(NotBase64Url));
        assert_eq!(decode("aG k"), Err(NotBase64Url));
    }
}
