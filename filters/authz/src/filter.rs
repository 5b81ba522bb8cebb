//! proxy-wasm adapter: strips the headers this filter owns, asks the core
//! ([`crate::authorizer`]) for a decision and applies it. It also owns JWKS fetching
//! (`dispatch_http_call`): on tick for the first load and refreshes, and on demand when
//! a request finds no keys or an unknown `kid`. Such a request waits (paused) for the
//! fetch and is finished by the root context when the response arrives, acting as the
//! request through `set_effective_context`; the root's tick finishes any wait that
//! outlives the fetch timeout, so nothing hangs.
//!
//! Every fetch is dispatched by the root context, never by a request's context: Envoy
//! cancels a context's outstanding calls when that context is destroyed, so a fetch
//! started by a request whose client then went away would never answer, stranding the
//! other requests waiting on it (and using up the unknown-`kid` re-fetch allowance). A
//! request that needs a fetch records it and shortens the root's tick period to
//! [`KICK`]; the root dispatches it on that tick and restores [`TICK`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use crate::authorizer::{
    AuthStep, Authenticated, Authentication, Authorizer, Decision, DenyReason, KeyLookup,
    KeysNeeded, Verdict,
};
use crate::cache::VerifiedCache;
use crate::config::{self, KeySource};
use crate::jwks::{self, KeySet};
use crate::keys::{NeedKeys, RemoteKeys};
use crate::outputs::Identity;
use meshward_filter_common::clock::{Clock, NANOS_PER_SECOND};
use meshward_filter_common::host::clock::HostClock;
use meshward_filter_common::host::flow::{self, Stream};
use meshward_filter_common::host::log;
use meshward_filter_common::host::metrics::Counter;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::request::read_request_head;
use meshward_filter_common::request::RequestHead;

const TICK: Duration = Duration::from_millis(500);
/// The tick period a request sets to have the root dispatch its fetch at once.
const KICK: Duration = Duration::from_millis(1);
/// A JWKS document larger than this is refused (a misrouted fetch can return anything).
const MAX_JWKS_BYTES: usize = 512 * 1024;

struct ProviderMetrics {
    verified: Counter,
    cache_hits: Counter,
    jwks_fetch_ok: Counter,
    jwks_fetch_failed: Counter,
    rejected: Vec<(DenyReason, Counter)>,
}

struct RuleMetrics {
    allowed: Counter,
    denied: Counter,
    shadow_allowed: Counter,
    shadow_denied: Counter,
}

struct Metrics {
    allowed: Counter,
    denied: Vec<(DenyReason, Counter)>,
    failed_open: Counter,
    default_allowed: Counter,
    default_denied: Counter,
    providers: Vec<ProviderMetrics>,
    rules: Vec<RuleMetrics>,
}

fn reason_counters(prefix: &str) -> Vec<(DenyReason, Counter)> {
    DenyReason::ALL
        .iter()
        .map(|reason| {
            (
                *reason,
                Counter::define(&format!("{prefix}.{}", reason.as_str())),
            )
        })
        .collect()
}

fn count(counters: &[(DenyReason, Counter)], reason: DenyReason) {
    if let Some((_, counter)) = counters.iter().find(|(r, _)| *r == reason) {
        counter.increment();
    }
}

impl Metrics {
    fn define(authorizer: &Authorizer) -> Self {
        let config = &authorizer.config;
        Self {
            allowed: Counter::define("meshward.authz.allowed"),
            denied: reason_counters("meshward.authz.denied"),
            failed_open: Counter::define("meshward.authz.failed_open"),
            default_allowed: Counter::define("meshward.authz.default_action.allowed"),
            default_denied: Counter::define("meshward.authz.default_action.denied"),
            providers: config
                .providers
                .iter()
                .map(|p| {
                    let name = |what: &str| format!("meshward.authz.provider.{}.{what}", p.name);
                    ProviderMetrics {
                        verified: Counter::define(&name("verified")),
                        cache_hits: Counter::define(&name("cache_hits")),
                        jwks_fetch_ok: Counter::define(&name("jwks_fetch_ok")),
                        jwks_fetch_failed: Counter::define(&name("jwks_fetch_failed")),
                        rejected: reason_counters(&name("rejected")),
                    }
                })
                .collect(),
            rules: config
                .rules
                .iter()
                .map(|r| {
                    let name = |what: &str| format!("meshward.authz.rule.{}.{what}", r.name);
                    RuleMetrics {
                        allowed: Counter::define(&name("allowed")),
                        denied: Counter::define(&name("denied")),
                        shadow_allowed: Counter::define(&name("shadow_allowed")),
                        shadow_denied: Counter::define(&name("shadow_denied")),
                    }
                })
                .collect(),
        }
    }
}

