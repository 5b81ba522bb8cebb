//! proxy-wasm adapter: reads the configuration and request head from Envoy, calls the
//! core ([`crate::limiter`], [`crate::headers`]) and acts on its decision. No business
//! logic lives here.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use crate::config::{self, CompiledConfig};
use crate::headers;
use crate::limiter::{self, Decision, Outcome};
use meshward_filter_common::clock::Clock;
use meshward_filter_common::host::clock::HostClock;
use meshward_filter_common::host::log;
use meshward_filter_common::host::metrics::Counter;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::request::read_request_head;
use meshward_filter_common::host::shared_data::HostSharedData;
use meshward_filter_common::problem;

/// Pages each rule's table sweep visits per tick.
const SWEEP_PAGES_PER_TICK: u32 = 512;

struct RuleMetrics {
    allowed: Counter,
    limited: Counter,
    shadow_limited: Counter,
    store_errors: Counter,
    evictions: Counter,
}

impl RuleMetrics {
    fn define(rule: &str) -> Self {
        let name = |what: &str| format!("meshward.ratelimit.rule.{rule}.{what}");
        Self {
            allowed: Counter::define(&name("allowed")),
            limited: Counter::define(&name("limited")),
            shadow_limited: Counter::define(&name("shadow_limited")),
            store_errors: Counter::define(&name("store_errors")),
            evictions: Counter::define(&name("evictions")),
        }
    }
}

/// A configuration with its metrics, shared by the root and its HTTP contexts.
struct Runtime {
    config: CompiledConfig,
    metrics: Vec<RuleMetrics>,
}

#[derive(Default)]
pub struct RateLimitRoot {
    runtime: Option<Rc<Runtime>>,
    sweep_cursor: u32,
}

impl Context for RateLimitRoot {}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = plugin::configuration_bytes();
        let config = match config::parse(&bytes) {
            Ok(config) => config,
            Err(err) => {
                log::error(&format!("meshward ratelimit: invalid configuration: {err}"));
                return false;
            }
        };
        for rule in &config.rules {
            if let Err(err) = rule.table.prepare(&HostSharedData) {
                log::error(&format!(
                    "meshward ratelimit: rule {:?}: cannot create its key table: {err}",
                    rule.name
                ));
                return false;
            }
        }
        let metrics = config
            .rules
            .iter()
            .map(|rule| RuleMetrics::define(&rule.name))
            .collect();
        let tick = Duration::from_nanos(config.sweep_interval_nanos);
        log::info(&format!(
            "meshward ratelimit: configured {} rule(s)",
            config.rules.len()
        ));
        self.runtime = Some(Rc::new(Runtime { config, metrics }));
        let _ = proxy_wasm::hostcalls::set_tick_period(tick);
        true
    }

    fn on_tick(&mut self) {
        let Some(runtime) = &self.runtime else { return };
        let now = HostClock.now_nanos();
        for rule in &runtime.config.rules {
            if let Err(err) = rule.table.sweep(
                &HostSharedData,
                &rule.limit,
                now,
                self.sweep_cursor,
                SWEEP_PAGES_PER_TICK,
            ) {
                log::warn(&format!(
                    "meshward ratelimit: rule {:?}: sweep failed: {err}",
                    rule.name
                ));
            }
        }
        self.sweep_cursor = self.sweep_cursor.wrapping_add(SWEEP_PAGES_PER_TICK);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK traps on None. Without a runtime requests pass through.
        Some(Box::new(RateLimitHttp {
            runtime: self.runtime.clone(),
            allowed_fields: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RateLimitHttp {
    runtime: Option<Rc<Runtime>>,
    /// Fields to add to the upstream's response (`responseHeaders.onAllowed`).
    allowed_fields: Vec<(&'static str, String)>,
}

impl Context for RateLimitHttp {}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        let config = &runtime.config;
        let request = read_request_head(config.needs_source_address);
        let decision = limiter::evaluate(config, &request, &HostSharedData, HostClock.now_nanos());
        record(&runtime, &decision);
        if decision.is_limited(config) {
            let mut reply = headers::response_fields(config, &decision, true);
            reply.push(("content-type", problem::CONTENT_TYPE.to_owned()));
            let body = headers::problem(config, &decision).to_json();
            return plugin::send_local_reply(429, &reply, body.as_bytes());
        }
        if config.response_headers.on_allowed {
            self.allowed_fields = headers::response_fields(config, &decision, false);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        plugin::set_headers(MapType::HttpResponseHeaders, self.allowed_fields.drain(..));
        Action::Continue
    }
}

/// Metrics and one debug line per evaluated rule; store failures at warn.
fn record(runtime: &Runtime, decision: &Decision) {
    let debug = log::debug_enabled();
    for evaluation in &decision.evaluations {
        let (Some(rule), Some(metrics)) = (
            runtime.config.rules.get(evaluation.rule),
            runtime.metrics.get(evaluation.rule),
        ) else {
            continue;
        };
        if evaluation.evicted {
            metrics.evictions.increment();
        }
        match &evaluation.outcome {
            Outcome::Allowed(_) => metrics.allowed.increment(),
            Outcome::Limited(_) if rule.shadow => metrics.shadow_limited.increment(),
            Outcome::Limited(_) => metrics.limited.increment(),
            Outcome::StoreFailed { error, allowed } => {
                metrics.store_errors.increment();
                let action = if *allowed {
                    "allowing (failureMode: allow)"
                } else {
                    "denying (failureMode: deny)"
                };
                log::warn(&format!(
                    "meshward ratelimit: rule {:?}: {error}; {action}",
                    rule.name
                ));
            }
        }
        if debug {
            log::debug(&format!(
                "meshward ratelimit: rule={} key={:?} shadow={} outcome={:?}",
                rule.name, evaluation.key, rule.shadow, evaluation.outcome
            ));
        }
    }
}
