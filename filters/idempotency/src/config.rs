//! The filter's JSON configuration (schema in README.md), validated into
//! [`CompiledConfig`] at `on_configure`. Unknown fields are errors; errors name their
//! JSON path.

use serde::Deserialize;

use crate::response::DEFAULT_REPLAY_HEADERS;
use meshward_filter_common::config_error::{parse_json, ConfigError, JsonPath};
use meshward_filter_common::duration::parse_duration_nanos;
use meshward_filter_common::matcher::{validate_header_name, RequestMatchConfig, RequestMatcher};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyRequirement {
    Required,
    #[default]
    Optional,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Oversized {
    /// 413 problem+json.
    #[default]
    Reject,
    /// Forward without idempotency (counted).
    PassThrough,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Forward without idempotency.
    Allow,
    /// 503 problem+json: never risk a second execution.
    #[default]
    Deny,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StoreKind {
    /// proxy-wasm shared data: one Envoy (all its workers).
    #[default]
    Local,
    /// The control plane's `IdempotencyStore` (Redis/Valkey): every replica.
    Remote,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreConfig {
    #[serde(rename = "type")]
    pub kind: StoreKind,
    /// Remote: the Envoy cluster (HTTP/2) of the store service.
    pub cluster: Option<String>,
    /// Remote: per call.
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdempotencyConfig {
    /// Where records live; the embedded table by default.
    pub store: Option<StoreConfig>,
    pub methods: Option<Vec<String>>,
    pub header: Option<String>,
    #[serde(default)]
    pub lenient: bool,
    pub max_key_length: Option<usize>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub identity: IdentityConfig,
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub oversized_body: Oversized,
    pub lock_timeout: Option<String>,
    pub ttl: Option<String>,
    #[serde(default, rename = "store5xx")]
    pub store_5xx: bool,
    pub max_response_bytes: Option<usize>,
    #[serde(default)]
    pub replay_headers: Vec<String>,
    #[serde(default)]
    pub replay_set_cookie: bool,
    pub max_entries: Option<u32>,
    pub max_stored_bytes: Option<u64>,
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Instead of answering 409 at once, a duplicate waits up to this long for the
    /// first request's result (then replays it, or 409 when time is up). Off by default.
    pub in_flight_wait: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub request_match: RequestMatchConfig,
    #[serde(default)]
    pub key: KeyRequirement,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityConfig {
    /// Set by Meshward's authz filter from the verified token (it strips client
    /// copies). Without authz in front, a client could send it: use `headers` your
    /// edge sets, or `clientAddress`.
    #[serde(default = "default_principal_header")]
    pub principal_header: Option<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub client_address: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            principal_header: default_principal_header(),
            headers: Vec::new(),
            client_address: false,
        }
    }
}

fn default_principal_header() -> Option<String> {
    Some("x-meshward-principal".into())
}

#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub name: String,
    pub matcher: RequestMatcher,
    pub key: KeyRequirement,
}

/// Where records live, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    Local,
    Remote(RemoteStore),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStore {
    pub cluster: String,
    /// Bounds every call; past it, the call counts as failed (`failureMode`).
    pub timeout_nanos: u64,
}

pub const DEFAULT_STORE_CLUSTER: &str = "meshward-store";
const DEFAULT_STORE_TIMEOUT: &str = "100ms";
const MIN_STORE_TIMEOUT_NANOS: u64 = 1_000_000;
const MAX_STORE_TIMEOUT_NANOS: u64 = 10_000_000_000;
/// The store service's bounds (`lock_ttl_ms`, `ttl_ms`): 24 hours and 30 days.
const MAX_REMOTE_LOCK_NANOS: u64 = 24 * 3600 * 1_000_000_000;
const MAX_REMOTE_TTL_NANOS: u64 = 30 * 24 * 3600 * 1_000_000_000;

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub store: StoreMode,
    pub methods: Vec<String>,
    pub header: String,
    pub lenient: bool,
    pub max_key_length: usize,
    pub routes: Vec<CompiledRoute>,
    pub identity_headers: Vec<String>,
    pub identity_client_address: bool,
    pub max_body_bytes: usize,
    pub oversized_body: Oversized,
    pub lock_nanos: u64,
    pub ttl_nanos: u64,
    pub store_5xx: bool,
    pub max_response_bytes: usize,
    pub replay_headers: Vec<String>,
    pub replay_set_cookie: bool,
    pub max_entries: u32,
    pub max_stored_bytes: u64,
    pub failure_mode: FailureMode,
    /// 0: answer 409 at once.
    pub in_flight_wait_nanos: u64,
}

/// Upper bound for `inFlightWait`: a waiting request holds a connection and memory.
const MAX_IN_FLIGHT_WAIT_NANOS: u64 = 60 * 1_000_000_000;

pub const DEFAULT_MAX_ENTRIES: u32 = 10_000;
pub const DEFAULT_MAX_STORED_BYTES: u64 = 64 * 1024 * 1024;
const NEVER_IDEMPOTENT: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];

