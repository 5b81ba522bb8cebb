//! W3C `traceparent` (Trace Context Level 2): `version-traceid-parentid-flags`.
//!
//! Version 00 is exactly 55 characters. A higher version (not `ff`) is parsed by the
//! forward-compatibility rules: at least 55 characters, the same first four fields,
//! and after the flags either the end or a `-`. Hex is lowercase only; all-zero ids are
//! invalid. Leading and trailing optional whitespace (space, tab) is ignored.

use crate::ids::{decode_lower_hex, SpanId, TraceId};

pub const FLAG_SAMPLED: u8 = 0x01;
/// Level 2: the trace-id's rightmost 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// Flags this implementation understands; others are not propagated (set to zero).
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub version: u8,
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Version,
    Length,
    TraceId,
    ParentId,
    Flags,
    Format,
}

impl Invalid {
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Version => "version",
            Invalid::Length => "length",
            Invalid::TraceId => "trace_id",
            Invalid::ParentId => "parent_id",
            Invalid::Flags => "flags",
            Invalid::Format => "format",
        }
    }
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    pub fn parse(header: &str) -> Result<Self, Invalid> {
        let value = header.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        let version_field = value.get(0..2).ok_or(Invalid::Length)?;
        let version = decode_lower_hex::<1>(version_field)
            .map(|[v]| v)
            .ok_or(Invalid::Version)?;
        if version == 0xff {
            return Err(Invalid::Version);
        }
        if bytes.len() < 55 {
            return Err(Invalid::Length);
        }
        if version == 0 && bytes.len() != 55 {
            return Err(Invalid::Length);
        }
        // Future versions: after the flags, the end or a dash.
        if bytes.len() > 55 && bytes.get(55) != Some(&b'-') {
            return Err(Invalid::Format);
        }
        if [2usize, 35, 52]
            .iter()
            .any(|at| bytes.get(*at) != Some(&b'-'))
        {
            return Err(Invalid::Format);
        }
        let trace_id = value
            .get(3..35)
            .and_then(TraceId::parse)
            .ok_or(Invalid::TraceId)?;
        let parent_id = value
            .get(36..52)
            .and_then(SpanId::parse)
            .ok_or(Invalid::ParentId)?;
        let flags = value
            .get(53..55)
            .and_then(decode_lower_hex::<1>)
            .map(|[f]| f)
            .ok_or(Invalid::Flags)?;
        Ok(Self {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Always written as version 00, with unknown flags cleared.
    pub fn format(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id.hex(),
            self.parent_id.hex(),
            self.flags & KNOWN_FLAGS
        )
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_version_00() {
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(parsed.trace_id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id.hex(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.format(), VALID);
        assert_eq!(
            TraceParent::parse(&format!(" \t{VALID} ")).unwrap(),
            parsed,
            "optional whitespace"
        );
    }

    #[test]
    fn flags_sampled_random_and_unknown() {
        let random =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
        assert!(random.sampled());
        assert_eq!(random.flags & FLAG_RANDOM, FLAG_RANDOM);
        let unknown =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        assert!(
            unknown.format().ends_with("-03"),
            "unknown flags are not propagated"
        );
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn future_versions_follow_the_forward_compatibility_rules() {
        let longer =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let parsed = TraceParent::parse(longer).unwrap();
        assert_eq!(parsed.version, 0xcc);
        assert_eq!(parsed.format(), VALID, "propagated as version 00");
        assert!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok()
        );
        assert_eq!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what"),
            Err(Invalid::Format),
            "after the flags: end or dash"
        );
        assert_eq!(
            TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(Invalid::Version)
        );
    }

    #[test]
    fn rejects_every_malformed_variant() {
        let cases = [
            ("", Invalid::Length),
            ("0", Invalid::Length),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Invalid::Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                Invalid::Length,
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::Version,
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::Version,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Invalid::TraceId,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                Invalid::TraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                Invalid::ParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                Invalid::ParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                Invalid::Flags,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0F",
                Invalid::Flags,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                Invalid::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
                Invalid::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                Invalid::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{e9}",
                Invalid::Length,
            ),
            (
                "\u{e9}\u{e9}-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Invalid::Version,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(TraceParent::parse(input), Err(expected), "{input:?}");
        }
    }
}
