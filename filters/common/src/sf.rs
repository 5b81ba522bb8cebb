//! RFC 9651 structured-field serialisation for the response fields Meshward emits
//! (`RateLimit`, `RateLimit-Policy`, ...). Only the item types those fields use.

/// Largest magnitude an sf-integer may carry (RFC 9651 §3.3.1).
pub const MAX_INTEGER: i64 = 999_999_999_999_999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BareItem {
    Integer(i64),
    String(String),
    Token(String),
    Boolean(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub value: BareItem,
    /// Parameter keys must be `lcalpha *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`;
    /// they are the caller's own constants.
    pub params: Vec<(&'static str, BareItem)>,
}

impl Item {
    pub fn new(value: BareItem) -> Self {
        Self {
            value,
            params: Vec::new(),
        }
    }

    pub fn param(mut self, key: &'static str, value: BareItem) -> Self {
        self.params.push((key, value));
        self
    }
}

/// Serialises a List (RFC 9651 §4.1.1).
pub fn serialize_list(items: &[Item]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        serialize_item(item, &mut out);
    }
    out
}

pub fn serialize_item(item: &Item, out: &mut String) {
    serialize_bare(&item.value, out);
    for (key, value) in &item.params {
        out.push(';');
        out.push_str(key);
        if *value != BareItem::Boolean(true) {
            out.push('=');
            serialize_bare(value, out);
        }
    }
}

fn serialize_bare(value: &BareItem, out: &mut String) {
    match value {
        BareItem::Integer(n) => out.push_str(&n.clamp(&-MAX_INTEGER, &MAX_INTEGER).to_string()),
        BareItem::String(s) => serialize_string(s, out),
        BareItem::Token(t) => out.push_str(t),
        BareItem::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
    }
}

/// sf-strings carry printable ASCII only; anything else is replaced by `?` rather than
/// producing an invalid field.
fn serialize_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// Whether `s` is a valid sf-token (RFC 9651 §3.3.4), for validating configured names.
pub fn is_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'*')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

/// Parses a field whose value is an sf-string Item (RFC 9651 §4.2): `"..."` with `\\"`
/// and `\\\\` escapes, printable ASCII only, optionally followed by parameters (which
/// are validated and ignored). Surrounding spaces are allowed. Returns the string.
pub fn parse_string_item(input: &str) -> Result<String, String> {
    let input = input.trim_matches(' ');
    let (value, after) = read_string(input)?;
    validate_parameters(after)?;
    Ok(value)
}

/// The sf-string at the start of `input`: its value and what follows the closing quote.
fn read_string(input: &str) -> Result<(String, &str), String> {
    let rest = input
        .strip_prefix('"')
        .ok_or("expected an sf-string (a value in double quotes)")?;
    let mut value = String::new();
    let mut chars = rest.char_indices();
    loop {
        let Some((at, c)) = chars.next() else {
            return Err("unterminated sf-string".into());
        };
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                _ => {
                    return Err(
                        "invalid escape in sf-string (only \\\" and \\\\ are allowed)".into(),
                    )
                }
            },
            '"' => return Ok((value, rest.get(at + 1..).unwrap_or(""))),
            ' '..='~' => value.push(c),
            _ => return Err("sf-strings may only contain printable ASCII".into()),
        }
    }
}

/// `*( ";" *SP key [ "=" bare-item ] )` where a bare item is an integer, decimal,
/// string, token, boolean or date (RFC 9651 §4.2.3); byte sequences and display strings
/// are refused, as is anything that is not a bare item.
fn validate_parameters(mut rest: &str) -> Result<(), String> {
    while !rest.is_empty() {
        rest = rest
            .strip_prefix(';')
            .ok_or("unexpected characters after the sf-string")?
            .trim_start_matches(' ');
        let key_end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.*".contains(c)))
            .unwrap_or(rest.len());
        let (key, after_key) = rest.split_at(key_end);
        if !key.starts_with(|c: char| c.is_ascii_lowercase() || c == '*') {
            return Err("invalid parameter key".into());
        }
        rest = match after_key.strip_prefix('=') {
            None => after_key,
            Some(value) => {
                let end = bare_item_len(value).ok_or("invalid parameter value")?;
                value.get(end..).unwrap_or("")
            }
        };
    }
    Ok(())
}

