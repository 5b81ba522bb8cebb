//! The `Idempotency-Key` field: an RFC 9651 sf-string Item, or with `lenient` also a
//! bare token. Input: the field values, one per line (no line: no field); the first
//! byte also picks the length limit.
//!
//! Properties: no value is `Missing` and several are `Repeated`, whatever they hold; a
//! key accepted strictly is the sf-string's value, printable ASCII, not empty, within
//! the limit, re-serialises to a field that gives it back, and is accepted the same when
//! lenient; a key accepted only when lenient is the trimmed field itself, a token; the
//! limit is exact (`TooLong` one byte below); every refusal explains itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::sf::{parse_string_item, serialize_item, BareItem, Item};
use meshward_idempotency::key::{parse_key, KeyError};

fn check_detail(result: &Result<String, KeyError>) {
    if let Err(err) = result {
        let detail = err.detail("Idempotency-Key");
        assert!(detail.contains("Idempotency-Key"), "{detail}");
    }
}

fuzz_target!(|data: &[u8]| {
    let max = usize::from(data.first().copied().unwrap_or(0)) % 64 + 1;
    let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default());
    let values: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let strict = parse_key(values.iter().copied(), false, max);
    let lenient = parse_key(values.iter().copied(), true, max);
    check_detail(&strict);
    check_detail(&lenient);
    match values.as_slice() {
        [] => {
            assert_eq!(strict, Err(KeyError::Missing));
            assert_eq!(lenient, Err(KeyError::Missing));
            return;
        }
        [_] => {}
        [_, _, ..] => {
            assert_eq!(strict, Err(KeyError::Repeated));
            assert_eq!(lenient, Err(KeyError::Repeated));
            return;
        }
    }
    let value = values.first().copied().unwrap_or_default();
    let quoted = parse_string_item(value);
    match &strict {
        Ok(key) => {
            assert_eq!(quoted.as_ref(), Ok(key));
            assert!(!key.is_empty() && key.len() <= max);
            assert!(key.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{key:?}");
            assert_eq!(
                lenient.as_ref(),
                Ok(key),
                "lenient accepts what strict does"
            );
            let mut field = String::new();
            serialize_item(&Item::new(BareItem::String(key.clone())), &mut field);
            assert_eq!(
                parse_key([field.as_str()].into_iter(), false, max).as_ref(),
                Ok(key)
            );
            if key.len() > 1 {
                assert_eq!(
                    parse_key([value].into_iter(), false, key.len() - 1),
                    Err(KeyError::TooLong { max: key.len() - 1 })
                );
            }
        }
        Err(KeyError::TooLong { max: limit }) => {
            assert_eq!(*limit, max);
            assert!(quoted.is_ok_and(|key| key.len() > max));
        }
        Err(KeyError::Invalid(_)) => {
            assert!(quoted.as_ref().is_err() || quoted.as_deref() == Ok(""));
        }
        Err(other) => panic!("one value gave {other:?}"),
    }
    if let (Ok(key), Err(_)) = (&lenient, &strict) {
        assert_eq!(key, value.trim_matches(' '));
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)));
        assert!(key.len() <= max);
    }
});
