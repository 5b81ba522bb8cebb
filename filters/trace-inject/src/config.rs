//! The filter's JSON configuration (schema in README.md), validated into
//! [`CompiledConfig`] at `on_configure`. Unknown fields are errors; errors name their
//! JSON path.

use serde::Deserialize;

use meshward_filter_common::config_error::{parse_json, ConfigError, JsonPath};
use meshward_filter_common::matcher::{validate_header_name, RequestMatchConfig, RequestMatcher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DirectionSetting {
    /// From Envoy's `listener_direction` (the listener's `traffic_direction`); requests
    /// on a listener without one are treated as inbound.
    #[default]
    Auto,
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TraceInjectConfig {
    /// Formats read from requests. Default: all.
    pub accept: Option<Vec<Format>>,
    /// Formats written to requests. Default: `["w3c"]`. Formats not emitted are removed
    /// from the request so no stale context travels on.
    pub emit: Option<Vec<Format>>,
    #[serde(default)]
    pub direction: DirectionSetting,
    #[serde(default)]
    pub tracestate: TraceStateConfig,
    #[serde(default)]
    pub baggage: BaggageConfig,
    #[serde(default)]
    pub request_id: RequestIdConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Response header carrying the trace id (for humans and debugging), e.g.
    /// `x-trace-id`. Off by default.
    pub debug_header: Option<String>,
    #[serde(default)]
    pub inbound: DirectionOverrides,
    #[serde(default)]
    pub outbound: DirectionOverrides,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TraceStateConfig {
    /// This sidecar's own tracestate key (`meshward`, `acme@meshward`); its value is the
    /// span id of this hop, and the entry moves to the front. Off by default.
    pub vendor_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaggageConfig {
    /// Keep only these keys (others are dropped and counted). Default: keep all.
    pub allow_keys: Option<Vec<String>>,
    /// Copy baggage values (percent-decoded) into request headers. The header is always
    /// overwritten or removed, so a client cannot set it directly.
    #[serde(default)]
    pub to_headers: Vec<BaggageToHeader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaggageToHeader {
    pub key: String,
    pub header: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestIdConfig {
    #[serde(default = "default_request_id_header")]
    pub header: String,
    /// Generate one when absent.
    #[serde(default = "yes")]
    pub generate: bool,
    /// Generated ids are the trace id written as a UUID (8-4-4-4-12) instead of a
    /// random UUIDv4, so logs correlate without a lookup.
    #[serde(default)]
    pub from_trace_id: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            header: default_request_id_header(),
            generate: true,
            from_trace_id: false,
        }
    }
}

fn default_request_id_header() -> String {
    "x-request-id".to_owned()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SamplingConfig {
    /// Share of new traces sampled, 0.0–1.0 (parent-based otherwise).
    #[serde(default = "one")]
    pub ratio: f64,
    /// First matching route's ratio wins over `ratio`.
    #[serde(default)]
    pub routes: Vec<RouteSampling>,
    /// A request carrying this header is sampled. Off by default.
    pub force_header: Option<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            routes: Vec::new(),
            force_header: None,
        }
    }
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteSampling {
    #[serde(rename = "match")]
    pub request_match: RequestMatchConfig,
    pub ratio: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectionOverrides {
    pub emit: Option<Vec<Format>>,
    /// Add `traceresponse` (Trace Context Level 2) to responses. Default: inbound yes,
    /// outbound no.
    pub trace_response: Option<bool>,
}

/// Per-direction behaviour after defaults and overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSettings {
    pub emit: Vec<Format>,
    pub trace_response: bool,
}

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub accept: Vec<Format>,
    pub direction: DirectionSetting,
    pub inbound: HopSettings,
    pub outbound: HopSettings,
    pub vendor_key: Option<String>,
    pub baggage_allow: Option<Vec<String>>,
    pub baggage_to_headers: Vec<(String, String)>,
    pub request_id_header: String,
    pub request_id_generate: bool,
    pub request_id_from_trace: bool,
    /// Threshold on the trace id's 56 random bits: sampled when below.
    pub sampling_threshold: u64,
    pub route_sampling: Vec<(RequestMatcher, u64)>,
    pub force_header: Option<String>,
    pub debug_header: Option<String>,
}

impl CompiledConfig {
    pub fn hop(&self, direction: Direction) -> &HopSettings {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    pub fn accepts(&self, format: Format) -> bool {
        self.accept.contains(&format)
    }
}

/// The request headers the trace context itself is written to (each is removed from
/// every request and rewritten as the emitted formats say).
const PROPAGATION_HEADERS: [&str; 9] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "baggage",
];

/// A request header this filter writes from its configuration (`requestId.header`,
/// `baggage.toHeaders[].header`): a valid name that is neither a pseudo-header nor one
/// of the trace-context headers, which it would overwrite — with a client's baggage
/// value, for `toHeaders`.
fn written_header(name: &str, path: &JsonPath) -> Result<String, ConfigError> {
    let name = validate_header_name(name, path)?;
    if name.starts_with(':') || PROPAGATION_HEADERS.contains(&name.as_str()) {
        return Err(path.error(format!(
            "{name:?} cannot be written here: pseudo-headers and the trace-context headers ({}) are not configurable",
            PROPAGATION_HEADERS.join(", ")
        )));
    }
    Ok(name)
}

pub fn parse(bytes: &[u8]) -> Result<CompiledConfig, ConfigError> {
    // An empty configuration means "all defaults".
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return parse_json::<TraceInjectConfig>(b"{}")?.compile();
    }
    parse_json::<TraceInjectConfig>(bytes)?.compile()
}

/// 56-bit threshold for a ratio (1.0 samples everything).
fn threshold(ratio: f64, path: &JsonPath) -> Result<u64, ConfigError> {
    if !(0.0..=1.0).contains(&ratio) || ratio.is_nan() {
        return Err(path.error(format!("expected a ratio from 0.0 to 1.0, got {ratio}")));
    }
    let space = (1u64 << 56) as f64;
    Ok((ratio * space).round() as u64)
}

fn formats(list: &[Format], path: &JsonPath) -> Result<Vec<Format>, ConfigError> {
    for (i, format) in list.iter().enumerate() {
        if list.iter().take(i).any(|f| f == format) {
            return Err(path.index(i).error("listed twice"));
        }
    }
    Ok(list.to_vec())
}

impl TraceInjectConfig {
    pub fn compile(&self) -> Result<CompiledConfig, ConfigError> {
        let root = JsonPath::root();
        let all = [Format::W3c, Format::B3Single, Format::B3Multi];
        let accept = formats(
            self.accept.as_deref().unwrap_or(&all),
            &root.field("accept"),
        )?;
        let emit = formats(
            self.emit.as_deref().unwrap_or(&[Format::W3c]),
            &root.field("emit"),
        )?;
        if emit.is_empty() {
            return Err(root.field("emit").error("emit at least one format"));
        }
        let hop = |overrides: &DirectionOverrides,
                   name: &str,
                   trace_response: bool|
         -> Result<HopSettings, ConfigError> {
            let emit = match &overrides.emit {
                Some(list) if list.is_empty() => {
                    return Err(root
                        .field(name)
                        .field("emit")
                        .error("emit at least one format"))
                }
                Some(list) => formats(list, &root.field(name).field("emit"))?,
                None => emit.clone(),
            };
            Ok(HopSettings {
                emit,
                trace_response: overrides.trace_response.unwrap_or(trace_response),
            })
        };
        let inbound = hop(&self.inbound, "inbound", true)?;
        let outbound = hop(&self.outbound, "outbound", false)?;
        if let Some(key) = &self.tracestate.vendor_key {
            if !crate::tracestate::is_valid_key(key) {
                return Err(root.field("tracestate").field("vendorKey").error(format!(
                    "{key:?} is not a valid tracestate key (lowercase letter first; a-z 0-9 _ - * /; or tenant@system)"
                )));
            }
        }
        let request_id_header = written_header(
            &self.request_id.header,
            &root.field("requestId").field("header"),
        )?;
        let mut baggage_to_headers: Vec<(String, String)> = Vec::new();
        for (i, mapping) in self.baggage.to_headers.iter().enumerate() {
            let at = root.field("baggage").field("toHeaders").index(i);
            if mapping.key.is_empty() {
                return Err(at.field("key").error("must not be empty"));
            }
            let header = written_header(&mapping.header, &at.field("header"))?;
            // One header, one writer: otherwise the last write silently wins.
            if header == request_id_header {
                return Err(at
                    .field("header")
                    .error(format!("{header:?} is already the requestId header")));
            }
            if let Some(other) = baggage_to_headers.iter().position(|(_, h)| *h == header) {
                return Err(at.field("header").error(format!(
                    "{header:?} is already written by baggage.toHeaders[{other}]"
                )));
            }
            baggage_to_headers.push((mapping.key.clone(), header));
        }
        let sampling = root.field("sampling");
        let route_sampling = self
            .sampling
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let at = sampling.field("routes").index(i);
                Ok((
                    route.request_match.compile(&at.field("match"))?,
                    threshold(route.ratio, &at.field("ratio"))?,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let optional_header =
            |name: &Option<String>, path: JsonPath| -> Result<Option<String>, ConfigError> {
                name.as_ref()
                    .map(|name| validate_header_name(name, &path))
                    .transpose()
            };
        Ok(CompiledConfig {
            accept,
            direction: self.direction,
            inbound,
            outbound,
            vendor_key: self.tracestate.vendor_key.clone(),
            baggage_allow: self.baggage.allow_keys.clone(),
            baggage_to_headers,
            request_id_header,
            request_id_generate: self.request_id.generate,
            request_id_from_trace: self.request_id.from_trace_id,
            sampling_threshold: threshold(self.sampling.ratio, &sampling.field("ratio"))?,
            route_sampling,
            force_header: optional_header(
                &self.sampling.force_header,
                sampling.field("forceHeader"),
            )?,
            debug_header: optional_header(&self.debug_header, root.field("debugHeader"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn empty_config_means_defaults() {
        let config = parse(b"").unwrap();
        assert_eq!(
            config.accept,
            [Format::W3c, Format::B3Single, Format::B3Multi]
        );
        assert_eq!(
            config.inbound,
            HopSettings {
                emit: vec![Format::W3c],
                trace_response: true
            }
        );
        assert_eq!(
            config.outbound,
            HopSettings {
                emit: vec![Format::W3c],
                trace_response: false
            }
        );
        assert_eq!(config.request_id_header, "x-request-id");
        assert_eq!(config.sampling_threshold, 1u64 << 56);
        assert!(config.vendor_key.is_none() && config.force_header.is_none());
    }

    #[test]
    fn overrides_and_options_compile() {
        let config = parse(
            br#"{"emit":["w3c","b3Single"],"outbound":{"emit":["b3Multi"],"traceResponse":true},
                "tracestate":{"vendorKey":"acme@meshward"},"baggage":{"allowKeys":["tenant"],"toHeaders":[{"key":"tenant","header":"X-Tenant"}]},
                "requestId":{"header":"x-correlation-id","fromTraceId":true},"direction":"outbound",
                "sampling":{"ratio":0.25,"forceHeader":"x-force-trace","routes":[{"match":{"path":{"prefix":"/health"}},"ratio":0}]},
                "debugHeader":"x-trace-id"}"#,
        )
        .unwrap();
        assert_eq!(config.inbound.emit, [Format::W3c, Format::B3Single]);
        assert_eq!(
            config.outbound,
            HopSettings {
                emit: vec![Format::B3Multi],
                trace_response: true
            }
        );
        assert_eq!(
            config.baggage_to_headers,
            [("tenant".to_string(), "x-tenant".to_string())]
        );
        assert_eq!(config.sampling_threshold, 1u64 << 54);
        assert_eq!(config.route_sampling.len(), 1);
        assert_eq!(config.route_sampling[0].1, 0);
        assert_eq!(config.direction, DirectionSetting::Outbound);
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases = [
            (r#"{"emit":[]}"#, "emit"),
            (r#"{"emit":["w3c","w3c"]}"#, "emit[1]"),
            (r#"{"emit":["zipkin"]}"#, "emit[0]"),
            (r#"{"sampling":{"ratio":1.5}}"#, "sampling.ratio"),
            (
                r#"{"sampling":{"routes":[{"match":{},"ratio":-1}]}}"#,
                "sampling.routes[0].ratio",
            ),
            (
                r#"{"tracestate":{"vendorKey":"Meshward"}}"#,
                "tracestate.vendorKey",
            ),
            (
                r#"{"baggage":{"toHeaders":[{"key":"k","header":"bad header"}]}}"#,
                "baggage.toHeaders[0].header",
            ),
            (r#"{"requestId":{"header":""}}"#, "requestId.header"),
            // Found with the `config` fuzz target's properties (each request header set
            // once): these made the filter write a header twice, the last write winning
            // over the trace context or over another mapping.
            (
                r#"{"requestId":{"header":"traceparent"}}"#,
                "requestId.header",
            ),
            (r#"{"requestId":{"header":":path"}}"#, "requestId.header"),
            (
                r#"{"baggage":{"toHeaders":[{"key":"tenant","header":"B3"}]}}"#,
                "baggage.toHeaders[0].header",
            ),
            (
                r#"{"baggage":{"toHeaders":[{"key":"a","header":":authority"}]}}"#,
                "baggage.toHeaders[0].header",
            ),
            (
                r#"{"baggage":{"toHeaders":[{"key":"a","header":"x-t"},{"key":"b","header":"X-T"}]}}"#,
                "baggage.toHeaders[1].header",
            ),
            (
                r#"{"baggage":{"toHeaders":[{"key":"a","header":"x-request-id"}]}}"#,
                "baggage.toHeaders[0].header",
            ),
            (r#"{"outbound":{"emit":[]}}"#, "outbound.emit"),
            (r#"{"sampling":{"rate":1}}"#, "sampling.rate"),
            (r#"{"direction":"sideways"}"#, "direction"),
        ];
        for (json, path) in cases {
            let err = parse(json.as_bytes()).expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }
}