/// A request paused until its provider's keys arrive.
struct Waiter {
    context_id: u32,
    provider: usize,
    request: RequestHead,
    deadline: u64,
}

/// Everything one configuration needs, shared by the root and its HTTP contexts
/// (one VM = one Envoy worker thread, so `RefCell` is enough). No borrow is held
/// across a host call: a host call can run another context's callbacks.
struct Runtime {
    authorizer: Authorizer,
    metrics: Metrics,
    /// Per provider; `None` for inline key sets.
    remote: Vec<Option<RefCell<RemoteKeys>>>,
    cache: RefCell<VerifiedCache<Rc<Identity>>>,
    waiters: RefCell<Vec<Waiter>>,
    /// JWKS fetch tokens → (provider, dispatched at). Entries whose callback never
    /// came are dropped on tick after the timeout.
    callouts: RefCell<HashMap<u32, (usize, u64)>>,
    /// Fetches requests asked for (provider, for an unknown `kid`), dispatched by the
    /// root on its next tick.
    requested: RefCell<Vec<(usize, bool)>>,
}

impl KeyLookup for Runtime {
    fn remote_keys(&self, provider: usize) -> Option<Rc<KeySet>> {
        self.remote
            .get(provider)?
            .as_ref()
            .and_then(|state| state.borrow().keys())
    }
}

fn now_nanos() -> u64 {
    HostClock.now_nanos()
}

impl Runtime {
    fn new(authorizer: Authorizer) -> Self {
        let remote = authorizer
            .config
            .providers
            .iter()
            .map(|p| match &p.keys {
                KeySource::Remote(remote) => Some(RefCell::new(RemoteKeys::new(remote.clone()))),
                KeySource::Inline(_) => None,
            })
            .collect();
        let cache = VerifiedCache::new(authorizer.config.cache_entries);
        Self {
            metrics: Metrics::define(&authorizer),
            authorizer,
            remote,
            cache: RefCell::new(cache),
            waiters: RefCell::new(Vec::new()),
            callouts: RefCell::new(HashMap::new()),
            requested: RefCell::new(Vec::new()),
        }
    }

    fn has_remote_keys(&self) -> bool {
        self.remote.iter().any(Option::is_some)
    }

    fn authenticate(&self, request: &RequestHead, may_need_keys: bool) -> AuthStep {
        let now_secs = now_nanos() / NANOS_PER_SECOND;
        let mut cache = self.cache.borrow_mut();
        self.authorizer
            .authenticate(request, self, &mut cache, now_secs, may_need_keys)
    }

