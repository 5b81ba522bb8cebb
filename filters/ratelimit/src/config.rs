//! The filter's JSON configuration: serde types mirroring the documented schema
//! (README.md), validated and compiled into [`CompiledConfig`] at `on_configure`.
//! Every error names its JSON path; unknown fields are errors.

use serde::Deserialize;

use crate::algorithm::{Algorithm, Limit};
use crate::key::KeyPart;
use crate::table::KeyTable;
use meshward_filter_common::config_error::{is_metric_segment, parse_json, ConfigError, JsonPath};
use meshward_filter_common::duration::parse_duration_nanos;
use meshward_filter_common::grpc_target::{service_target, MAX_CLUSTER_NAME};
use meshward_filter_common::matcher::{validate_header_name, RequestMatchConfig, RequestMatcher};

pub const DEFAULT_MAX_KEYS: u32 = 10_000;
pub const DEFAULT_CAS_RETRIES: u32 = 16;
pub const DEFAULT_SWEEP_INTERVAL: &str = "1s";
/// Upper bound for `maxKeys`: 1M keys is ~56 MB of shared data per rule.
pub const MAX_MAX_KEYS: u32 = 1_000_000;
const MAX_RULES: usize = 64;
const MIN_WINDOW_NANOS: u64 = 1_000_000;
const MAX_WINDOW_NANOS: u64 = 366 * 86_400 * 1_000_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitConfig {
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub response_headers: ResponseHeadersConfig,
    /// Compare-and-swap attempts after the first, before `failureMode` applies.
    pub cas_retries: Option<u32>,
    /// Default `maxKeys` for rules that do not set their own.
    pub max_keys: Option<u32>,
    /// How often idle keys are cleared (a duration string).
    pub sweep_interval: Option<String>,
    /// Decide every rule with a rate-limit service (Envoy's RLS API) instead of locally.
    pub global: Option<GlobalConfigJson>,
}

