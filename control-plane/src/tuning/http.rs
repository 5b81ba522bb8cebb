//! Runtime tuning over HTTP, for agents that cannot speak gRPC (docs/adr/0007):
//! `POST /tuning/v1/report` and the long-poll `GET /tuning/v1/settings/{nodeId}` with
//! ETag / `If-None-Match`. Merged into the control plane's HTTP router.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::http::HttpState;
use crate::tuning::state::{Identity, Report, TuningDocument};

/// Reports are a few hundred bytes; anything near this is not an agent.
pub const MAX_BODY: usize = 64 * 1024;
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/tuning/v1/report", post(report))
        .route("/tuning/v1/settings/{node_id}", get(settings))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The report body (ADR 0007). Unknown fields are ignored: newer agents may send more.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportBody {
    node_id: String,
    namespace: String,
    workload: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    memory_limit_bytes: Option<u64>,
    #[serde(default)]
    live_heap_bytes: Option<u64>,
    #[serde(default)]
    agent: Option<String>,
}

/// The report, or a message naming the field at fault.
pub fn parse_report(body: &[u8]) -> Result<Report, String> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let body: ReportBody = serde_path_to_error::deserialize(&mut json).map_err(|err| {
        let path = err.path().to_string();
        // `.`: the body as a whole (a missing field); `?`: not JSON at all.
        if path == "." || path == "?" {
            format!("invalid report: {}", err.inner())
        } else {
            format!("invalid report: {path}: {}", err.inner())
        }
    })?;
    let report = Report {
        node_id: body.node_id,
        identity: Identity {
            namespace: body.namespace,
            workload: body.workload,
            labels: body.labels.unwrap_or_default(),
            pod: body.pod.unwrap_or_default(),
            container: body.container.unwrap_or_default(),
        },
        memory_limit_bytes: body.memory_limit_bytes,
        live_heap_bytes: body.live_heap_bytes,
        agent: body.agent.unwrap_or_default(),
    };
    report
        .check()
        .map_err(|err| format!("invalid report: {err}"))?;
    Ok(report)
}

