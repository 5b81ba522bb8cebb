//! proxy-wasm adapter: reads the request head and the listener direction from Envoy,
//! runs [`crate::propagate::process`], applies the header edits, publishes the ids as
//! filter state for access logs, and counts what happened.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use crate::config::{self, CompiledConfig, Direction, DirectionSetting};
use crate::propagate::{self, Outcome, Source};
use meshward_filter_common::bytes::read_array;
use meshward_filter_common::host::log;
use meshward_filter_common::host::metrics::Counter;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::random::HostRandom;
use meshward_filter_common::host::request::read_request_head;

/// Filter-state keys; Envoy stores them as `wasm.<key>`, so an access log prints them
/// with `%FILTER_STATE(wasm.meshward_trace_id:PLAIN)%`.
pub const TRACE_ID_STATE: &str = "meshward_trace_id";
pub const SPAN_ID_STATE: &str = "meshward_span_id";

const RESTART_REASONS: [&str; 3] = ["invalid_traceparent", "duplicate_traceparent", "invalid_b3"];

struct Metrics {
    propagated: Counter,
    converted_from_b3: Counter,
    generated: Counter,
    restarted: Vec<(&'static str, Counter)>,
    tracestate_dropped: Counter,
    baggage_dropped: Counter,
}

impl Metrics {
    fn define() -> Self {
        let name = |what: &str| format!("meshward.trace_inject.{what}");
        Self {
            propagated: Counter::define(&name("propagated")),
            converted_from_b3: Counter::define(&name("converted_from_b3")),
            generated: Counter::define(&name("generated")),
            restarted: RESTART_REASONS
                .iter()
                .map(|reason| {
                    (
                        *reason,
                        Counter::define(&name(&format!("restarted.{reason}"))),
                    )
                })
                .collect(),
            tracestate_dropped: Counter::define(&name("tracestate_dropped")),
            baggage_dropped: Counter::define(&name("baggage_dropped")),
        }
    }

    /// `generated` counts traces started because nothing arrived; a trace started
    /// because what arrived was unusable counts under `restarted.<reason>` instead.
    fn record(&self, outcome: &Outcome) {
        match (outcome.source, &outcome.restart) {
            (Source::W3c, _) => self.propagated.increment(),
            (Source::B3, _) => self.converted_from_b3.increment(),
            (Source::New, None) => self.generated.increment(),
            (Source::New, Some(restart)) => {
                let reason = restart.reason();
                if let Some((_, counter)) = self.restarted.iter().find(|(r, _)| *r == reason) {
                    counter.increment();
                }
            }
        }
        if outcome.tracestate_dropped {
            self.tracestate_dropped.increment();
        }
        self.baggage_dropped
            .add(u64::try_from(outcome.baggage_dropped).unwrap_or(u64::MAX));
    }
}

struct Runtime {
    config: CompiledConfig,
    metrics: Metrics,
}

#[derive(Default)]
pub struct TraceInjectRoot {
    runtime: Option<Rc<Runtime>>,
}

impl Context for TraceInjectRoot {}

impl RootContext for TraceInjectRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure(&plugin::configuration_bytes())
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TraceInjectHttp {
            runtime: self.runtime.clone(),
            response: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl TraceInjectRoot {
    /// Applies a configuration (the plugin's, or the bundle's `traceInject` section);
    /// false when it is invalid (logged).
    pub fn configure(&mut self, bytes: &[u8]) -> bool {
        match config::parse(bytes) {
            Ok(config) => {
                self.runtime = Some(Rc::new(Runtime {
                    config,
                    metrics: Metrics::define(),
                }));
                true
            }
            Err(err) => {
                log::error(&format!(
                    "meshward trace-inject: invalid configuration: {err}"
                ));
                false
            }
        }
    }
}

struct TraceInjectHttp {
    runtime: Option<Rc<Runtime>>,
    response: Vec<(String, String)>,
}

impl Context for TraceInjectHttp {}

/// The listener's `traffic_direction` as an int64 property (1 inbound, 2 outbound).
/// `listener_direction` first: Envoy 1.40 still answers it, for about 0.3 µs, where
/// `xds.listener_direction` costs about 1 µs (docs/bench/host-calls.md); the `xds.`
/// form is the fallback for an Envoy that dropped the old name.
fn listener_direction() -> Option<Direction> {
    let bytes = [
        vec!["listener_direction"],
        vec!["xds", "listener_direction"],
    ]
    .into_iter()
    .find_map(|path| proxy_wasm::hostcalls::get_property(path).ok().flatten())?;
    match i64::from_le_bytes(read_array(&bytes, 0)) {
        1 => Some(Direction::Inbound),
        2 => Some(Direction::Outbound),
        _ => None,
    }
}

impl HttpContext for TraceInjectHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        let config = &runtime.config;
        let direction = match config.direction {
            DirectionSetting::Inbound => Direction::Inbound,
            DirectionSetting::Outbound => Direction::Outbound,
            DirectionSetting::Auto => listener_direction().unwrap_or(Direction::Inbound),
        };
        let request = read_request_head(false);
        let outcome = propagate::process(config, direction, &request, &mut HostRandom);
        plugin::remove_headers(MapType::HttpRequestHeaders, &outcome.remove);
        plugin::set_headers(
            MapType::HttpRequestHeaders,
            outcome.set.iter().map(|(n, v)| (n, v)),
        );
        let _ = proxy_wasm::hostcalls::set_property(
            vec![TRACE_ID_STATE],
            Some(outcome.trace_id.hex().as_bytes()),
        );
        let _ = proxy_wasm::hostcalls::set_property(
            vec![SPAN_ID_STATE],
            Some(outcome.span_id.hex().as_bytes()),
        );
        runtime.metrics.record(&outcome);
        if log::debug_enabled() {
            log::debug(&format!(
                "meshward trace-inject: {direction:?} source={:?} restart={:?} traceparent={}",
                outcome.source,
                outcome.restart,
                outcome.traceparent()
            ));
        }
        self.response = outcome.response;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let keep_app_traceresponse = |ours: &str| {
            proxy_wasm::hostcalls::get_map_value(MapType::HttpResponseHeaders, "traceresponse")
                .ok()
                .flatten()
                .is_some_and(|upstream| propagate::keep_upstream_traceresponse(ours, &upstream))
        };
        let headers = self
            .response
            .drain(..)
            .filter(|(name, value)| name != "traceresponse" || !keep_app_traceresponse(value));
        plugin::set_headers(MapType::HttpResponseHeaders, headers);
        Action::Continue
    }
}