/// `global`: the rate-limit service to ask (docs/adr/0009).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobalConfigJson {
    pub domain: String,
    pub cluster: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub request_match: RequestMatchConfig,
    #[serde(default)]
    pub key: Vec<KeyPartConfig>,
    pub limit: LimitConfig,
    #[serde(default)]
    pub shadow: bool,
    /// Default `allow`; in global mode, `global.failureMode`.
    pub failure_mode: Option<FailureMode>,
    pub max_keys: Option<u32>,
    /// Global mode: a local limit enforced while the service is unreachable.
    pub fallback: Option<LimitConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum KeyPartConfig {
    ClientAddress {
        #[serde(default)]
        source: AddressSource,
        #[serde(default)]
        trusted_hops: u32,
    },
    Header {
        name: String,
        default: Option<String>,
    },
    Path,
    Method,
    QueryParameter {
        name: String,
        default: Option<String>,
    },
    Cookie {
        name: String,
        default: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AddressSource {
    #[default]
    Connection,
    XForwardedFor,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitConfig {
    pub algorithm: AlgorithmName,
    pub requests: u64,
    pub per: String,
    pub burst: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AlgorithmName {
    TokenBucket,
    SlidingWindow,
    Gcra,
    FixedWindow,
}

/// What a rule does when its state cannot be read or updated.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseHeadersConfig {
    /// `RateLimit` and `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
    #[serde(default = "yes")]
    pub rate_limit: bool,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    #[serde(default)]
    pub legacy: bool,
    /// Also add the fields to responses that were not limited.
    #[serde(default)]
    pub on_allowed: bool,
}

fn yes() -> bool {
    true
}

impl Default for ResponseHeadersConfig {
    fn default() -> Self {
        Self {
            rate_limit: true,
            legacy: false,
            on_allowed: false,
        }
    }
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    pub matcher: RequestMatcher,
    pub key: Vec<KeyPart>,
    pub limit: Limit,
    pub shadow: bool,
    pub failure_mode: FailureMode,
    /// Local state: the rule's limit, or in global mode its fallback limit (when set).
    pub table: KeyTable,
    /// Global mode: the limit enforced locally while the service is unreachable.
    pub fallback: Option<Limit>,
}

/// The rate-limit service a global configuration asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalConfig {
    pub domain: String,
    pub cluster: String,
    /// `cluster` as `dispatch_grpc_call` needs it (an encoded `GrpcService`).
    pub target: String,
    pub timeout_nanos: u64,
    pub failure_mode: FailureMode,
}

pub const DEFAULT_RLS_CLUSTER: &str = "meshward-rls";
pub const DEFAULT_RLS_TIMEOUT: &str = "100ms";

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub rules: Vec<CompiledRule>,
    pub response_headers: ResponseHeadersConfig,
    pub cas_retries: u32,
    pub sweep_interval_nanos: u64,
    /// Whether any rule keys on the client address (saves a host call otherwise).
    pub needs_source_address: bool,
    /// Whether any rule matches on or keys by the request's headers (a configuration
    /// keyed only by the connection's address reads none: saves the costliest host
    /// call of the request, about 1.5 µs).
    pub needs_headers: bool,
    /// Set: every rule is decided by this rate-limit service.
    pub global: Option<GlobalConfig>,
}

pub fn parse(bytes: &[u8]) -> Result<CompiledConfig, ConfigError> {
    parse_json::<RateLimitConfig>(bytes)?.compile()
}

impl RateLimitConfig {
    pub fn compile(&self) -> Result<CompiledConfig, ConfigError> {
        let root = JsonPath::root();
        if self.rules.len() > MAX_RULES {
            return Err(root
                .field("rules")
                .error(format!("at most {MAX_RULES} rules are supported")));
        }
        let default_max_keys = validate_max_keys(
            self.max_keys.unwrap_or(DEFAULT_MAX_KEYS),
            &root.field("maxKeys"),
        )?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for (index, rule) in self.rules.iter().enumerate() {
            let path = root.field("rules").index(index);
            if let Some(previous) = self
                .rules
                .iter()
                .take(index)
                .position(|other| other.name == rule.name)
            {
                return Err(path.field("name").error(format!(
                    "duplicate rule name {:?} (also rules[{previous}])",
                    rule.name
                )));
            }
            if self.global.is_none() && rule.fallback.is_some() {
                return Err(path
                    .field("fallback")
                    .error("only applies with a \"global\" section (the local limit while the rate-limit service is unreachable)"));
            }
            // `rule` plus one entry per part; services cap descriptors at 16 entries.
            if self.global.is_some() && rule.key.len() > 15 {
                return Err(path.field("key").error(
                    "at most 15 key parts in global mode (a descriptor carries at most 16 entries)",
                ));
            }
            let default_failure_mode = self
                .global
                .as_ref()
                .map_or(FailureMode::Allow, |g| g.failure_mode);
            rules.push(rule.compile(&path, default_max_keys, default_failure_mode)?);
        }
        let global = self
            .global
            .as_ref()
            .map(|global| global.compile(&root.field("global")))
            .transpose()?;
        let sweep_interval_nanos = parse_duration_nanos(
            self.sweep_interval
                .as_deref()
                .unwrap_or(DEFAULT_SWEEP_INTERVAL),
        )
        .map_err(|err| root.field("sweepInterval").error(err))?;
        if !(10_000_000..=3_600_000_000_000).contains(&sweep_interval_nanos) {
            return Err(root.field("sweepInterval").error("expected 10ms to 1h"));
        }
        let needs_source_address = rules
            .iter()
            .any(|rule| rule.key.iter().any(KeyPart::needs_source_address));
        let needs_headers = rules
            .iter()
            .any(|rule| !rule.matcher.is_any() || rule.key.iter().any(KeyPart::needs_headers));
        Ok(CompiledConfig {
            rules,
            response_headers: self.response_headers,
            cas_retries: self.cas_retries.unwrap_or(DEFAULT_CAS_RETRIES).min(1000),
            sweep_interval_nanos,
            needs_source_address,
            needs_headers,
            global,
        })
    }
}

impl GlobalConfigJson {
    fn compile(&self, path: &JsonPath) -> Result<GlobalConfig, ConfigError> {
        // The control plane's domains are `<namespace>/<name>`: up to 63 + 1 + 253.
        if self.domain.is_empty() || self.domain.len() > 320 {
            return Err(path.field("domain").error("expected 1 to 320 characters"));
        }
        let cluster = self.cluster.as_deref().unwrap_or(DEFAULT_RLS_CLUSTER);
        let target = service_target(cluster).ok_or_else(|| {
            path.field("cluster")
                .error(format!("expected 1 to {MAX_CLUSTER_NAME} characters"))
        })?;
        let timeout_nanos =
            parse_duration_nanos(self.timeout.as_deref().unwrap_or(DEFAULT_RLS_TIMEOUT))
                .map_err(|err| path.field("timeout").error(err))?;
        if !(1_000_000..=10_000_000_000).contains(&timeout_nanos) {
            return Err(path.field("timeout").error("expected 1ms to 10s"));
        }
        Ok(GlobalConfig {
            domain: self.domain.clone(),
            cluster: cluster.to_owned(),
            target,
            timeout_nanos,
            failure_mode: self.failure_mode,
        })
    }
}

fn validate_max_keys(max_keys: u32, path: &JsonPath) -> Result<u32, ConfigError> {
    if max_keys == 0 || max_keys > MAX_MAX_KEYS {
        return Err(path.error(format!("expected 1 to {MAX_MAX_KEYS}, got {max_keys}")));
    }
    Ok(max_keys)
}

impl RuleConfig {
    fn compile(
        &self,
        path: &JsonPath,
        default_max_keys: u32,
        default_failure_mode: FailureMode,
    ) -> Result<CompiledRule, ConfigError> {
        let name_ok = self.name.len() <= 64 && is_metric_segment(&self.name);
        if !name_ok {
            return Err(path.field("name").error(format!(
                "{:?} is not a valid rule name: use 1-64 letters, digits, '-' or '_' (it becomes part of metric names)",
                self.name
            )));
        }
        let matcher = self.request_match.compile(&path.field("match"))?;
        let key = self
            .key
            .iter()
            .enumerate()
            .map(|(i, part)| part.compile(&path.field("key").index(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let limit = self.limit.compile(&path.field("limit"))?;
        let max_keys = match self.max_keys {
            Some(max_keys) => validate_max_keys(max_keys, &path.field("maxKeys"))?,
            None => default_max_keys,
        };
        let fallback = self
            .fallback
            .as_ref()
            .map(|limit| limit.compile(&path.field("fallback")))
            .transpose()?;
        Ok(CompiledRule {
            name: self.name.clone(),
            matcher,
            key,
            limit,
            shadow: self.shadow,
            failure_mode: self.failure_mode.unwrap_or(default_failure_mode),
            table: KeyTable::new(&self.name, max_keys),
            fallback,
        })
    }
}

impl KeyPartConfig {
    fn compile(&self, path: &JsonPath) -> Result<KeyPart, ConfigError> {
        let non_empty = |name: &str| -> Result<String, ConfigError> {
            if name.is_empty() {
                Err(path.field("name").error("must not be empty"))
            } else {
                Ok(name.to_owned())
            }
        };
        Ok(match self {
            KeyPartConfig::ClientAddress {
                source: AddressSource::Connection,
                trusted_hops,
            } => {
                if *trusted_hops != 0 {
                    return Err(path
                        .field("trustedHops")
                        .error("only applies with \"source\": \"xForwardedFor\""));
                }
                KeyPart::ConnectionAddress
            }
            KeyPartConfig::ClientAddress {
                source: AddressSource::XForwardedFor,
                trusted_hops,
            } => KeyPart::ForwardedFor {
                trusted_hops: *trusted_hops,
            },
            KeyPartConfig::Header { name, default } => KeyPart::Header {
                name: validate_header_name(name, &path.field("name"))?,
                default: default.clone(),
            },
            KeyPartConfig::Path => KeyPart::Path,
            KeyPartConfig::Method => KeyPart::Method,
            KeyPartConfig::QueryParameter { name, default } => KeyPart::QueryParameter {
                name: non_empty(name)?,
                default: default.clone(),
            },
            KeyPartConfig::Cookie { name, default } => KeyPart::Cookie {
                name: non_empty(name)?,
                default: default.clone(),
            },
        })
    }
}

impl LimitConfig {
    fn compile(&self, path: &JsonPath) -> Result<Limit, ConfigError> {
        let per_nanos =
            parse_duration_nanos(&self.per).map_err(|err| path.field("per").error(err))?;
        if per_nanos < MIN_WINDOW_NANOS {
            return Err(path.field("per").error("must be at least 1ms"));
        }
        if per_nanos > MAX_WINDOW_NANOS {
            return Err(path.field("per").error("must be at most 366d"));
        }
        if self.requests == 0 || self.requests > 1_000_000_000 {
            return Err(path
                .field("requests")
                .error(format!("expected 1 to 1000000000, got {}", self.requests)));
        }
        let algorithm = match self.algorithm {
            AlgorithmName::TokenBucket => Algorithm::TokenBucket,
            AlgorithmName::SlidingWindow => Algorithm::SlidingWindow,
            AlgorithmName::Gcra => Algorithm::Gcra,
            AlgorithmName::FixedWindow => Algorithm::FixedWindow,
        };
        let burst = match (algorithm, self.burst) {
            (Algorithm::SlidingWindow | Algorithm::FixedWindow, Some(_)) => {
                return Err(path
                    .field("burst")
                    .error("a window has no burst; use tokenBucket or gcra"));
            }
            (_, Some(0)) => return Err(path.field("burst").error("must be at least 1")),
            (_, Some(burst)) if burst > 1_000_000_000 => {
                return Err(path.field("burst").error("must be at most 1000000000"));
            }
            (_, Some(burst)) => burst,
            (_, None) => self.requests,
        };
        // GCRA keeps `burst × per / requests` ahead of now; bound it so the arithmetic
        // can never saturate (which would admit everything).
        if algorithm == Algorithm::Gcra
            && (per_nanos / self.requests).saturating_mul(burst) > MAX_WINDOW_NANOS
        {
            return Err(path
                .field("burst")
                .error("burst × per / requests must be at most 366d"));
        }
        Ok(Limit {
            algorithm,
            requests: self.requests,
            per_nanos,
            burst,
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn error_of(json: &str) -> ConfigError {
        parse(json.as_bytes()).expect_err("config should be rejected")
    }

    const MINIMAL: &str =
        r#"{"rules":[{"name":"r","limit":{"algorithm":"tokenBucket","requests":10,"per":"1s"}}]}"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL.as_bytes()).unwrap();
        let rule = &config.rules[0];
        assert_eq!(
            rule.limit,
            Limit {
                algorithm: Algorithm::TokenBucket,
                requests: 10,
                per_nanos: 1_000_000_000,
                burst: 10
            }
        );
        assert_eq!(rule.failure_mode, FailureMode::Allow);
        assert!(!rule.shadow);
        assert_eq!(rule.table.pages(), DEFAULT_MAX_KEYS.div_ceil(8));
        assert_eq!(config.cas_retries, DEFAULT_CAS_RETRIES);
        assert_eq!(config.response_headers, ResponseHeadersConfig::default());
        assert!(!config.needs_source_address);
        assert!(!config.needs_headers, "no match, no key: nothing to read");
    }

    #[test]
    fn headers_are_read_only_when_a_match_or_a_key_part_needs_them() {
        let with = |rule_extra: &str| {
            parse(
                format!(
                    r#"{{"rules":[{{"name":"r",{rule_extra}"limit":{{"algorithm":"tokenBucket","requests":10,"per":"1s"}}}}]}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let by_address = with(r#""key":[{"type":"clientAddress"}],"#);
        assert!(by_address.needs_source_address && !by_address.needs_headers);
        assert!(
            with(r#""key":[{"type":"clientAddress","source":"xForwardedFor"}],"#).needs_headers
        );
        assert!(with(r#""key":[{"type":"header","name":"x-user"}],"#).needs_headers);
        assert!(
            with(r#""match":{"methods":["GET"]},"key":[{"type":"clientAddress"}],"#).needs_headers
        );
    }

    #[test]
    fn full_config_compiles() {
        let config = parse(
            br#"{
              "rules": [{
                "name": "per-client",
                "match": {"path": {"prefix": "/api"}, "methods": ["GET", "POST"]},
                "key": [
                  {"type": "clientAddress", "source": "xForwardedFor", "trustedHops": 1},
                  {"type": "header", "name": "X-Api-Key", "default": "anonymous"},
                  {"type": "path"}, {"type": "method"},
                  {"type": "queryParameter", "name": "tenant"},
                  {"type": "cookie", "name": "session"}
                ],
                "limit": {"algorithm": "gcra", "requests": 100, "per": "1m", "burst": 20},
                "shadow": true, "failureMode": "deny", "maxKeys": 500
              }],
              "responseHeaders": {"rateLimit": true, "legacy": true, "onAllowed": true},
              "casRetries": 4, "maxKeys": 2000, "sweepInterval": "5s"
            }"#,
        )
        .unwrap();
        let rule = &config.rules[0];
        assert_eq!(rule.key.len(), 6);
        assert_eq!(
            rule.key[1],
            KeyPart::Header {
                name: "x-api-key".into(),
                default: Some("anonymous".into())
            }
        );
        assert_eq!(rule.table.pages(), 63);
        assert!(config.needs_source_address);
        assert_eq!(config.sweep_interval_nanos, 5_000_000_000);
    }

    #[test]
    fn no_rules_is_a_pass_through_configuration() {
        // What the control plane serves to a workload no rate-limit policy selects.
        let config = parse(br#"{"rules":[]}"#).unwrap();
        assert!(config.rules.is_empty());
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases = [
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"tokenBucket","requests":10,"per":"soon"}}]}"#,
                "rules[0].limit.per",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"leaky","requests":10,"per":"1s"}}]}"#,
                "rules[0].limit.algorithm",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":0,"per":"1s"}}]}"#,
                "rules[0].limit.requests",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"slidingWindow","requests":1,"per":"1s","burst":5}}]}"#,
                "rules[0].limit.burst",
            ),
            (
                r#"{"rules":[{"name":"a b","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
                "rules[0].name",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"}},{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
                "rules[1].name",
            ),
            (
                r#"{"rules":[{"name":"r","key":[{"type":"header","name":""}],"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
                "rules[0].key[0].name",
            ),
            (
                r#"{"rules":[{"name":"r","key":[{"type":"ip"}],"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
                "rules[0].key[0].type",
            ),
            (
                r#"{"rules":[{"name":"r","key":[{"type":"header","name":"x","nmae":"y"}],"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
                "rules[0].key[0]",
            ),
            (
                r#"{"rules":[{"name":"r","match":{"path":{"regex":"("}},"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
                "rules[0].match.path.regex",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"},"maxKeys":0}]}"#,
                "rules[0].maxKeys",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"},"colour":"red"}]}"#,
                "rules[0].colour",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}],"sweepInterval":"0s"}"#,
                "sweepInterval",
            ),
        ];
        for (json, path) in cases {
            let err = error_of(json);
            assert_eq!(err.path, path, "for {json}: {err}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn unknown_field_in_a_key_part_is_named() {
        let err = error_of(
            r#"{"rules":[{"name":"r","key":[{"type":"header","name":"x","nmae":"y"}],"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}]}"#,
        );
        assert!(err.message.contains("unknown field `nmae`"), "{err}");
    }

    #[test]
    fn extreme_windows_and_sweep_intervals_are_refused() {
        let cases = [
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}],"sweepInterval":"1ms"}"#,
                "sweepInterval",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"}}],"sweepInterval":"2h"}"#,
                "sweepInterval",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"tokenBucket","requests":1,"per":"400d"}}]}"#,
                "rules[0].limit.per",
            ),
            (
                r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1d","burst":200000}}]}"#,
                "rules[0].limit.burst",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(error_of(json).path, path, "{json}");
        }
        assert!(parse(br#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1d","burst":300}}]}"#).is_ok());
    }

    #[test]
    fn unknown_algorithm_lists_the_choices() {
        let err = error_of(
            r#"{"rules":[{"name":"r","limit":{"algorithm":"leaky","requests":10,"per":"1s"}}]}"#,
        );
        assert!(
            err.message.contains("tokenBucket") && err.message.contains("gcra"),
            "{err}"
        );
    }

    #[test]
    fn not_json_is_an_error() {
        for input in ["", "null", "[]", "{\"rules\":", "\u{0}"] {
            assert!(parse(input.as_bytes()).is_err(), "{input:?}");
        }
    }
}