pub fn parse(bytes: &[u8]) -> Result<CompiledConfig, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return parse_json::<IdempotencyConfig>(b"{}")?.compile();
    }
    parse_json::<IdempotencyConfig>(bytes)?.compile()
}

fn duration(text: Option<&str>, default: &str, path: JsonPath) -> Result<u64, ConfigError> {
    parse_duration_nanos(text.unwrap_or(default)).map_err(|err| path.error(err))
}

impl IdempotencyConfig {
    pub fn compile(&self) -> Result<CompiledConfig, ConfigError> {
        let root = JsonPath::root();
        let methods = self
            .methods
            .clone()
            .unwrap_or_else(|| vec!["POST".into(), "PATCH".into()]);
        for (i, method) in methods.iter().enumerate() {
            if NEVER_IDEMPOTENT.contains(&method.as_str()) {
                return Err(root
                    .field("methods")
                    .index(i)
                    .error(format!("{method} requests never use idempotency keys")));
            }
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(root
                    .field("methods")
                    .index(i)
                    .error(format!("{method:?} is not an HTTP method (uppercase)")));
            }
        }
        let header = validate_header_name(
            self.header.as_deref().unwrap_or("idempotency-key"),
            &root.field("header"),
        )?;
        let max_key_length = self.max_key_length.unwrap_or(255);
        if !(1..=4096).contains(&max_key_length) {
            return Err(root.field("maxKeyLength").error("expected 1 to 4096"));
        }
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let at = root.field("routes").index(i);
                if route.name.is_empty() || route.name.len() > 64 {
                    return Err(at.field("name").error("expected 1 to 64 characters"));
                }
                Ok(CompiledRoute {
                    name: route.name.clone(),
                    matcher: route.request_match.compile(&at.field("match"))?,
                    key: route.key,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identity = root.field("identity");
        let mut identity_headers = Vec::new();
        if let Some(principal) = &self.identity.principal_header {
            identity_headers.push(validate_header_name(
                principal,
                &identity.field("principalHeader"),
            )?);
        }
        for (i, name) in self.identity.headers.iter().enumerate() {
            identity_headers.push(validate_header_name(
                name,
                &identity.field("headers").index(i),
            )?);
        }
        let positive =
            |value: Option<usize>, default: usize, name: &str| -> Result<usize, ConfigError> {
                match value.unwrap_or(default) {
                    0 => Err(root.field(name).error("must be greater than zero")),
                    n => Ok(n),
                }
            };
        let mut replay_headers: Vec<String> = DEFAULT_REPLAY_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        for (i, name) in self.replay_headers.iter().enumerate() {
            replay_headers.push(validate_header_name(
                name,
                &root.field("replayHeaders").index(i),
            )?);
        }
        let max_entries = self.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if !(1..=1_000_000).contains(&max_entries) {
            return Err(root.field("maxEntries").error("expected 1 to 1000000"));
        }
        let store = self.compile_store(&root)?;
        let lock_nanos = duration(
            self.lock_timeout.as_deref(),
            "30s",
            root.field("lockTimeout"),
        )?;
        let ttl_nanos = duration(self.ttl.as_deref(), "24h", root.field("ttl"))?;
        if matches!(store, StoreMode::Remote(_)) {
            // The store service refuses larger values: every Reserve/Complete would fail.
            if lock_nanos > MAX_REMOTE_LOCK_NANOS {
                return Err(root
                    .field("lockTimeout")
                    .error("must be at most 24h with \"store\": {\"type\": \"remote\"}"));
            }
            if ttl_nanos > MAX_REMOTE_TTL_NANOS {
                return Err(root.field("ttl").error(
                    "must be at most 720h (30 days) with \"store\": {\"type\": \"remote\"}",
                ));
            }
        }
        Ok(CompiledConfig {
            store,
            methods,
            header,
            lenient: self.lenient,
            max_key_length,
            routes,
            identity_headers,
            identity_client_address: self.identity.client_address,
            max_body_bytes: positive(self.max_body_bytes, 64 * 1024, "maxBodyBytes")?,
            oversized_body: self.oversized_body,
            lock_nanos,
            ttl_nanos,
            store_5xx: self.store_5xx,
            max_response_bytes: positive(self.max_response_bytes, 64 * 1024, "maxResponseBytes")?,
            replay_headers,
            replay_set_cookie: self.replay_set_cookie,
            max_entries,
            max_stored_bytes: self
                .max_stored_bytes
                .unwrap_or(DEFAULT_MAX_STORED_BYTES)
                .max(1),
            failure_mode: self.failure_mode,
            in_flight_wait_nanos: match &self.in_flight_wait {
                None => 0,
                Some(text) => {
                    let nanos = parse_duration_nanos(text)
                        .map_err(|err| root.field("inFlightWait").error(err))?;
                    if nanos > MAX_IN_FLIGHT_WAIT_NANOS {
                        return Err(root.field("inFlightWait").error("must be at most 60s"));
                    }
                    nanos
                }
            },
        })
    }
}

impl IdempotencyConfig {
    fn compile_store(&self, root: &JsonPath) -> Result<StoreMode, ConfigError> {
        let Some(store) = &self.store else {
            return Ok(StoreMode::Local);
        };
        let at = root.field("store");
        match store.kind {
            StoreKind::Local => {
                for (field, given) in [
                    ("cluster", store.cluster.is_some()),
                    ("timeout", store.timeout.is_some()),
                ] {
                    if given {
                        return Err(at.field(field).error("only for \"type\": \"remote\""));
                    }
                }
                Ok(StoreMode::Local)
            }
            StoreKind::Remote => {
                let cluster = store
                    .cluster
                    .clone()
                    .unwrap_or_else(|| DEFAULT_STORE_CLUSTER.into());
                if cluster.is_empty()
                    || cluster.len() > meshward_filter_common::grpc_target::MAX_CLUSTER_NAME
                {
                    return Err(at.field("cluster").error(format!(
                        "expected an Envoy cluster name (1 to {} bytes)",
                        meshward_filter_common::grpc_target::MAX_CLUSTER_NAME
                    )));
                }
                let timeout_nanos = duration(
                    store.timeout.as_deref(),
                    DEFAULT_STORE_TIMEOUT,
                    at.field("timeout"),
                )?;
                if !(MIN_STORE_TIMEOUT_NANOS..=MAX_STORE_TIMEOUT_NANOS).contains(&timeout_nanos) {
                    return Err(at.field("timeout").error("expected 1ms to 10s"));
                }
                Ok(StoreMode::Remote(RemoteStore {
                    cluster,
                    timeout_nanos,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn defaults() {
        let config = parse(b"").unwrap();
        assert_eq!(config.methods, ["POST", "PATCH"]);
        assert_eq!(config.header, "idempotency-key");
        assert_eq!(config.max_key_length, 255);
        assert_eq!(config.identity_headers, ["x-meshward-principal"]);
        assert_eq!(config.ttl_nanos, 24 * 3600 * 1_000_000_000);
        assert_eq!(config.lock_nanos, 30 * 1_000_000_000);
        assert_eq!(config.failure_mode, FailureMode::Deny);
        assert!(config.routes.is_empty());
        assert_eq!(config.store, StoreMode::Local);
    }

    #[test]
    fn remote_store() {
        let config = parse(br#"{"store":{"type":"remote"}}"#).unwrap();
        assert_eq!(
            config.store,
            StoreMode::Remote(RemoteStore {
                cluster: "meshward-store".into(),
                timeout_nanos: 100_000_000
            })
        );
        let config =
            parse(br#"{"store":{"type":"remote","cluster":"store-b","timeout":"250ms"}}"#).unwrap();
        assert_eq!(
            config.store,
            StoreMode::Remote(RemoteStore {
                cluster: "store-b".into(),
                timeout_nanos: 250_000_000
            })
        );
        assert_eq!(
            parse(br#"{"store":{"type":"local"}}"#).unwrap().store,
            StoreMode::Local
        );
    }

    #[test]
    fn remote_store_bounds_lock_timeout_and_ttl() {
        let at_most =
            parse(br#"{"store":{"type":"remote"},"lockTimeout":"24h","ttl":"720h"}"#).unwrap();
        assert_eq!(at_most.lock_nanos, MAX_REMOTE_LOCK_NANOS);
        assert_eq!(at_most.ttl_nanos, MAX_REMOTE_TTL_NANOS);
        // The embedded store has no such bound.
        let local = parse(br#"{"lockTimeout":"48h","ttl":"1000h"}"#).unwrap();
        assert_eq!(local.lock_nanos, 48 * 3600 * 1_000_000_000);
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases = [
            (r#"{"methods":["GET"]}"#, "methods[0]"),
            (r#"{"ttl":"forever"}"#, "ttl"),
            (r#"{"lockTimeout":"0s"}"#, "lockTimeout"),
            (
                r#"{"routes":[{"name":"","key":"required"}]}"#,
                "routes[0].name",
            ),
            (
                r#"{"routes":[{"name":"r","key":"always"}]}"#,
                "routes[0].key",
            ),
            (
                r#"{"identity":{"headers":["bad header"]}}"#,
                "identity.headers[0]",
            ),
            (r#"{"maxResponseBytes":0}"#, "maxResponseBytes"),
            (r#"{"maxEntries":0}"#, "maxEntries"),
            (r#"{"store5XX":true}"#, "store5XX"),
            (r#"{"inFlightWait":"2m"}"#, "inFlightWait"),
            (r#"{"store":{"type":"redis"}}"#, "store.type"),
            (r#"{"store":{}}"#, "store"),
            (
                r#"{"store":{"type":"remote","timeout":"20s"}}"#,
                "store.timeout",
            ),
            (
                r#"{"store":{"type":"remote","timeout":"0s"}}"#,
                "store.timeout",
            ),
            (
                r#"{"store":{"type":"remote","cluster":""}}"#,
                "store.cluster",
            ),
            (
                r#"{"store":{"type":"local","cluster":"c"}}"#,
                "store.cluster",
            ),
            (
                r#"{"store":{"type":"remote","url":"redis://x"}}"#,
                "store.url",
            ),
            (
                r#"{"store":{"type":"remote"},"lockTimeout":"25h"}"#,
                "lockTimeout",
            ),
            (r#"{"store":{"type":"remote"},"ttl":"721h"}"#, "ttl"),
        ];
        for (json, path) in cases {
            let err = parse(json.as_bytes()).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }
}
