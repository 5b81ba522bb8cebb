//! The request-match configuration every filter uses (`match`: hosts, path, methods,
//! headers), parsed, compiled and evaluated.
//!
//! Input: the `match` JSON on the first line, then request lines `name: value` (the
//! pseudo-headers `:method`, `:path`, `:authority` included). Properties:
//! - a configuration that parses compiles or names the JSON path of its error (under
//!   `match`), and evaluates any request without panicking, deterministically;
//! - an empty match selects every request;
//! - a match without regexes selects the request built to satisfy it (first method,
//!   the exact path or the prefix plus a suffix, the first host — a wildcard's with a
//!   label in front — with a port, every header condition's value), and stops
//!   selecting it when the request loses its `:path` (if a path is required) or gets an
//!   unlisted method.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::config_error::{parse_json, JsonPath};
use meshward_filter_common::matcher::{RequestMatchConfig, RequestMatcher};
use meshward_filter_common::request::RequestHead;

/// A request satisfying `config`, when one can be built without guessing (no regex, no
/// conflicting header conditions, nothing `RequestHead` would read differently).
fn satisfying_request(config: &RequestMatchConfig) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    if let Some(method) = config.methods.first() {
        headers.push((":method".to_owned(), method.clone()));
    }
    if let Some(path) = &config.path {
        let value = match (&path.exact, &path.prefix) {
            (Some(exact), None) => exact.clone(),
            (None, Some(prefix)) => format!("{prefix}tail"),
            _ => return None,
        };
        // `RequestHead::path` drops the query string.
        if value.contains('?') {
            return None;
        }
        headers.push((":path".to_owned(), value));
    }
    if let Some(host) = config.hosts.first() {
        let host = host.trim().to_ascii_lowercase();
        // `RequestHead::host` strips a port and keeps bracketed literals whole.
        if host.contains(':') || host.starts_with('[') || host.contains(char::is_whitespace) {
            return None;
        }
        let host = match host.strip_prefix('*') {
            Some("") => "anything".to_owned(),
            Some(suffix) => format!("label{suffix}"),
            None => host,
        };
        headers.push((":authority".to_owned(), format!("{host}:8443")));
    }
    for condition in &config.headers {
        let name = condition.name.to_ascii_lowercase();
        if name.starts_with(':') || name == "host" || condition.regex.is_some() {
            return None;
        }
        if condition.present == Some(false) {
            let clash = config.headers.iter().any(|other| {
                other.name.eq_ignore_ascii_case(&name) && other.present != Some(false)
            });
            if clash {
                return None;
            }
            continue;
        }
        let value = match (&condition.exact, &condition.prefix) {
            (Some(exact), _) => exact.clone(),
            (None, Some(prefix)) => format!("{prefix}tail"),
            (None, None) => String::new(),
        };
        headers.push((name, value));
    }
    Some(headers)
}

fn evaluate(matcher: &RequestMatcher, request: &RequestHead) -> bool {
    let first = matcher.matches(request);
    assert_eq!(first, matcher.matches(request), "deterministic");
    first
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let json = lines.next().unwrap_or("");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.to_ascii_lowercase(), value.to_owned()))
        })
        .collect();
    let request = RequestHead::new(headers, Some("192.0.2.1:5000".into()));

    assert!(evaluate(&RequestMatcher::any(), &request));
    let Ok(config) = parse_json::<RequestMatchConfig>(json.as_bytes()) else {
        return;
    };
    let at = JsonPath::root().field("match");
    let matcher = match config.compile(&at) {
        Ok(matcher) => matcher,
        Err(err) => {
            assert!(err.path.starts_with("match"), "{err}");
            assert!(!err.message.is_empty());
            return;
        }
    };
    evaluate(&matcher, &request);

    let Some(built) = satisfying_request(&config) else {
        return;
    };
    let satisfying = RequestHead::new(built.clone(), None);
    assert!(
        evaluate(&matcher, &satisfying),
        "{json} does not select {built:?}"
    );
    if config.path.is_some() {
        let without_path: Vec<_> = built
            .iter()
            .filter(|(n, _)| n != ":path")
            .cloned()
            .collect();
        assert!(!evaluate(&matcher, &RequestHead::new(without_path, None)));
    }
    if !config.methods.is_empty() {
        let mut other = built.clone();
        other.retain(|(n, _)| n != ":method");
        other.push((":method".into(), "NOT-LISTED-METHOD".into()));
        let listed = config.methods.iter().any(|m| m == "NOT-LISTED-METHOD");
        assert_eq!(evaluate(&matcher, &RequestHead::new(other, None)), listed);
    }
});
