//! W3C Baggage, each input line one header line.
//!
//! Properties: several lines parse like one line joining them with commas; what is kept
//! re-serialises to a header that parses to the same members with nothing dropped;
//! `restrict` keeps a prefix within 64 members and 8192 bytes (or only allowed keys),
//! counting every drop; any UTF-8 text percent-encoded as a value decodes back to
//! itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_trace_inject::baggage::{Baggage, MAX_BYTES, MAX_MEMBERS};

/// Percent-encodes every byte that is not a plain baggage-octet (and `%` itself).
fn encode(value: &str) -> String {
    let plain = |c: u8| c.is_ascii_alphanumeric() || b"!#$&'()*+-./:<>?@[]^_`{|}~".contains(&c);
    value
        .bytes()
        .map(|c| {
            if plain(c) {
                char::from(c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

fn keys(baggage: &Baggage) -> Vec<String> {
    baggage
        .format()
        .split(',')
        .filter(|member| !member.is_empty())
        .map(|member| member.split_once('=').expect("key=value").0.to_owned())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let parsed = Baggage::parse(lines.iter().copied());
    let joined = lines.join(",");
    assert_eq!(Baggage::parse([joined.as_str()]), parsed, "{lines:?}");

    let formatted = parsed.format();
    let again = Baggage::parse([formatted.as_str()]);
    assert_eq!(again.dropped, 0, "{formatted:?}");
    assert_eq!(again.format(), formatted);
    assert_eq!(again.len(), parsed.len());
    assert_eq!(keys(&again).len(), parsed.len(), "{formatted:?}");

    let mut limited = parsed.clone();
    limited.restrict(None);
    assert!(limited.len() <= MAX_MEMBERS && limited.format().len() <= MAX_BYTES);
    assert_eq!(
        limited.dropped,
        parsed.dropped + parsed.len() - limited.len()
    );
    assert!(
        formatted.starts_with(&limited.format()),
        "restrict keeps a prefix"
    );
    if parsed.len() <= MAX_MEMBERS && formatted.len() <= MAX_BYTES {
        assert_eq!(limited.len(), parsed.len(), "nothing to drop");
    }

    let all_keys = keys(&parsed);
    let allowed: Vec<String> = all_keys.iter().step_by(2).cloned().collect();
    let mut only = parsed.clone();
    only.restrict(Some(&allowed));
    assert!(keys(&only).iter().all(|key| allowed.contains(key)));

    let value = lines.first().copied().unwrap_or("");
    let carried = Baggage::parse([format!("k={}", encode(value)).as_str()]);
    assert_eq!(carried.dropped, 0);
    assert_eq!(carried.decoded("k").as_deref(), Some(value), "{value:?}");
});