    /// Starts a JWKS fetch from the calling context (always the root: see the module
    /// documentation); `false` when it could not start.
    fn start_fetch(&self, context: &dyn Context, provider: usize, for_unknown_kid: bool) -> bool {
        let Some(Some(state)) = self.remote.get(provider) else {
            return false;
        };
        let policy = state.borrow().policy().clone();
        let headers = vec![
            (":method", "GET"),
            (":path", policy.path.as_str()),
            (":authority", policy.authority.as_str()),
            ("accept", "application/json"),
        ];
        let now = now_nanos();
        let timeout = Duration::from_nanos(policy.timeout_nanos);
        match context.dispatch_http_call(&policy.cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                state.borrow_mut().begin_fetch(now, for_unknown_kid);
                self.callouts.borrow_mut().insert(token, (provider, now));
                true
            }
            Err(status) => {
                state.borrow_mut().begin_fetch(now, for_unknown_kid);
                state.borrow_mut().abort_fetch(now);
                self.fetch_failed(provider, &format!(
                    "cannot call cluster {:?} ({status:?}); is it defined in the Envoy configuration?",
                    policy.cluster
                ));
                false
            }
        }
    }

    /// Drops fetches whose callback never came (timeout plus a second), so a lost one
    /// never blocks a later request-triggered fetch for its provider.
    fn forget_lost_callouts(&self, now: u64) {
        let remote = &self.remote;
        self.callouts.borrow_mut().retain(|_, (provider, started)| {
            let timeout = match remote.get(*provider) {
                Some(Some(state)) => state.borrow().policy().timeout_nanos,
                _ => 0,
            };
            now < started
                .saturating_add(timeout)
                .saturating_add(NANOS_PER_SECOND)
        });
    }

    fn fetch_failed(&self, provider: usize, why: &str) {
        if let Some(metrics) = self.metrics.providers.get(provider) {
            metrics.jwks_fetch_failed.increment();
        }
        let name = self.provider_name(provider);
        log::warn(&format!(
            "meshward authz: JWKS fetch for provider {name} failed: {why}; keeping the last good key set, if any"
        ));
    }

    fn provider_name(&self, provider: usize) -> &str {
        self.authorizer
            .config
            .providers
            .get(provider)
            .map_or("?", |p| p.name.as_str())
    }

    /// A request needs a fetch for `provider`: mark it under way now (later requests
    /// wait for it; the unknown-`kid` allowance is used) and have the root dispatch it
    /// on a tick [`KICK`] from now.
    fn request_fetch(&self, provider: usize, for_unknown_kid: bool) {
        let Some(Some(state)) = self.remote.get(provider) else {
            return;
        };
        state.borrow_mut().begin_fetch(now_nanos(), for_unknown_kid);
        self.requested
            .borrow_mut()
            .push((provider, for_unknown_kid));
        flow::set_tick_period(KICK);
    }

    /// Root only: dispatches the fetches requests asked for; returns the providers
    /// whose fetch could not start (their waiters are to be answered now).
    fn dispatch_requested(&self, root: &dyn Context) -> Vec<usize> {
        let requested = std::mem::take(&mut *self.requested.borrow_mut());
        if requested.is_empty() {
            return Vec::new();
        }
        flow::set_tick_period(TICK);
        let mut failed = Vec::new();
        for (provider, for_unknown_kid) in requested {
            let dispatched = self.callouts.borrow().values().any(|(p, _)| *p == provider);
            if !dispatched && !self.start_fetch(root, provider, for_unknown_kid) {
                failed.push(provider);
            }
        }
        failed
    }

    /// A JWKS response arrived (at the root): record it and finish the waiters.
    fn on_fetch_response(&self, token: u32, body_size: usize) {
        let Some((provider, _)) = self.callouts.borrow_mut().remove(&token) else {
            return;
        };
        let status =
            proxy_wasm::hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten();
        let result = match status.as_deref() {
            Some("200") if body_size > MAX_JWKS_BYTES => Err(format!(
                "the document is larger than {MAX_JWKS_BYTES} bytes"
            )),
            Some("200") => {
                let body = proxy_wasm::hostcalls::get_buffer(
                    proxy_wasm::types::BufferType::HttpCallResponseBody,
                    0,
                    body_size,
                )
                .ok()
                .flatten()
                .unwrap_or_default();
                jwks::parse(&body, jwks::Origin::Remote)
            }
            Some(other) => Err(format!("the endpoint answered HTTP {other}")),
            None => Err("no response (timeout, connection failure or reset)".into()),
        };
        let now = now_nanos();
        let name = self.provider_name(provider).to_owned();
        let result = result.map(|parsed| {
            for warning in &parsed.warnings {
                log::warn(&format!("meshward authz: provider {name}: JWKS {warning}"));
            }
            parsed.set
        });
        let recorded = match self.remote.get(provider) {
            Some(Some(state)) => state.borrow_mut().complete_fetch(now, result),
            _ => return,
        };
        match recorded {
            Ok(revoked) => {
                if revoked {
                    // A removed key revokes what it signed, cached or not.
                    self.cache.borrow_mut().clear();
                    log::info(&format!(
                        "meshward authz: provider {name}: a key was removed from the JWKS; verified-token cache cleared"
                    ));
                }
                if let Some(metrics) = self.metrics.providers.get(provider) {
                    metrics.jwks_fetch_ok.increment();
                }
                log::debug(&format!("meshward authz: provider {name}: JWKS loaded"));
            }
            Err(err) => self.fetch_failed(provider, &err),
        }
        self.finish_waiters(|waiter| waiter.provider == provider);
    }

    /// Finishes (as each request) the waiters `select` picks, without further fetches.
    /// Each one becomes the effective context, which stays so until the callback ends:
    /// dispatch no fetch after calling this (it would belong to a request and be
    /// cancelled with it).
    fn finish_waiters(&self, select: impl Fn(&Waiter) -> bool) {
        let chosen: Vec<Waiter> = {
            let mut waiters = self.waiters.borrow_mut();
            let (chosen, rest) = std::mem::take(&mut *waiters).into_iter().partition(&select);
            *waiters = rest;
            chosen
        };
        for waiter in chosen {
            if proxy_wasm::hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue; // the request is gone
            }
            let authenticated = match self.authenticate(&waiter.request, false) {
                AuthStep::Done(authenticated) => authenticated,
                AuthStep::NeedKeys(_) => continue, // unreachable with may_need_keys = false
            };
            if self.apply(&waiter.request, &authenticated) == Action::Continue {
                flow::resume(waiter.context_id, Stream::Request);
            }
        }
    }

    /// Decides, counts and acts: identity headers and `Continue`, or a local reply.
    fn apply(&self, request: &RequestHead, authenticated: &Authenticated) -> Action {
        self.count_authentication(authenticated);
        let decision = self.authorizer.decide(request, authenticated);
        self.count_decision(&decision);
        match &decision.verdict {
            Verdict::Allow => {
                plugin::remove_headers(MapType::HttpRequestHeaders, &decision.remove_headers);
                plugin::set_headers(
                    MapType::HttpRequestHeaders,
                    decision.set_headers.iter().map(|(n, v)| (n, v)),
                );
                Action::Continue
            }
            Verdict::Deny(reply) => {
                plugin::send_local_reply(reply.status, &reply.headers, reply.body.as_bytes())
            }
        }
    }

    fn count_authentication(&self, authenticated: &Authenticated) {
        let providers = &self.metrics.providers;
        match &authenticated.outcome {
            Authentication::Verified(identity) => {
                if let Some(metrics) = providers.get(identity.provider) {
                    metrics.verified.increment();
                    if authenticated.cache_hit {
                        metrics.cache_hits.increment();
                    }
                }
            }
            Authentication::Invalid { provider, reason } => {
                if let Some(metrics) = providers.get(*provider) {
                    count(&metrics.rejected, *reason);
                }
            }
            Authentication::KeysUnavailable { provider } => {
                if let Some(metrics) = providers.get(*provider) {
                    count(&metrics.rejected, DenyReason::KeysUnavailable);
                }
            }
            Authentication::Missing => {}
        }
    }

    fn count_decision(&self, decision: &Decision) {
        let metrics = &self.metrics;
        let rules = &self.authorizer.config.rules;
        for (index, would_allow) in &decision.shadow {
            if let Some(rule) = metrics.rules.get(*index) {
                if *would_allow {
                    rule.shadow_allowed.increment();
                } else {
                    rule.shadow_denied.increment();
                }
            }
            if log::debug_enabled() {
                let name = rules.get(*index).map_or("?", |r| r.name.as_str());
                let verdict = if *would_allow { "allow" } else { "deny" };
                log::debug(&format!(
                    "meshward authz: shadow rule {name} would {verdict}"
                ));
            }
        }
        let allowed = decision.verdict == Verdict::Allow;
        match decision.rule.and_then(|i| metrics.rules.get(i)) {
            Some(rule) if allowed => rule.allowed.increment(),
            Some(rule) => rule.denied.increment(),
            None if decision.reason == Some(DenyReason::Rule) => metrics.default_denied.increment(),
            None if allowed && !decision.failed_open => metrics.default_allowed.increment(),
            None => {}
        }
        if decision.failed_open {
            metrics.failed_open.increment();
        }
        match decision.reason {
            Some(reason) => count(&metrics.denied, reason),
            None => metrics.allowed.increment(),
        }
        if log::debug_enabled() {
            let rule = decision
                .rule
                .and_then(|i| rules.get(i))
                .map_or("(default)", |r| r.name.as_str());
            let reason = decision.reason.map_or("-", DenyReason::as_str);
            log::debug(&format!(
                "meshward authz: {} by {rule} (reason {reason})",
                if allowed { "allowed" } else { "denied" }
            ));
        }
    }
}

