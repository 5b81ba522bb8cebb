//! Trace and span identifiers: lowercase hex on the wire, never all zero.

use meshward_filter_common::random::{nonzero_bytes, Random};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    pub fn random(random: &mut dyn Random) -> Self {
        Self(nonzero_bytes(random))
    }

    /// 32 lowercase hex digits, not all zero.
    pub fn parse(hex: &str) -> Option<Self> {
        let bytes = decode_lower_hex::<16>(hex)?;
        bytes.iter().any(|b| *b != 0).then_some(Self(bytes))
    }

    pub fn hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The rightmost 56 bits, which Trace Context Level 2 guarantees random when the
    /// `random` flag is set; used for sampling decisions.
    pub fn random_bits(&self) -> u64 {
        self.0
            .iter()
            .skip(9)
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

impl SpanId {
    pub fn random(random: &mut dyn Random) -> Self {
        Self(nonzero_bytes(random))
    }

    /// 16 lowercase hex digits, not all zero.
    pub fn parse(hex: &str) -> Option<Self> {
        let bytes = decode_lower_hex::<8>(hex)?;
        bytes.iter().any(|b| *b != 0).then_some(Self(bytes))
    }

    pub fn hex(&self) -> String {
        encode_hex(&self.0)
    }
}

pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

fn lower_hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Exactly `2 * N` lowercase hex digits (uppercase is invalid in Trace Context).
pub fn decode_lower_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (pair.first().copied()?, pair.get(1).copied()?);
        *slot = (lower_hex_value(high)? << 4) | lower_hex_value(low)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use meshward_filter_common::random::SeededRandom;

    #[test]
    fn parses_lowercase_hex_only_and_rejects_zero() {
        let id = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceId::parse("4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
        assert!(TraceId::parse("00000000000000000000000000000000").is_none());
        assert!(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e473").is_none());
        assert!(SpanId::parse("00f067aa0ba902b7").is_some());
        assert!(SpanId::parse("0000000000000000").is_none());
        assert!(SpanId::parse("00f067aa0ba902bg").is_none());
    }

    #[test]
    fn random_ids_differ_and_random_bits_are_the_low_56() {
        let mut random = SeededRandom::new(1);
        assert_ne!(TraceId::random(&mut random), TraceId::random(&mut random));
        let id = TraceId::parse("000000000000000000ffffffffffffff").unwrap();
        assert_eq!(id.random_bits(), (1u64 << 56) - 1);
    }
}
