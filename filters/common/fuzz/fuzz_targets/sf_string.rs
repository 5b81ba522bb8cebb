//! RFC 9651 sf-strings: `parse_string_item` (the Idempotency-Key field) and the
//! serialiser of the emitted fields (`RateLimit`, `RateLimit-Policy`), checked against
//! `sfv`, an independent RFC 9651 implementation.
//!
//! Properties:
//! - never more lenient than the RFC: what `parse_string_item` accepts, `sfv` parses as
//!   an Item holding the same string;
//! - never stricter: an Item `sfv` parses to a String is accepted, with the same string,
//!   whatever its parameters hold (every RFC 9651 bare item: integers, decimals, strings,
//!   tokens, byte sequences, booleans, dates, display strings — also where a later
//!   duplicate key hides an earlier value from `sfv`'s parameter map);
//! - a parsed value is printable ASCII and re-serialises to a field that parses back to
//!   it;
//! - any text serialised as an sf-string Item (non-printable characters become `?`), with
//!   integer and boolean parameters, is valid RFC 9651 and parses back to that text; a
//!   list of such items is a valid List.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::sf::{
    parse_string_item, serialize_item, serialize_list, BareItem, Item, MAX_INTEGER,
};

fn sfv_string_item(text: &str) -> Option<String> {
    let item = sfv::Parser::new(text).parse::<sfv::Item>().ok()?;
    let sfv::BareItem::String(value) = &item.bare_item else {
        return None;
    };
    Some(value.as_str().to_owned())
}

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

fn number(data: &[u8]) -> i64 {
    let mut bytes = [0u8; 8];
    for (slot, byte) in bytes.iter_mut().zip(data.iter().rev()) {
        *slot = *byte;
    }
    i64::from_le_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let ours = parse_string_item(&text);
    let reference = sfv_string_item(&text);
    match (&ours, &reference) {
        (Ok(value), Some(expected)) => assert_eq!(value, expected, "{text:?}"),
        (Ok(value), None) => {
            panic!("{text:?} accepted as {value:?}, but it is not an sf-string Item")
        }
        (Err(why), Some(expected)) => {
            panic!("{text:?} is the sf-string Item {expected:?}, refused: {why}")
        }
        (Err(_), None) => {}
    }
    if let Ok(value) = &ours {
        assert!(
            value.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "{value:?}"
        );
        let mut field = String::new();
        serialize_item(&Item::new(BareItem::String(value.clone())), &mut field);
        assert_eq!(parse_string_item(&field).as_ref(), Ok(value), "{field:?}");
    }

    // The serialiser: whatever text, a valid field.
    let n = number(data);
    let item = Item::new(BareItem::String(text.to_string()))
        .param("q", BareItem::Integer(n))
        .param("w", BareItem::Integer(n.wrapping_neg()))
        .param("flag", BareItem::Boolean(n % 2 == 0));
    let mut field = String::new();
    serialize_item(&item, &mut field);
    let expected = printable(&text);
    assert_eq!(
        parse_string_item(&field).as_ref(),
        Ok(&expected),
        "{field:?}"
    );
    let parsed = sfv::Parser::new(&field)
        .parse::<sfv::Item>()
        .unwrap_or_else(|err| panic!("{field:?} is not an Item: {err}"));
    let clamp = n.clamp(-MAX_INTEGER, MAX_INTEGER);
    let integer = |key: &str| match parsed.params.get(key) {
        Some(sfv::BareItem::Integer(i)) => Some(i64::from(*i)),
        _ => None,
    };
    assert_eq!(integer("q"), Some(clamp), "{field:?}");
    assert_eq!(
        integer("w"),
        Some(n.wrapping_neg().clamp(-MAX_INTEGER, MAX_INTEGER))
    );
    let list = serialize_list(&[item.clone(), Item::new(BareItem::Token("t".into())), item]);
    let members = sfv::Parser::new(&list)
        .parse::<sfv::List>()
        .unwrap_or_else(|err| panic!("{list:?} is not a List: {err}"));
    assert_eq!(members.len(), 3, "{list:?}");
});