async fn report(State(state): State<HttpState>, body: Bytes) -> Response {
    let report = match parse_report(&body) {
        Ok(report) => report,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    match state.world.tuning.report(report) {
        Ok(document) => document_response(&document),
        Err(message) => text(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

/// Answers at once when the node's document differs from `If-None-Match`, otherwise when
/// it changes, or `304` after `wait`; server shutdown ends the wait (`304`).
async fn settings(
    State(state): State<HttpState>,
    Path(node_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let wait = match wait_param(query.as_deref()) {
        Ok(wait) => wait,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let has = if_none_match(&headers);
    let tuning = &state.world.tuning;
    // Subscribed before reading, so no change between the read and the wait is missed.
    let mut changes = tuning.subscribe();
    let mut world = state.world.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Some(document) = tuning.fetch(&node_id) else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown node {node_id:?}: POST a report to /tuning/v1/report first \
                     (instances are forgotten a few minutes after their last report)"
                ),
            );
        };
        let current = has
            .iter()
            .any(|v| v == "*" || v == document.version.as_str());
        if !current {
            tuning.confirm(&node_id, &document.version);
            tuning.on_sent();
            return document_response(&document);
        }
        if state.world.is_closing() {
            return not_modified(tuning, &node_id, &document);
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return not_modified(tuning, &node_id, &document);
                }
            }
            // The world moves on policy changes and on shutdown (closing).
            changed = world.changed() => {
                if changed.is_err() {
                    return not_modified(tuning, &node_id, &document);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return not_modified(tuning, &node_id, &document);
            }
        }
    }
}

fn not_modified(
    tuning: &crate::tuning::state::Tuning,
    node_id: &str,
    document: &TuningDocument,
) -> Response {
    // The agent holds the current version: that is a delivery.
    tuning.confirm(node_id, &document.version);
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    set_etag(&mut response, document);
    response
}

fn document_response(document: &TuningDocument) -> Response {
    let mut response = axum::Json(document).into_response();
    set_etag(&mut response, document);
    response
}

fn set_etag(response: &mut Response, document: &TuningDocument) {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", document.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

fn text(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// The versions in `If-None-Match` (quotes and `W/` removed; `*` kept).
fn if_none_match(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            let v = v.trim();
            let v = v.strip_prefix("W/").unwrap_or(v);
            v.trim_matches('"').to_owned()
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// `wait` from the query: `30s`, `500ms`, `1m`; default 30 s, capped at 60 s.
pub fn wait_param(query: Option<&str>) -> Result<Duration, String> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="))
    else {
        return Ok(DEFAULT_WAIT);
    };
    parse_duration(value)
        .map(|d| d.min(MAX_WAIT))
        .ok_or_else(|| {
            format!(
                "wait: expected a duration such as 30s or 500ms (at most {}s), got {value:?}",
                MAX_WAIT.as_secs()
            )
        })
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_parsed_defaulted_and_capped() {
        assert_eq!(wait_param(None), Ok(DEFAULT_WAIT));
        assert_eq!(wait_param(Some("x=1")), Ok(DEFAULT_WAIT));
        assert_eq!(wait_param(Some("wait=2s")), Ok(Duration::from_secs(2)));
        assert_eq!(
            wait_param(Some("a=b&wait=500ms")),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(wait_param(Some("wait=0s")), Ok(Duration::ZERO));
        assert_eq!(wait_param(Some("wait=5m")), Ok(MAX_WAIT));
        assert_eq!(wait_param(Some("wait=90s")), Ok(MAX_WAIT));
        for bad in [
            "wait=",
            "wait=10",
            "wait=s",
            "wait=1h",
            "wait=-1s",
            "wait=1.5s",
        ] {
            let err = wait_param(Some(bad)).unwrap_err();
            assert!(err.starts_with("wait: expected a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn reports_are_parsed_and_mistakes_named() {
        let report = parse_report(
            br#"{"nodeId":"a","namespace":"shop","workload":"orders","labels":{"app":"orders"},
                "pod":"orders-1","container":"app","memoryLimitBytes":1000,"liveHeapBytes":320,
                "agent":"go/1","future":true}"#,
        )
        .unwrap();
        assert_eq!(report.node_id, "a");
        assert_eq!(report.identity.labels["app"], "orders");
        assert_eq!(report.memory_limit_bytes, Some(1000));
        assert_eq!(report.live_heap_bytes, Some(320));
        let minimal = parse_report(
            br#"{"nodeId":"a","namespace":"shop","workload":"orders","memoryLimitBytes":null}"#,
        )
        .unwrap();
        assert_eq!(minimal.memory_limit_bytes, None);
        let cases: [(&[u8], &str); 6] = [
            (b"{", "invalid report: EOF while parsing"),
            (
                br#"{"namespace":"shop","workload":"w"}"#,
                "missing field `nodeId`",
            ),
            (
                br#"{"nodeId":"a","namespace":"shop","workload":"w","liveHeapBytes":-1}"#,
                "invalid report: liveHeapBytes: invalid value: integer `-1`",
            ),
            (
                br#"{"nodeId":"a","namespace":"shop","workload":"w","memoryLimitBytes":"1Gi"}"#,
                "invalid report: memoryLimitBytes: invalid type: string \"1Gi\"",
            ),
            (
                br#"{"nodeId":"a","namespace":"shop","workload":"w","labels":{"app":1}}"#,
                "invalid report: labels.app: invalid type: integer",
            ),
            (
                br#"{"nodeId":"","namespace":"shop","workload":"w"}"#,
                "invalid report: nodeId: required",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_report(body).unwrap_err();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn if_none_match_forms() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"abc\", \"def\""),
        );
        assert_eq!(if_none_match(&headers), vec!["abc", "def"]);
        assert!(if_none_match(&HeaderMap::new()).is_empty());
    }
}
