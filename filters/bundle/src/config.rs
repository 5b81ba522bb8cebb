//! The bundle's configuration: one JSON object with a section per filter, each the
//! filter's own configuration and each optional —
//! `{"traceInject": {...}, "authz": {...}, "ratelimit": {...}, "idempotency": {...}}`.
//! Every section is validated by its filter's parser here, so an error names the full
//! path (`ratelimit.rules[0].limit.per: ...`) and a bad section rejects the whole
//! configuration (Envoy NACKs it and keeps the last good one).

use meshward_filter_common::config_error::ConfigError;
use serde_json::{Map, Value};

/// The filters the bundle runs, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TraceInject,
    Authz,
    RateLimit,
    Idempotency,
}

impl Kind {
    /// Request order: trace context first (so every later reply carries it), then who
    /// the caller is, then how much they may send, then whether it already ran.
    pub const ORDER: [Kind; 4] = [
        Kind::TraceInject,
        Kind::Authz,
        Kind::RateLimit,
        Kind::Idempotency,
    ];

    /// The section's key in the configuration.
    pub fn key(self) -> &'static str {
        match self {
            Kind::TraceInject => "traceInject",
            Kind::Authz => "authz",
            Kind::RateLimit => "ratelimit",
            Kind::Idempotency => "idempotency",
        }
    }

    fn validate(self, section: &[u8]) -> Result<(), ConfigError> {
        match self {
            Kind::TraceInject => meshward_trace_inject::config::parse(section).map(drop),
            Kind::Authz => meshward_authz::config::parse(section).map(drop),
            Kind::RateLimit => meshward_ratelimit::config::parse(section).map(drop),
            Kind::Idempotency => meshward_idempotency::config::parse(section).map(drop),
        }
    }
}

/// A configured filter: which one, and its section as JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: Kind,
    pub json: Vec<u8>,
}

/// The sections present, in request order (at least one).
pub fn parse(bytes: &[u8]) -> Result<Vec<Section>, ConfigError> {
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|err| ConfigError::new("", format!("not valid JSON: {err}")))?;
    let Value::Object(mut sections) = document else {
        return Err(ConfigError::new(
            "",
            "expected an object with the sections traceInject, authz, ratelimit, idempotency",
        ));
    };
    let mut found = Vec::new();
    for kind in Kind::ORDER {
        let Some(section) = sections.remove(kind.key()) else {
            continue;
        };
        let json = serde_json::to_vec(&section)
            .map_err(|err| ConfigError::new(kind.key(), err.to_string()))?;
        kind.validate(&json).map_err(|err| within(kind, err))?;
        found.push(Section { kind, json });
    }
    if let Some(unknown) = first_key(&sections) {
        return Err(ConfigError::new(
            unknown,
            "unknown section; expected one of traceInject, authz, ratelimit, idempotency",
        ));
    }
    if found.is_empty() {
        return Err(ConfigError::new(
            "",
            "no section: configure at least one of traceInject, authz, ratelimit, idempotency",
        ));
    }
    Ok(found)
}

fn first_key(map: &Map<String, Value>) -> Option<String> {
    map.keys().next().cloned()
}

/// The section's error with its path under the section's key.
fn within(kind: Kind, err: ConfigError) -> ConfigError {
    let path = match err.path.as_str() {
        "" => kind.key().to_owned(),
        path if path.starts_with('[') => format!("{}{path}", kind.key()),
        path => format!("{}.{path}", kind.key()),
    };
    ConfigError::new(path, err.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const RATELIMIT: &str = r#"{"rules":[{"name":"per-ip","key":[{"type":"clientAddress"}],"limit":{"algorithm":"tokenBucket","requests":5,"per":"1s"}}]}"#;

    fn kinds(sections: &[Section]) -> Vec<Kind> {
        sections.iter().map(|s| s.kind).collect()
    }

    #[test]
    fn sections_come_back_in_request_order_whatever_the_document_order() {
        let json =
            format!(r#"{{"idempotency": {{}}, "ratelimit": {RATELIMIT}, "traceInject": {{}}}}"#);
        let sections = parse(json.as_bytes()).unwrap();
        assert_eq!(
            kinds(&sections),
            [Kind::TraceInject, Kind::RateLimit, Kind::Idempotency]
        );
        let ratelimit: Value = serde_json::from_slice(&sections[1].json).unwrap();
        assert_eq!(ratelimit, serde_json::from_str::<Value>(RATELIMIT).unwrap());
    }

    #[test]
    fn a_bad_section_is_reported_under_its_key() {
        let json = r#"{"ratelimit": {"rules": [{"name": "x", "key": [], "limit": {"requests": 0, "per": "1s"}}]}}"#;
        let err = parse(json.as_bytes()).unwrap_err();
        assert!(err.path.starts_with("ratelimit.rules[0]"), "{err}");
        let err = parse(br#"{"traceInject": {"direction": "sideways"}}"#).unwrap_err();
        assert_eq!(err.path, "traceInject.direction", "{err}");
        let err = parse(br#"{"authz": 7}"#).unwrap_err();
        assert!(err.path.starts_with("authz"), "{err}");
    }

    #[test]
    fn unknown_sections_empty_documents_and_non_objects_are_refused() {
        assert_eq!(
            parse(br#"{"traceInject": {}, "rateLimit": {}}"#)
                .unwrap_err()
                .path,
            "rateLimit"
        );
        assert!(parse(b"{}").unwrap_err().message.contains("at least one"));
        assert!(parse(b"[]")
            .unwrap_err()
            .message
            .contains("expected an object"));
        assert!(parse(b"").unwrap_err().message.contains("not valid JSON"));
        assert!(parse(br#"{"authz": "#).is_err());
    }
}
