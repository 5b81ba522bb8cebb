//! Strict base64url (RFC 7515 §2), the decoder of every JWT segment and JWK member.
//!
//! Properties: decode ∘ encode is the identity on bytes, and encoding uses only the
//! URL-safe alphabet without padding, ⌈4n/3⌉ characters; a string decodes exactly when a
//! reference decoder written from the RFC accepts it (alphabet, no padding, length not
//! 1 mod 4, unused trailing bits zero), to the same bytes — so every decodable string is
//! the encoding of what it decodes to (one spelling per value); padding, the standard
//! alphabet and whitespace are refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_authz::base64url::{decode, encode};

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// RFC 4648 §5 without padding, canonical only.
fn reference(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut bits = 0u32;
        for c in chunk {
            bits = (bits << 6) | sextet(*c)?;
        }
        let (value, count) = match chunk.len() {
            4 => (bits, 3),
            3 => {
                if bits & 0b11 != 0 {
                    return None;
                }
                (bits >> 2, 2)
            }
            2 => {
                if bits & 0b1111 != 0 {
                    return None;
                }
                (bits >> 4, 1)
            }
            _ => return None,
        };
        for i in (0..count).rev() {
            out.push((value >> (8 * i)) as u8);
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let text = encode(data);
    assert_eq!(text.len(), (data.len() * 4).div_ceil(3));
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(decode(&text).as_deref(), Ok(data));
    assert_eq!(reference(&text).as_deref(), Some(data));
    if !text.is_empty() {
        for spoiled in [
            format!("{text}="),
            format!("{text} "),
            text.replace('-', "+").replace('_', "/"),
        ] {
            if spoiled != text {
                assert!(decode(&spoiled).is_err(), "{spoiled:?}");
            }
        }
    }

    let input = String::from_utf8_lossy(data);
    let decoded = decode(&input).ok();
    assert_eq!(decoded, reference(&input), "{input:?}");
    if let Some(bytes) = decoded {
        assert_eq!(encode(&bytes), input, "one spelling per value");
    }
});