#[derive(Default)]
pub struct AuthzRoot {
    runtime: Option<Rc<Runtime>>,
}

impl Context for AuthzRoot {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        if let Some(runtime) = &self.runtime {
            runtime.on_fetch_response(token_id, body_size);
        }
    }
}

impl RootContext for AuthzRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure(&plugin::configuration_bytes())
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AuthzHttp {
            runtime: self.runtime.clone(),
            context_id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl AuthzRoot {
    /// Applies a configuration (the plugin's, or the bundle's `authz` section); false
    /// when it is invalid (logged).
    pub fn configure(&mut self, bytes: &[u8]) -> bool {
        let config = match config::parse(bytes) {
            Ok(config) => config,
            Err(err) => {
                log::error(&format!("meshward authz: invalid configuration: {err}"));
                return false;
            }
        };
        for warning in &config.warnings {
            log::warn(&format!("meshward authz: {warning}"));
        }
        let runtime = Rc::new(Runtime::new(Authorizer::new(config)));
        if runtime.has_remote_keys() {
            flow::set_tick_period(TICK);
        }
        self.runtime = Some(runtime);
        self.tick(); // start the first JWKS loads now rather than one tick later
        true
    }

    pub fn tick(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let now = now_nanos();
        runtime.forget_lost_callouts(now);
        // Waiters to answer now are collected and answered last: see `finish_waiters`.
        let mut answer_now = runtime.dispatch_requested(self);
        for (provider, state) in runtime.remote.iter().enumerate() {
            let Some(state) = state else { continue };
            let due = state.borrow().fetch_due_on_tick(now);
            let stranded = !state.borrow().in_flight(now)
                && runtime
                    .waiters
                    .borrow()
                    .iter()
                    .any(|w| w.provider == provider);
            if due {
                runtime.start_fetch(self, provider, false);
            } else if stranded {
                // Waiters whose fetch was lost: fetch again if allowed, else answer them.
                let retry = state.borrow().on_missing_keys(now) == NeedKeys::Fetch;
                if !(retry && runtime.start_fetch(self, provider, false)) {
                    answer_now.push(provider);
                }
            }
        }
        runtime.finish_waiters(|w| answer_now.contains(&w.provider) || now >= w.deadline);
    }
}

struct AuthzHttp {
    runtime: Option<Rc<Runtime>>,
    context_id: u32,
}

/// No HTTP call is ever dispatched from a request's context.
impl Context for AuthzHttp {}

impl HttpContext for AuthzHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            // No valid configuration ever arrived: Envoy refuses to start such a
            // filter, so this is unreachable; fail closed anyway.
            let reply = crate::reply::keys_unavailable(1);
            return plugin::send_local_reply(reply.status, &reply.headers, reply.body.as_bytes());
        };
        // Whatever happens next, a client never supplies the headers this filter sets:
        // removed from the request, and from the copy rules match on.
        // Only those present cost a host call (usually none).
        let owned = &runtime.authorizer.config.owned_headers;
        let head = read_request_head(false);
        let present = owned.iter().filter(|name| head.header(name).is_some());
        plugin::remove_headers(MapType::HttpRequestHeaders, present);
        let request = head.without_headers(owned);
        let authenticated = match runtime.authenticate(&request, true) {
            AuthStep::Done(authenticated) => authenticated,
            AuthStep::NeedKeys(needed) => match self.wait_for_keys(&runtime, needed, request) {
                Ok(()) => return Action::Pause,
                Err(request) => match runtime.authenticate(&request, false) {
                    AuthStep::Done(authenticated) => {
                        return runtime.apply(&request, &authenticated);
                    }
                    AuthStep::NeedKeys(_) => return Action::Continue, // unreachable
                },
            },
        };
        runtime.apply(&request, &authenticated)
    }

    fn on_log(&mut self) {
        // A request that ended while waiting must not be finished later.
        if let Some(runtime) = &self.runtime {
            runtime
                .waiters
                .borrow_mut()
                .retain(|w| w.context_id != self.context_id);
        }
    }
}

