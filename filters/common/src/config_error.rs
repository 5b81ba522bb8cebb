//! Configuration errors that name the JSON path of the offending value
//! (`rules[2].limit.per: ...`), so an operator reading Envoy's log or a control-plane
//! NACK knows exactly what to fix.

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted JSON path (`rules[0].key[1].name`); empty for the document root.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "(root): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserialises a filter configuration, turning serde's error into one that names the
/// path. Unknown fields are rejected by the target types (`deny_unknown_fields`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, strip_serde_position(&err.inner().to_string()))
    })?;
    deserializer.end().map_err(|err| {
        ConfigError::new(
            "",
            format!("trailing characters after the JSON document: {err}"),
        )
    })?;
    Ok(parsed)
}

/// serde_json appends " at line L column C"; the JSON path already locates the problem
/// and the config usually arrives as a one-line string, so the position is noise.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message.get(..at).unwrap_or(message).to_owned(),
        None => message.to_owned(),
    }
}

/// Whether `name` can be one segment of a metric name (`meshward.<filter>.rule.<name>.…`):
/// letters, digits, `-` and `_`, so Envoy's tag extraction finds its boundaries.
pub fn is_metric_segment(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Builds child paths while validating (`path.field("rules").index(2)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonPath(String);

impl JsonPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{}", self.0, name))
        }
    }

    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{}]", self.0, index))
    }

    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.0.clone(), message)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn metric_segments_are_letters_digits_dash_underscore() {
        assert!(is_metric_segment("per-client_2"));
        for bad in ["", "a.b", "a b", "é", "a/b"] {
            assert!(!is_metric_segment(bad), "{bad:?}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        count: u32,
    }

    #[test]
    fn error_names_the_json_path() {
        let err = parse_json::<Doc>(br#"{"items":[{"count":1},{"count":"x"}]}"#).unwrap_err();
        assert_eq!(err.path, "items[1].count");
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert!(!err.message.contains("line"), "{}", err.message);
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let err = parse_json::<Doc>(br#"{"items":[{"count":1,"cuont":2}]}"#).unwrap_err();
        assert_eq!(err.path, "items[0].cuont");
        assert!(
            err.message.contains("unknown field `cuont`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [&b""[..], b"{", b"[]", b"\xff\xfe", b"{\"items\":[]} extra"] {
            assert!(parse_json::<Doc>(input).is_err());
        }
    }

    #[test]
    fn json_path_builder_formats_like_serde() {
        let path = JsonPath::root().field("rules").index(2).field("limit");
        assert_eq!(path.error("bad").to_string(), "rules[2].limit: bad");
        assert_eq!(JsonPath::root().error("bad").to_string(), "(root): bad");
    }
}
