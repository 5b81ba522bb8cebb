//! Request matchers shared by every filter: host, path (exact, prefix or regex),
//! method and header conditions. All conditions of a match must hold; an empty match
//! selects every request. Compiled once at `on_configure`.

use regex_lite::Regex;
use serde::Deserialize;

use crate::config_error::{ConfigError, JsonPath};
use crate::request::RequestHead;

/// `match` as written in a filter's JSON configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMatchConfig {
    /// Hosts (`:authority` without port): exact, `*.suffix` wildcard, or `*`.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path: Option<StringMatchConfig>,
    /// HTTP methods, case-sensitive as on the wire (`GET`, `POST`).
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// Exactly one of `exact`, `prefix`, `regex` (a full match, RE2-like syntax).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatchConfig {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

/// A header condition: `present: false` requires absence; otherwise at most one of
/// `exact`, `prefix`, `regex` (presence alone when none is given).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    pub name: String,
    pub present: Option<bool>,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(expected) => value == expected,
            StringMatcher::Prefix(prefix) => value.starts_with(prefix.as_str()),
            StringMatcher::Regex(regex) => regex.is_match(value),
        }
    }

    fn compile(
        exact: &Option<String>,
        prefix: &Option<String>,
        regex: &Option<String>,
        path: &JsonPath,
    ) -> Result<Option<Self>, ConfigError> {
        match (exact, prefix, regex) {
            (None, None, None) => Ok(None),
            (Some(value), None, None) => Ok(Some(StringMatcher::Exact(value.clone()))),
            (None, Some(value), None) => Ok(Some(StringMatcher::Prefix(value.clone()))),
            (None, None, Some(pattern)) => Regex::new(&format!("^(?:{pattern})$"))
                .map(|regex| Some(StringMatcher::Regex(regex)))
                .map_err(|err| {
                    path.field("regex")
                        .error(format!("invalid regular expression: {err}"))
                }),
            _ => Err(path.error("give only one of `exact`, `prefix` or `regex`")),
        }
    }
}

#[derive(Debug, Clone)]
enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

#[derive(Debug, Clone)]
struct HeaderCondition {
    name: String,
    must_be_present: bool,
    value: Option<StringMatcher>,
}

/// A compiled `match`.
#[derive(Debug, Clone, Default)]
pub struct RequestMatcher {
    hosts: Vec<HostPattern>,
    path: Option<StringMatcher>,
    methods: Vec<String>,
    headers: Vec<HeaderCondition>,
}

impl RequestMatchConfig {
    pub fn compile(&self, path: &JsonPath) -> Result<RequestMatcher, ConfigError> {
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, host)| compile_host(host, &path.field("hosts").index(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let path_matcher = match &self.path {
            Some(config) => {
                let at = path.field("path");
                let matcher =
                    StringMatcher::compile(&config.exact, &config.prefix, &config.regex, &at)?;
                Some(matcher.ok_or_else(|| at.error("give one of `exact`, `prefix` or `regex`"))?)
            }
            None => None,
        };
        for (i, method) in self.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                return Err(path
                    .field("methods")
                    .index(i)
                    .error(format!("{method:?} is not an HTTP method")));
            }
        }
        let headers = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, header)| header.compile(&path.field("headers").index(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RequestMatcher {
            hosts,
            path: path_matcher,
            methods: self.methods.clone(),
            headers,
        })
    }
}

impl HeaderMatchConfig {
    fn compile(&self, path: &JsonPath) -> Result<HeaderCondition, ConfigError> {
        let name = validate_header_name(&self.name, &path.field("name"))?;
        let value = StringMatcher::compile(&self.exact, &self.prefix, &self.regex, path)?;
        let must_be_present = self.present.unwrap_or(true);
        if !must_be_present && value.is_some() {
            return Err(path.error("`present: false` cannot be combined with a value match"));
        }
        Ok(HeaderCondition {
            name,
            must_be_present,
            value,
        })
    }
}

/// An RFC 9110 `token` (`1*tchar`): header names, baggage keys, parameter names.
pub fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP field value Envoy can send: no control characters except HTAB (CR, LF and
/// NUL would be refused or split the field).
pub fn is_field_value(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\t')
}

/// Lowercases and checks an HTTP header name (RFC 9110 token; pseudo-headers allowed).
pub fn validate_header_name(name: &str, path: &JsonPath) -> Result<String, ConfigError> {
    let bare = name.strip_prefix(':').unwrap_or(name);
    if !is_http_token(bare) {
        return Err(path.error(format!("{name:?} is not a valid HTTP header name")));
    }
    Ok(name.to_ascii_lowercase())
}

fn compile_host(host: &str, path: &JsonPath) -> Result<HostPattern, ConfigError> {
    let host = host.trim().to_ascii_lowercase();
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return Err(path.error(format!(
                "{host:?}: a wildcard must look like \"*.example.com\""
            )));
        }
        return Ok(HostPattern::Suffix(format!(".{suffix}")));
    }
    if host.is_empty() || host.contains('*') || host.contains('/') {
        return Err(path.error(format!(
            "{host:?} is not a host name; use \"api.example.com\", \"*.example.com\" or \"*\""
        )));
    }
    Ok(HostPattern::Exact(host))
}

