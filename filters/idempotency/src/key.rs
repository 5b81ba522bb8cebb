//! The `Idempotency-Key` field (draft-ietf-httpapi-idempotency-key-header): an RFC 9651
//! sf-string, or — with `lenient` — also a bare token, as many clients send it unquoted.

use meshward_filter_common::sf::parse_string_item;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Missing,
    Invalid(String),
    TooLong { max: usize },
    Repeated,
}

impl KeyError {
    pub fn detail(&self, header: &str) -> String {
        match self {
            KeyError::Missing => format!("this endpoint requires an {header} header"),
            KeyError::Invalid(why) => {
                format!("{header} must be a quoted string such as \"8e03978e-40d5\": {why}")
            }
            KeyError::TooLong { max } => format!("{header} is longer than {max} characters"),
            KeyError::Repeated => format!("send exactly one {header} header"),
        }
    }
}

/// Reads the key from the header's values (all of them, to refuse repeats).
pub fn parse_key<'a>(
    mut values: impl Iterator<Item = &'a str>,
    lenient: bool,
    max_length: usize,
) -> Result<String, KeyError> {
    let value = values.next().ok_or(KeyError::Missing)?;
    if values.next().is_some() {
        return Err(KeyError::Repeated);
    }
    let key = match parse_string_item(value) {
        Ok(key) => key,
        Err(why) => {
            let bare = value.trim_matches(' ');
            let is_token = !bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
            if lenient && is_token {
                bare.to_owned()
            } else {
                return Err(KeyError::Invalid(why));
            }
        }
    };
    if key.is_empty() {
        return Err(KeyError::Invalid("the key is empty".into()));
    }
    if key.len() > max_length {
        return Err(KeyError::TooLong { max: max_length });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn parse(values: &[&str], lenient: bool) -> Result<String, KeyError> {
        parse_key(values.iter().copied(), lenient, 20)
    }

    #[test]
    fn quoted_keys_and_lenient_tokens() {
        assert_eq!(parse(&[r#""abc-123""#], false), Ok("abc-123".into()));
        assert!(matches!(
            parse(&["abc-123"], false),
            Err(KeyError::Invalid(_))
        ));
        assert_eq!(parse(&["abc-123"], true), Ok("abc-123".into()));
        assert!(matches!(
            parse(&["abc 123"], true),
            Err(KeyError::Invalid(_))
        ));
    }

    #[test]
    fn missing_empty_long_and_repeated_keys_are_errors() {
        assert_eq!(parse(&[], false), Err(KeyError::Missing));
        assert!(matches!(
            parse(&[r#""""#], false),
            Err(KeyError::Invalid(_))
        ));
        assert_eq!(
            parse(&[&format!("\"{}\"", "k".repeat(21))], false),
            Err(KeyError::TooLong { max: 20 })
        );
        assert_eq!(parse(&[r#""a""#, r#""b""#], false), Err(KeyError::Repeated));
    }
}
