//! The filter's JSON configuration (schema in README.md), validated into
//! [`CompiledConfig`] at `on_configure`: inline key sets parsed, matchers compiled,
//! provider references resolved, header names checked. Unknown fields are errors;
//! errors name their JSON path.

use serde::Deserialize;
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::jwks::{self, KeySet};
use crate::rules::{ClaimCondition, ClaimTest, Requirement, Rule, RuleAction};
use meshward_filter_common::config_error::{is_metric_segment, parse_json, ConfigError, JsonPath};
use meshward_filter_common::duration::{parse_duration_nanos, parse_duration_or_zero_nanos};
use meshward_filter_common::matcher::{validate_header_name, RequestMatchConfig};

const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Let the request through unauthenticated (no identity headers), counted.
    Allow,
    /// 503 problem+json.
    #[default]
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzConfig {
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub default_action: RuleAction,
    #[serde(default)]
    pub failure_mode: FailureMode,
    pub realm: Option<String>,
    #[serde(default = "default_principal_header")]
    pub principal_header: String,
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    pub max_token_bytes: Option<usize>,
}

fn default_principal_header() -> String {
    "x-meshward-principal".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenCacheConfig {
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    pub max_age: Option<String>,
}

fn default_cache_entries() -> usize {
    1024
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_entries(),
            max_age: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderConfig {
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: JwksConfig,
    #[serde(default)]
    pub from: Vec<TokenLocationConfig>,
    pub clock_skew: Option<String>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub claim_headers: Vec<ClaimHeaderConfig>,
    pub payload_header: Option<String>,
    #[serde(default)]
    pub strip_token: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwksConfig {
    pub remote: Option<RemoteJwksConfig>,
    /// A JWKS document, as a JSON object or as a string holding one.
    pub inline: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteJwksConfig {
    /// The Envoy cluster that reaches the JWKS endpoint.
    pub cluster: String,
    /// `https://host/path`: `:authority` and `:path` of the fetch.
    pub uri: String,
    pub timeout: Option<String>,
    pub cache_duration: Option<String>,
    pub retry_interval: Option<String>,
    pub unknown_kid_refetch_interval: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenLocationConfig {
    pub header: Option<String>,
    pub prefix: Option<String>,
    pub query: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimHeaderConfig {
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConfig {
    pub name: String,
    pub action: RuleAction,
    #[serde(default, rename = "match")]
    pub request_match: RequestMatchConfig,
    #[serde(default)]
    pub require: RequireConfig,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub claims: Vec<ClaimConditionConfig>,
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RequireConfig {
    #[default]
    Any,
    Anonymous,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimConditionConfig {
    pub claim: String,
    pub equals: Option<Value>,
    #[serde(rename = "in")]
    pub one_of: Option<Vec<Value>>,
    pub contains: Option<String>,
    pub exists: Option<bool>,
}

/// Where a provider looks for its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A header; `prefix` (matched case-insensitively, e.g. `Bearer `) is removed.
    Header {
        name: String,
        prefix: String,
    },
    Query(String),
    Cookie(String),
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_nanos: u64,
    pub cache_nanos: u64,
    pub retry_nanos: u64,
    pub unknown_kid_nanos: u64,
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(KeySet),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub locations: Vec<TokenLocation>,
    pub skew_secs: u64,
    pub required_claims: Vec<String>,
    /// Empty: every algorithm the key allows.
    pub algorithms: Vec<Algorithm>,
    pub claim_headers: Vec<(String, String)>,
    pub payload_header: Option<String>,
    pub strip_token: bool,
}

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub default_action: RuleAction,
    pub failure_mode: FailureMode,
    pub realm: String,
    pub principal_header: String,
    pub cache_entries: usize,
    pub cache_max_age_secs: u64,
    pub max_token_bytes: usize,
    /// Warnings to log once (skipped inline JWKS entries).
    pub warnings: Vec<String>,
    /// Every header this filter sets, removed from each request first so a client can
    /// never supply one.
    pub owned_headers: Vec<String>,
}

pub fn parse(bytes: &[u8]) -> Result<CompiledConfig, ConfigError> {
    let config: AuthzConfig = parse_json(bytes)?;
    config.compile()
}

fn duration_secs(
    value: &Option<String>,
    default_secs: u64,
    path: &JsonPath,
) -> Result<u64, ConfigError> {
    Ok(duration_nanos(value, default_secs, path)? / NANOS_PER_SEC)
}

fn duration_nanos(
    value: &Option<String>,
    default_secs: u64,
    path: &JsonPath,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default_secs.saturating_mul(NANOS_PER_SEC)),
        Some(text) => parse_duration_nanos(text).map_err(|err| path.error(err)),
    }
}

impl AuthzConfig {
    pub fn compile(&self) -> Result<CompiledConfig, ConfigError> {
        let root = JsonPath::root();
        // Without providers only anonymous rules can ever apply (the pass-through
        // configuration the control plane serves to a workload no policy selects).
        let all_anonymous = !self.rules.is_empty()
            && self
                .rules
                .iter()
                .all(|r| r.require == RequireConfig::Anonymous);
        if self.providers.is_empty() && !all_anonymous {
            return Err(root.field("providers").error(
                "at least one provider is required (without providers every rule must be `require: anonymous`)",
            ));
        }
        let mut warnings = Vec::new();
        let mut providers = Vec::with_capacity(self.providers.len());
        for (i, provider) in self.providers.iter().enumerate() {
            let at = root.field("providers").index(i);
            if self
                .providers
                .iter()
                .take(i)
                .any(|p| p.name == provider.name)
            {
                return Err(at
                    .field("name")
                    .error(format!("duplicate provider name {:?}", provider.name)));
            }
            let compiled = provider.compile(&at, &mut warnings)?;
            // The token's `iss` picks the provider among those that look where the token
            // was found: a second provider with the same issuer there could never be reached.
            if let Some(twin) = providers.iter().find(|p: &&Provider| {
                p.issuer == compiled.issuer
                    && p.locations.iter().any(|l| compiled.locations.contains(l))
            }) {
                return Err(at.field("issuer").error(format!(
                    "provider {:?} already verifies issuer {:?} from the same token location; merge their audiences into one provider",
                    twin.name, compiled.issuer
                )));
            }
            if compiled.audiences.is_empty() {
                warnings.push(format!(
                    "provider {}: no `audiences`: tokens this issuer minted for any audience (other APIs, ID tokens) are accepted",
                    compiled.name
                ));
            }
            providers.push(compiled);
        }
        let principal_header =
            validate_header_name(&self.principal_header, &root.field("principalHeader"))?;
        check_written_headers(&providers, &principal_header, &root)?;
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| rule.compile(&root.field("rules").index(i), &providers))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, rule) in rules.iter().enumerate() {
            if rules.iter().take(i).any(|r| r.name == rule.name) {
                return Err(root
                    .field("rules")
                    .index(i)
                    .field("name")
                    .error(format!("duplicate rule name {:?}", rule.name)));
            }
        }
        let realm = self.realm.clone().unwrap_or_else(|| "meshward".into());
        if !realm.bytes().all(is_quoted_string_safe) {
            return Err(root
                .field("realm")
                .error("use printable ASCII without `\"` or `\\`"));
        }
        let cache_max_age_secs = duration_secs(
            &self.token_cache.max_age,
            300,
            &root.field("tokenCache").field("maxAge"),
        )?;
        let max_token_bytes = self.max_token_bytes.unwrap_or(8192);
        if max_token_bytes == 0 {
            return Err(root.field("maxTokenBytes").error("must be positive"));
        }
        let mut owned_headers = vec![principal_header.clone()];
        for provider in &providers {
            owned_headers.extend(provider.claim_headers.iter().map(|(_, h)| h.clone()));
            owned_headers.extend(provider.payload_header.iter().cloned());
        }
        owned_headers.sort();
        owned_headers.dedup();
        Ok(CompiledConfig {
            providers,
            rules,
            default_action: self.default_action,
            failure_mode: self.failure_mode,
            realm,
            principal_header,
            cache_entries: self.token_cache.max_entries,
            cache_max_age_secs,
            max_token_bytes,
            warnings,
            owned_headers,
        })
    }
}

/// The headers the filter writes (principal, claim and payload headers) are removed
/// from every request before the token is looked for, and each is written by one
/// setting: so none may be a pseudo-header or a header a provider reads its token from
/// (no token would ever be found), and within a provider none may repeat (the last
/// write would silently win — a claim overwriting the principal, say).
fn check_written_headers(
    providers: &[Provider],
    principal_header: &str,
    root: &JsonPath,
) -> Result<(), ConfigError> {
    let token_headers: Vec<&str> = providers
        .iter()
        .flat_map(|p| &p.locations)
        .filter_map(|location| match location {
            TokenLocation::Header { name, .. } => Some(name.as_str()),
            TokenLocation::Cookie(_) => Some("cookie"),
            TokenLocation::Query(_) => None,
        })
        .collect();
    let check = |name: &str, at: &JsonPath| -> Result<(), ConfigError> {
        if name.starts_with(':') {
            return Err(at.error(format!("{name:?}: a pseudo-header cannot carry identity")));
        }
        if token_headers.contains(&name) {
            return Err(at.error(format!(
                "{name:?} is where a provider reads its token; the headers this filter writes are removed from every request first, so no token would be found"
            )));
        }
        Ok(())
    };
    check(principal_header, &root.field("principalHeader"))?;
    for (i, provider) in providers.iter().enumerate() {
        let at = root.field("providers").index(i);
        let mut written = vec![principal_header];
        let payload = provider
            .payload_header
            .as_deref()
            .map(|h| (h, at.field("payloadHeader")));
        let claims = provider
            .claim_headers
            .iter()
            .enumerate()
            .map(|(j, (_, h))| {
                (
                    h.as_str(),
                    at.field("claimHeaders").index(j).field("header"),
                )
            });
        for (header, path) in claims.chain(payload) {
            check(header, &path)?;
            if written.contains(&header) {
                return Err(path.error(format!(
                    "{header:?} is already written (principalHeader, or an earlier claimHeaders entry of this provider)"
                )));
            }
            written.push(header);
        }
    }
    Ok(())
}

/// Provider and rule names become metric name segments.
fn check_metric_name(name: &str, at: &JsonPath) -> Result<(), ConfigError> {
    if is_metric_segment(name) {
        Ok(())
    } else {
        Err(at
            .field("name")
            .error("use letters, digits, `-` and `_` (it names metrics)"))
    }
}

/// RFC 6750 §3: characters allowed inside the `realm`/`error_description` quotes.
pub fn is_quoted_string_safe(byte: u8) -> bool {
    matches!(byte, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)
}

impl ProviderConfig {
    fn compile(&self, at: &JsonPath, warnings: &mut Vec<String>) -> Result<Provider, ConfigError> {
        check_metric_name(&self.name, at)?;
        if self.issuer.is_empty() {
            return Err(at.field("issuer").error("must not be empty"));
        }
        let keys = match (&self.jwks.remote, &self.jwks.inline) {
            (Some(remote), None) => {
                KeySource::Remote(remote.compile(&at.field("jwks").field("remote"))?)
            }
            (None, Some(inline)) => {
                let document = match inline {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let parsed = jwks::parse(document.as_bytes(), jwks::Origin::Inline)
                    .map_err(|err| at.field("jwks").field("inline").error(err))?;
                warnings.extend(
                    parsed
                        .warnings
                        .into_iter()
                        .map(|w| format!("provider {}: inline JWKS {w}", self.name)),
                );
                KeySource::Inline(parsed.set)
            }
            _ => {
                return Err(at
                    .field("jwks")
                    .error("give exactly one of `remote` or `inline`"))
            }
        };
        let locations = if self.from.is_empty() {
            vec![TokenLocation::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }]
        } else {
            self.from
                .iter()
                .enumerate()
                .map(|(i, location)| location.compile(&at.field("from").index(i)))
                .collect::<Result<_, _>>()?
        };
        let algorithms = self
            .algorithms
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Algorithm::from_name(name).ok_or_else(|| {
                    at.field("algorithms").index(i).error(format!(
                        "{name:?} is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claim_headers = self
            .claim_headers
            .iter()
            .enumerate()
            .map(|(i, mapping)| {
                let at = at.field("claimHeaders").index(i);
                if mapping.claim.is_empty() {
                    return Err(at.field("claim").error("must not be empty"));
                }
                let header = validate_header_name(&mapping.header, &at.field("header"))?;
                Ok((mapping.claim.clone(), header))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let payload_header = self
            .payload_header
            .as_ref()
            .map(|name| validate_header_name(name, &at.field("payloadHeader")))
            .transpose()?;
        Ok(Provider {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            keys,
            locations,
            skew_secs: match &self.clock_skew {
                None => 60,
                Some(text) => {
                    parse_duration_or_zero_nanos(text)
                        .map_err(|err| at.field("clockSkew").error(err))?
                        / NANOS_PER_SEC
                }
            },
            required_claims: self.required_claims.clone(),
            algorithms,
            claim_headers,
            payload_header,
            strip_token: self.strip_token,
        })
    }
}

impl RemoteJwksConfig {
    fn compile(&self, at: &JsonPath) -> Result<RemoteJwks, ConfigError> {
        if self.cluster.is_empty() {
            return Err(at.field("cluster").error("must name an Envoy cluster"));
        }
        let (authority, path) = split_uri(&self.uri).ok_or_else(|| {
            at.field("uri")
                .error("expected an absolute http(s):// URI with a host")
        })?;
        let positive = |value: &Option<String>, default: u64, field: &str| {
            let nanos = duration_nanos(value, default, &at.field(field))?;
            if nanos == 0 {
                return Err(at.field(field).error("must be positive"));
            }
            Ok(nanos)
        };
        Ok(RemoteJwks {
            cluster: self.cluster.clone(),
            authority,
            path,
            timeout_nanos: positive(&self.timeout, 5, "timeout")?,
            cache_nanos: positive(&self.cache_duration, 600, "cacheDuration")?,
            retry_nanos: positive(&self.retry_interval, 10, "retryInterval")?,
            unknown_kid_nanos: positive(
                &self.unknown_kid_refetch_interval,
                30,
                "unknownKidRefetchInterval",
            )?,
        })
    }
}

fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (rest.get(..at)?, rest.get(at..)?),
        None => (rest, "/"),
    };
    let valid = !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
        && path.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| (authority.to_owned(), path.to_owned()))
}

impl TokenLocationConfig {
    fn compile(&self, at: &JsonPath) -> Result<TokenLocation, ConfigError> {
        match (&self.header, &self.query, &self.cookie) {
            (Some(header), None, None) => Ok(TokenLocation::Header {
                name: validate_header_name(header, &at.field("header"))?,
                prefix: self.prefix.clone().unwrap_or_default(),
            }),
            (None, Some(query), None) if self.prefix.is_none() && !query.is_empty() => {
                Ok(TokenLocation::Query(query.clone()))
            }
            (None, None, Some(cookie)) if self.prefix.is_none() && !cookie.is_empty() => {
                Ok(TokenLocation::Cookie(cookie.clone()))
            }
            _ => Err(at.error(
                "give exactly one of `header` (with an optional `prefix`), `query` or `cookie`",
            )),
        }
    }
}

impl RuleConfig {
    fn compile(&self, at: &JsonPath, providers: &[Provider]) -> Result<Rule, ConfigError> {
        check_metric_name(&self.name, at)?;
        let provider_indexes = self
            .providers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                providers
                    .iter()
                    .position(|p| &p.name == name)
                    .ok_or_else(|| {
                        at.field("providers")
                            .index(i)
                            .error(format!("no provider is named {name:?}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let requirement = match self.require {
            RequireConfig::Any => Requirement::Authenticated {
                providers: provider_indexes,
            },
            RequireConfig::Anonymous if provider_indexes.is_empty() => Requirement::Anonymous,
            RequireConfig::Anonymous => {
                return Err(at
                    .field("providers")
                    .error("`providers` narrows `require: any`; it cannot go with `anonymous`"))
            }
        };
        let claims = self
            .claims
            .iter()
            .enumerate()
            .map(|(i, condition)| condition.compile(&at.field("claims").index(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rule {
            name: self.name.clone(),
            action: self.action,
            matcher: self.request_match.compile(&at.field("match"))?,
            requirement,
            claims,
            shadow: self.shadow,
        })
    }
}

impl ClaimConditionConfig {
    fn compile(&self, at: &JsonPath) -> Result<ClaimCondition, ConfigError> {
        if self.claim.is_empty() {
            return Err(at.field("claim").error("must not be empty"));
        }
        let scalar = |value: &Value, at: JsonPath| match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(value.clone()),
            _ => Err(at.error("expected a string, number or boolean")),
        };
        let test = match (&self.equals, &self.one_of, &self.contains, self.exists) {
            (Some(value), None, None, None) => {
                ClaimTest::Equals(scalar(value, at.field("equals"))?)
            }
            (None, Some(values), None, None) => {
                if values.is_empty() {
                    return Err(at.field("in").error("list at least one value"));
                }
                ClaimTest::In(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| scalar(v, at.field("in").index(i)))
                        .collect::<Result<_, _>>()?,
                )
            }
            (None, None, Some(item), None) => ClaimTest::Contains(item.clone()),
            (None, None, None, Some(exists)) => ClaimTest::Exists(exists),
            _ => return Err(at.error("give exactly one of `equals`, `in`, `contains` or `exists`")),
        };
        Ok(ClaimCondition {
            claim: self.claim.clone(),
            test,
        })
    }
}