/// The length of the bare item at the start of `text`, if one is there.
fn bare_item_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    match *bytes.first()? {
        b'"' => {
            let (_, after) = read_string(text).ok()?;
            Some(text.len() - after.len())
        }
        b'?' => matches!(bytes.get(1), Some(b'0' | b'1')).then_some(2),
        b':' => byte_sequence_len(bytes),
        b'%' => display_string_len(bytes),
        b'@' => number_len(bytes.get(1..)?, false).map(|len| len + 1),
        b'-' | b'0'..=b'9' => number_len(bytes, true),
        first if first.is_ascii_alphabetic() || first == b'*' => Some(
            1 + bytes
                .iter()
                .skip(1)
                .take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(b))
                .count(),
        ),
        _ => None,
    }
}

/// An sf-binary (`":" base64 ":"`) at the start of `bytes`: its length. Decoded as
/// RFC 9651 §4.2.7 asks of parsers: `=` padding optional, non-zero pad bits allowed.
fn byte_sequence_len(bytes: &[u8]) -> Option<usize> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let content = bytes.get(1..)?;
    let end = content.iter().position(|b| *b == b':')?;
    LENIENT.decode(content.get(..end)?).ok()?;
    Some(end + 2)
}

/// An sf-displaystring (RFC 9651 §3.3.8: `%"`, printable ASCII or `%` and two
/// lowercase hex digits, `"`) at the start of `bytes`, whose octets are UTF-8: its length.
fn display_string_len(bytes: &[u8]) -> Option<usize> {
    if bytes.get(1) != Some(&b'"') {
        return None;
    }
    let mut octets = Vec::new();
    let mut at = 2;
    loop {
        let byte = *bytes.get(at)?;
        match byte {
            b'"' => {
                return std::str::from_utf8(&octets).is_ok().then_some(at + 1);
            }
            b'%' => {
                let hex = |b: u8| match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'a'..=b'f' => Some(b - b'a' + 10),
                    _ => None,
                };
                let high = hex(*bytes.get(at + 1)?)?;
                let low = hex(*bytes.get(at + 2)?)?;
                octets.push(high << 4 | low);
                at += 3;
            }
            0x20..=0x7e => {
                octets.push(byte);
                at += 1;
            }
            _ => return None,
        }
    }
}

