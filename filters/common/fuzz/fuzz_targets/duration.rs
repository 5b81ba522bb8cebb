//! The duration strings of every filter configuration (`"250ms"`, `"1h30m"`).
//!
//! Input: two lines, `a` and `b` (invalid UTF-8 replaced). Properties:
//! - `parse_duration_nanos` is `parse_duration_or_zero_nanos` minus zero;
//! - whatever parses is spelled back by `format_duration_nanos` as a string that parses
//!   to the same value, as one number in the largest unit that divides it exactly;
//! - concatenation adds: `a` and `b` parse ⇒ `a ++ b` parses to their sum (or is
//!   refused as too large exactly when the sum overflows);
//! - every u64 (the first 8 bytes) round-trips through format → parse.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::duration::{
    format_duration_nanos, parse_duration_nanos, parse_duration_or_zero_nanos,
};

fn check_one(text: &str) -> Option<u64> {
    let strict = parse_duration_nanos(text);
    let or_zero = parse_duration_or_zero_nanos(text);
    match (&strict, &or_zero) {
        (Ok(n), Ok(m)) => assert!(n == m && *n > 0, "{text:?}: {n} vs {m}"),
        (Err(_), Ok(0)) | (Err(_), Err(_)) => {}
        _ => panic!("{text:?}: strict {strict:?} but or-zero {or_zero:?}"),
    }
    if let Err(message) = &or_zero {
        assert!(!message.is_empty());
    }
    let nanos = or_zero.ok()?;
    let spelled = format_duration_nanos(nanos);
    assert_eq!(
        parse_duration_or_zero_nanos(&spelled),
        Ok(nanos),
        "{text:?} → {spelled:?}"
    );
    let digits = spelled.bytes().take_while(u8::is_ascii_digit).count();
    assert!(
        digits > 0 && spelled.bytes().skip(digits).all(|b| b.is_ascii_lowercase()),
        "one number, one unit: {spelled:?}"
    );
    // The largest unit that divides the value exactly ("3600s" → "1h").
    const UNITS: [(&str, u64); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let unit = spelled.get(digits..).unwrap_or("");
    if nanos > 0 {
        let larger = UNITS.iter().take_while(|(name, _)| *name != unit);
        for (name, size) in larger {
            assert!(nanos % size != 0, "{spelled:?}: {name} divides {nanos}");
        }
    }
    Some(nanos)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    let parsed_a = check_one(a);
    let parsed_b = check_one(b);
    if let (Some(x), Some(y)) = (parsed_a, parsed_b) {
        let (a, b) = (a.trim(), b.trim());
        let joined = format!("{a}{b}");
        match x.checked_add(y) {
            Some(sum) => assert_eq!(
                parse_duration_or_zero_nanos(&joined),
                Ok(sum),
                "{a:?} + {b:?}"
            ),
            None => assert!(parse_duration_or_zero_nanos(&joined).is_err(), "{joined:?}"),
        }
    }
    if let Some(first) = data.get(..8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(first);
        let nanos = u64::from_le_bytes(bytes);
        let spelled = format_duration_nanos(nanos);
        assert_eq!(
            parse_duration_or_zero_nanos(&spelled),
            Ok(nanos),
            "{spelled:?}"
        );
    }
});