impl RequestMatcher {
    /// A matcher that selects every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Whether this matcher selects every request without looking at it.
    pub fn is_any(&self) -> bool {
        self.hosts.is_empty()
            && self.path.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
    }

    pub fn matches(&self, request: &RequestHead) -> bool {
        self.host_matches(request)
            && self
                .path
                .as_ref()
                .is_none_or(|m| request.path().is_some_and(|p| m.matches(p)))
            && (self.methods.is_empty()
                || request
                    .method()
                    .is_some_and(|method| self.methods.iter().any(|m| m == method)))
            && self
                .headers
                .iter()
                .all(|condition| condition.matches(request))
    }

    fn host_matches(&self, request: &RequestHead) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = request.host() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.hosts.iter().any(|pattern| match pattern {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => &host == exact,
            HostPattern::Suffix(suffix) => {
                host.ends_with(suffix.as_str()) && host.len() > suffix.len()
            }
        })
    }
}

impl HeaderCondition {
    fn matches(&self, request: &RequestHead) -> bool {
        let mut values = request.header_values(&self.name).peekable();
        if !self.must_be_present {
            return values.peek().is_none();
        }
        match &self.value {
            None => values.peek().is_some(),
            Some(matcher) => values.any(|value| matcher.matches(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config_error::parse_json;

    fn compile(json: &str) -> Result<RequestMatcher, ConfigError> {
        parse_json::<RequestMatchConfig>(json.as_bytes())?.compile(&JsonPath::root().field("match"))
    }

    fn request(method: &str, path: &str, host: &str, extra: &[(&str, &str)]) -> RequestHead {
        let mut headers = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), host.to_string()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RequestHead::new(headers, None)
    }

    #[test]
    fn empty_match_selects_everything() {
        let m = compile("{}").unwrap();
        assert!(m.matches(&request("GET", "/", "a", &[])));
    }

    #[test]
    fn path_exact_prefix_regex() {
        let exact = compile(r#"{"path":{"exact":"/login"}}"#).unwrap();
        assert!(exact.matches(&request("GET", "/login?next=/", "a", &[])));
        assert!(!exact.matches(&request("GET", "/login/x", "a", &[])));
        let prefix = compile(r#"{"path":{"prefix":"/api/"}}"#).unwrap();
        assert!(prefix.matches(&request("GET", "/api/v1", "a", &[])));
        assert!(!prefix.matches(&request("GET", "/apix", "a", &[])));
        let regex = compile(r#"{"path":{"regex":"/users/[0-9]+"}}"#).unwrap();
        assert!(regex.matches(&request("GET", "/users/42", "a", &[])));
        assert!(
            !regex.matches(&request("GET", "/users/42/x", "a", &[])),
            "regex must match the whole path"
        );
    }

    #[test]
    fn hosts_methods_headers_all_must_hold() {
        let m = compile(
            r#"{"hosts":["*.example.com"],"methods":["POST"],"headers":[{"name":"X-Tier","exact":"free"},{"name":"x-internal","present":false}]}"#,
        )
        .unwrap();
        let hit = request("POST", "/", "api.example.com:443", &[("x-tier", "free")]);
        assert!(m.matches(&hit));
        assert!(!m.matches(&request(
            "GET",
            "/",
            "api.example.com",
            &[("x-tier", "free")]
        )));
        assert!(!m.matches(&request("POST", "/", "example.com", &[("x-tier", "free")])));
        assert!(!m.matches(&request(
            "POST",
            "/",
            "api.example.com",
            &[("x-tier", "gold")]
        )));
        assert!(!m.matches(&request(
            "POST",
            "/",
            "api.example.com",
            &[("x-tier", "free"), ("x-internal", "1")]
        )));
    }

    #[test]
    fn bad_matchers_name_their_path() {
        let err = compile(r#"{"path":{"exact":"/a","prefix":"/b"}}"#).unwrap_err();
        assert_eq!(err.path, "match.path");
        let err = compile(r#"{"path":{"regex":"("}}"#).unwrap_err();
        assert_eq!(err.path, "match.path.regex");
        let err = compile(r#"{"headers":[{"name":"bad header"}]}"#).unwrap_err();
        assert_eq!(err.path, "match.headers[0].name");
        let err = compile(r#"{"hosts":["a*b"]}"#).unwrap_err();
        assert_eq!(err.path, "match.hosts[0]");
        let err = compile(r#"{"methods":["GET /"]}"#).unwrap_err();
        assert_eq!(err.path, "match.methods[0]");
    }
}