/// An sf-integer (`["-"] 1*15DIGIT`) or, when allowed, an sf-decimal
/// (`["-"] 1*12DIGIT "." 1*3DIGIT`) at the start of `bytes`: its length.
fn number_len(bytes: &[u8], decimal_allowed: bool) -> Option<usize> {
    let sign = usize::from(bytes.first() == Some(&b'-'));
    let digits = |from: usize| {
        bytes
            .iter()
            .skip(from)
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let integer = digits(sign);
    if integer == 0 {
        return None;
    }
    if bytes.get(sign + integer) != Some(&b'.') {
        return (integer <= 15).then_some(sign + integer);
    }
    let fraction = digits(sign + integer + 1);
    let valid = decimal_allowed && integer <= 12 && (1..=3).contains(&fraction);
    valid.then_some(sign + integer + 1 + fraction)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn serialises_lists_with_parameters() {
        let items = [
            Item::new(BareItem::String("per-ip".into()))
                .param("q", BareItem::Integer(100))
                .param("w", BareItem::Integer(60)),
            Item::new(BareItem::Token("daily".into())).param("flag", BareItem::Boolean(true)),
        ];
        assert_eq!(serialize_list(&items), r#""per-ip";q=100;w=60, daily;flag"#);
    }

    #[test]
    fn strings_are_escaped_and_kept_ascii() {
        let mut out = String::new();
        serialize_item(
            &Item::new(BareItem::String("a\"b\\c\u{e9}".into())),
            &mut out,
        );
        assert_eq!(out, r#""a\"b\\c?""#);
    }

    #[test]
    fn integers_are_clamped_to_the_sf_range() {
        let mut out = String::new();
        serialize_item(&Item::new(BareItem::Integer(i64::MAX)), &mut out);
        assert_eq!(out, "999999999999999");
    }

    #[test]
    fn parses_sf_string_items() {
        assert_eq!(
            parse_string_item(r#""8e03978e-40d5-43e8-bc93-6894a57f9324""#).as_deref(),
            Ok("8e03978e-40d5-43e8-bc93-6894a57f9324")
        );
        assert_eq!(
            parse_string_item(r#" "a \"quoted\" \\ key" "#).as_deref(),
            Ok(r#"a "quoted" \ key"#)
        );
        assert_eq!(
            parse_string_item(r#""k";a=1;b;c="x;y""#).as_deref(),
            Ok("k"),
            "parameters are allowed and ignored"
        );
        assert_eq!(parse_string_item(r#""""#).as_deref(), Ok(""));
        for bad in [
            "",
            "abc",
            "\"abc",
            "\"a\\x\"",
            "\"é\"",
            "\"a\" b",
            "\"a\";",
            "\"a\";A=1",
            "\"a\";k=(1)",
            "\"tab\there\"",
        ] {
            assert!(parse_string_item(bad).is_err(), "{bad:?}");
        }
    }

    /// Found by the `sf_string` fuzz target (filters/common/fuzz/regressions/sf_string):
    /// parameter values were checked only for their characters, so non-ASCII strings,
    /// `1abc`, `/x` or 16-digit integers passed as parameters.
    #[test]
    fn parameters_are_rfc_9651_bare_items() {
        let crasher = include_bytes!("../fuzz/regressions/sf_string/parameter-string-not-ascii");
        assert!(parse_string_item(&String::from_utf8_lossy(crasher)).is_err());
        for bad in [
            "\"k\";a=1;b;c=\"\u{fffd}xy\"",
            "\"k\";c=\"a\\x\"",
            "\"k\";n=1abc",
            "\"k\";t=/x",
            "\"k\";n=-",
            "\"k\";n=1234567890123456",
            "\"k\";d=1.2345",
            "\"k\";d=1.",
            "\"k\";d=1234567890123.5",
            "\"k\";d=1.2.3",
            "\"k\";at=@1.5",
            "\"k\";b=?2",
            "\"k\";bytes=:aGk=",
            "\"k\";bytes=:a:",
            "\"k\";bytes=:a*b=:",
            "\"k\";ds=%\"unterminated",
            "\"k\";ds=%x",
            "\"k\";ds=%\"%C3%A9\"",
            "\"k\";ds=%\"%ff\"",
            "\"k\";ds=%\"%4\"",
        ] {
            assert!(parse_string_item(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_string_item(
                "\"k\";n=-123456789012345;d=-123456789012.125;t=*t/x:y;b=?0;at=@-1;s=\"a\\\"b\";f"
            )
            .as_deref(),
            Ok("k")
        );
        // Byte sequences and display strings are bare items too; a later duplicate key
        // does not make an earlier malformed value acceptable, nor a valid one refused.
        let overridden =
            include_bytes!("../fuzz/regressions/sf_string/display-string-parameter-overridden");
        assert_eq!(
            parse_string_item(&String::from_utf8_lossy(overridden)).as_deref(),
            Ok("=")
        );
        assert_eq!(
            parse_string_item("\"k\";bytes=:aGk=:;nopad=:aGk:;empty=::;ds=%\"caf%c3%a9 \\x\"")
                .as_deref(),
            Ok("k")
        );
    }

    #[test]
    fn tokens() {
        assert!(is_token("per-ip"));
        assert!(!is_token("1abc"));
        assert!(!is_token(""));
    }
}
