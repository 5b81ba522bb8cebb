//! W3C `traceparent` on arbitrary input (the whole input is the header value).
//!
//! Properties of whatever parses: the version is not `ff`; it re-serialises as version
//! 00 to exactly 55 characters that parse to the same ids and the known flags, and a
//! version-00 header with known flags re-serialises to itself (trimmed); the ids' hex
//! is the input's; uppercase hex anywhere in the first 55 characters is refused; a
//! version-00 header with anything appended is refused, a future version's with `-…`
//! appended is the same header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_trace_inject::traceparent::{TraceParent, KNOWN_FLAGS};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = TraceParent::parse(&text) else {
        return;
    };
    let trimmed = text.trim_matches([' ', '\t']);
    assert_ne!(parsed.version, 0xff);
    let formatted = parsed.format();
    assert_eq!(formatted.len(), 55, "{formatted}");
    let again = TraceParent::parse(&formatted).expect("a formatted traceparent parses");
    assert_eq!(
        again,
        TraceParent {
            version: 0,
            flags: parsed.flags & KNOWN_FLAGS,
            ..parsed
        }
    );
    assert_eq!(again.format(), formatted, "formatting is idempotent");
    assert_eq!(again.sampled(), parsed.sampled());
    if parsed.version == 0 && parsed.flags & !KNOWN_FLAGS == 0 {
        assert_eq!(
            formatted, trimmed,
            "a version-00 header re-serialises to itself"
        );
    }
    let ids = format!("{}-{}", parsed.trace_id.hex(), parsed.parent_id.hex());
    assert_eq!(trimmed.get(3..52), Some(ids.as_str()));

    let head = trimmed
        .get(..55)
        .expect("a parsed traceparent has 55 characters");
    let upper = head.to_ascii_uppercase();
    if upper != head {
        let shouted = format!("{upper}{}", trimmed.get(55..).unwrap_or(""));
        assert!(
            TraceParent::parse(&shouted).is_err(),
            "{shouted:?}: uppercase hex"
        );
    }
    let extended = format!("{trimmed}-more");
    if parsed.version == 0 {
        assert!(TraceParent::parse(&extended).is_err(), "{extended:?}");
    } else {
        assert_eq!(TraceParent::parse(&extended), Ok(parsed), "{extended:?}");
    }
});
