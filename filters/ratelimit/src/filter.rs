//! proxy-wasm adapter: reads the configuration and request head from Envoy, calls the
//! core ([`crate::limiter`], [`crate::headers`]) and acts on its decision. No business
//! logic lives here.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use crate::config::{self, CompiledConfig, GlobalConfig};
use crate::global::{self, answer, messages::RateLimitResponse, request::Planned};
use crate::headers;
use crate::limiter::{self, Decision, Outcome};
use meshward_filter_common::clock::Clock;
use meshward_filter_common::host::clock::HostClock;
use meshward_filter_common::host::flow::{self, Stream};
use meshward_filter_common::host::grpc;
use meshward_filter_common::host::log;
use meshward_filter_common::host::metrics::Counter;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::request::read_request_head_with;
use meshward_filter_common::host::shared_data::HostSharedData;
use meshward_filter_common::problem;
use prost::Message;

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

/// Global mode: the calls to the rate-limit service and how they ended.
struct RlsMetrics {
    calls: Counter,
    over_limit: Counter,
    errors: Counter,
    fallbacks: Counter,
}

impl RlsMetrics {
    fn define() -> Self {
        let name = |what: &str| format!("meshward.ratelimit.rls.{what}");
        Self {
            calls: Counter::define(&name("calls")),
            over_limit: Counter::define(&name("over_limit")),
            errors: Counter::define(&name("errors")),
            fallbacks: Counter::define(&name("fallbacks")),
        }
    }
}

/// A configuration with its metrics, shared by the root and its HTTP contexts.
struct Runtime {
    config: CompiledConfig,
    metrics: Vec<RuleMetrics>,
    rls: Option<RlsMetrics>,
}

#[derive(Default)]
pub struct RateLimitRoot {
    runtime: Option<Rc<Runtime>>,
    sweep_cursor: u32,
}

impl Context for RateLimitRoot {}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure(&plugin::configuration_bytes())
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK traps on None. Without a runtime requests pass through.
        Some(Box::new(RateLimitHttp {
            runtime: self.runtime.clone(),
            context_id,
            allowed_fields: Vec::new(),
            pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl RateLimitRoot {
    /// Applies a configuration (the plugin's, or the bundle's `ratelimit` section);
    /// false when it is invalid (logged).
    pub fn configure(&mut self, bytes: &[u8]) -> bool {
        let config = match config::parse(bytes) {
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
        let rls = config.global.as_ref().map(|_| RlsMetrics::define());
        self.runtime = Some(Rc::new(Runtime {
            config,
            metrics,
            rls,
        }));
        flow::set_tick_period(tick);
        true
    }

    /// Sweeps a slice of every rule's key table.
    pub fn tick(&mut self) {
        let Some(runtime) = &self.runtime else { return };
        let now = HostClock.now_nanos();
        for rule in &runtime.config.rules {
            // Global mode keeps local state only for fallback limits.
            let local = if runtime.config.global.is_some() {
                rule.fallback.as_ref()
            } else {
                Some(&rule.limit)
            };
            let Some(limit) = local else { continue };
            if let Err(err) = rule.table.sweep(
                &HostSharedData,
                limit,
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
}

struct RateLimitHttp {
    runtime: Option<Rc<Runtime>>,
    context_id: u32,
    /// Fields to add to the upstream's response (`responseHeaders.onAllowed`).
    allowed_fields: Vec<(String, String)>,
    /// Global mode: the call in flight and the rules it decides.
    pending: Option<(u32, Vec<Planned>)>,
}

impl Context for RateLimitHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(runtime) = self.runtime.clone() else {
            flow::resume(self.context_id, Stream::Request);
            return;
        };
        // Only the call this request is waiting for; anything else leaves it waiting.
        if self.pending.as_ref().map(|(token, _)| *token) != Some(token_id) {
            return;
        }
        let Some((_, planned)) = self.pending.take() else {
            return;
        };
        let config = &runtime.config;
        let answer = if status_code == grpc::OK {
            RateLimitResponse::decode(grpc::response(response_size).as_slice())
                .map_err(|err| format!("undecodable rate-limit answer: {err}"))
        } else {
            Err(format!(
                "rate-limit service failed: {}",
                grpc::status_message()
            ))
        };
        let (decision, added) = match answer {
            Ok(response) => {
                if let Some(rls) = &runtime.rls {
                    if response.overall_code == global::messages::CODE_OVER_LIMIT {
                        rls.over_limit.increment();
                    }
                }
                (
                    answer::decide(config, &planned, &response),
                    answer::added_headers(&response),
                )
            }
            Err(error) => (self.fallback(&runtime, &planned, &error), Vec::new()),
        };
        if self.finish(&runtime, &decision, added) == Action::Continue {
            flow::resume(self.context_id, Stream::Request);
        }
    }
}

impl RateLimitHttp {
    /// The decision when the service could not answer.
    fn fallback(&self, runtime: &Runtime, planned: &[Planned], error: &str) -> Decision {
        let (decision, fell_back) = answer::on_failure(
            &runtime.config,
            planned,
            &HostSharedData,
            HostClock.now_nanos(),
            error,
        );
        if let Some(rls) = &runtime.rls {
            rls.errors.increment();
            for _ in 0..fell_back {
                rls.fallbacks.increment();
            }
        }
        decision
    }

    /// Records `decision` and answers 429 or lets the request continue.
    fn finish(
        &mut self,
        runtime: &Runtime,
        decision: &Decision,
        mut added: Vec<(String, String)>,
    ) -> Action {
        let config = &runtime.config;
        record(runtime, decision);
        if decision.is_limited(config) {
            let mut reply: Vec<(String, String)> = headers::response_fields(config, decision, true)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            reply.append(&mut added);
            reply.push(("content-type".into(), problem::CONTENT_TYPE.to_owned()));
            let body = headers::problem(config, decision).to_json();
            return plugin::send_local_reply(429, &reply, body.as_bytes());
        }
        if config.response_headers.on_allowed {
            self.allowed_fields = headers::response_fields(config, decision, false)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .chain(added)
                .collect();
        }
        Action::Continue
    }

    /// Global mode: one `ShouldRateLimit` for the request; paused until it answers.
    fn ask_service(&mut self, runtime: &Runtime, global: &GlobalConfig) -> Action {
        let config = &runtime.config;
        let request = read_request_head_with(config.needs_headers, config.needs_source_address);
        let Some((planned, call)) = global::request::plan(config, global, &request) else {
            return Action::Continue;
        };
        if let Some(rls) = &runtime.rls {
            rls.calls.increment();
        }
        match grpc::dispatch(
            &global.target,
            global::SERVICE,
            global::METHOD,
            &call.encode_to_vec(),
            Duration::from_nanos(global.timeout_nanos),
        ) {
            Ok(token) => {
                self.pending = Some((token, planned));
                Action::Pause
            }
            Err(error) => {
                let decision = self.fallback(runtime, &planned, &error);
                self.finish(runtime, &decision, Vec::new())
            }
        }
    }
}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        let config = &runtime.config;
        if let Some(global) = &config.global {
            return self.ask_service(&runtime, global);
        }
        let request = read_request_head_with(config.needs_headers, config.needs_source_address);
        let decision = limiter::evaluate(config, &request, &HostSharedData, HostClock.now_nanos());
        self.finish(&runtime, &decision, Vec::new())
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