impl AuthzHttp {
    /// Parks the request until keys arrive (starting the fetch if none is under way);
    /// gives the request back when it should be answered now instead.
    fn wait_for_keys(
        &self,
        runtime: &Runtime,
        needed: KeysNeeded,
        request: RequestHead,
    ) -> Result<(), RequestHead> {
        let (provider, unknown_kid) = match needed {
            KeysNeeded::NotLoaded { provider } => (provider, false),
            KeysNeeded::UnknownKid { provider } => (provider, true),
        };
        let Some(Some(state)) = runtime.remote.get(provider) else {
            return Err(request);
        };
        let now = now_nanos();
        let (action, timeout) = {
            let state = state.borrow();
            let action = if unknown_kid {
                state.on_unknown_kid(now)
            } else {
                state.on_missing_keys(now)
            };
            (action, state.policy().timeout_nanos)
        };
        match action {
            NeedKeys::GiveUp => return Err(request),
            NeedKeys::Fetch => runtime.request_fetch(provider, unknown_kid),
            NeedKeys::Wait => {}
        }
        runtime.waiters.borrow_mut().push(Waiter {
            context_id: self.context_id,
            provider,
            request,
            // The fetch's own timeout plus a tick (the root dispatches a requested fetch
            // within one): the callback normally comes first.
            deadline: now
                .saturating_add(timeout)
                .saturating_add(u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX)),
        });
        Ok(())
    }
}
