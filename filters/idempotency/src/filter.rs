//! proxy-wasm adapter: plans the request from its headers, buffers the body for the
//! fingerprint, reserves the key, and captures the upstream response as it streams by
//! to store it at the end. All decisions come from [`crate::machine`]; records live in
//! [`crate::table::SharedDataRecords`] (embedded) or in the control plane's store
//! ([`crate::remote`], `store: remote`).
//!
//! With the remote store every store operation is a gRPC call (`dispatch_grpc_call`,
//! bounded by `store.timeout`), so the adapter waits for its answer where the embedded
//! store answers at once:
//! - `Reserve`: the request is held (headers without a body, or the complete body)
//!   until the answer; then the same [`machine::decide`] as for the embedded store.
//! - `Complete`/`Release`: a response that will be stored is held — its body buffered by
//!   Envoy, at most `maxResponseBytes` — until the store has the record, so a client that
//!   has the whole response and retries, on any replica, gets the replay. A release (5xx,
//!   Envoy-generated reply) holds the response headers until the key is free again; a
//!   response that is not stored (too large, a stream) is not delayed beyond its last
//!   chunk. These calls are made on behalf of the root context, so Envoy does not cancel
//!   them when the request's context goes away (a client that leaves mid-response).
//!
//! A failed or timed-out call counts in `store_errors`; a failed `Reserve` follows
//! `failureMode`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

use crate::config::{self, CompiledConfig, Oversized, StoreMode};
use crate::fingerprint::{fingerprint, Digest128};
use crate::machine::{self, Decision, Reply, RequestPlan, ResponsePlan};
use crate::remote;
use crate::response::StoredResponse;
use crate::store::{Finish, Lease, NotStored, RecordStore, Reservation, Token};
use crate::table::SharedDataRecords;
use meshward_filter_common::clock::Clock;
use meshward_filter_common::grpc_target;
use meshward_filter_common::host::clock::HostClock;
use meshward_filter_common::host::flow::{self, Stream};
use meshward_filter_common::host::grpc;
use meshward_filter_common::host::log;
use meshward_filter_common::host::metrics::Counter;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::request::{read_headers, read_request_head, request_header};
use meshward_filter_common::host::shared_data::HostSharedData;
use meshward_filter_common::store::StoreError;

const NAMESPACE: &str = "default";
const SWEEP_PAGES_PER_TICK: u32 = 256;
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often waiting duplicates (`inFlightWait`) look at their record again.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// A duplicate request paused until the first one's result is known.
struct Waiter {
    context_id: u32,
    scope: Digest128,
    fingerprint: Digest128,
    deadline: u64,
    /// The request's lease slot, filled if the key is released and this request gets
    /// to execute after all.
    lease: Rc<Cell<Option<Lease>>>,
    /// Remote store: the `Reserve` asking for this waiter right now.
    polling: Option<u32>,
}

type Waiters = Rc<RefCell<Vec<Waiter>>>;

struct Metrics {
    executions: Counter,
    replays: Counter,
    conflicts: Counter,
    mismatches: Counter,
    released: Counter,
    uncacheable: Counter,
    evictions: Counter,
    rejected: Counter,
    store_errors: Counter,
}

impl Metrics {
    fn define() -> Self {
        let counter = |what: &str| Counter::define(&format!("meshward.idempotency.{what}"));
        Self {
            executions: counter("executions"),
            replays: counter("replays"),
            conflicts: counter("conflicts"),
            mismatches: counter("mismatches"),
            released: counter("released"),
            uncacheable: counter("uncacheable"),
            evictions: counter("evictions"),
            rejected: counter("rejected"),
            store_errors: counter("store_errors"),
        }
    }
}

/// Where this configuration's records live.
enum Backend {
    /// Built once per configuration: every request reserves and completes through it.
    Local(SharedDataRecords<'static>),
    /// The control plane's `IdempotencyStore` through an Envoy cluster, named by a
    /// serialized `GrpcService` ([`grpc_target::service_target`]).
    Remote { target: String, timeout: Duration },
}

struct Runtime {
    config: CompiledConfig,
    metrics: Metrics,
    backend: Backend,
    /// Completions and releases are dispatched on the root context's behalf.
    root_context_id: u32,
}

impl Runtime {
    fn table(&self) -> Option<&SharedDataRecords<'static>> {
        match &self.backend {
            Backend::Local(table) => Some(table),
            Backend::Remote { .. } => None,
        }
    }

    /// Starts a call to the remote store from the current context (Envoy cancels it if
    /// that context goes away first).
    fn call(&self, method: &str, message: &[u8]) -> Result<u32, String> {
        match &self.backend {
            Backend::Remote { target, timeout } => {
                grpc::dispatch(target, remote::SERVICE, method, message, *timeout)
            }
            Backend::Local(_) => Err("no remote store is configured".into()),
        }
    }

    /// Starts a call owned by the root context, from the request context `own_id`:
    /// it completes even when the request's context is destroyed before the answer. The
    /// answer still comes to `own_id` while it exists (the SDK routes answers to the
    /// context that dispatched), and is dropped after.
    fn call_as_root(&self, own_id: u32, method: &str, message: &[u8]) -> Result<u32, String> {
        let switched = proxy_wasm::hostcalls::set_effective_context(self.root_context_id).is_ok();
        let result = self.call(method, message);
        if switched {
            let _ = proxy_wasm::hostcalls::set_effective_context(own_id);
        }
        result
    }

    /// `store.timeout` in nanoseconds (0 for the embedded store).
    fn store_timeout_nanos(&self) -> u64 {
        match &self.backend {
            Backend::Remote { timeout, .. } => timeout.as_nanos().try_into().unwrap_or(u64::MAX),
            Backend::Local(_) => 0,
        }
    }

    /// Tick when nothing waits: the sweep of the embedded table, none for the remote
    /// store (Redis expires records itself).
    fn idle_tick(&self) -> Duration {
        match self.backend {
            Backend::Local(_) => SWEEP_INTERVAL,
            Backend::Remote { .. } => Duration::ZERO,
        }
    }
}

/// What a request does after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Goes on upstream.
    Continue,
    /// Held: waiting for the first request's result (`inFlightWait`).
    Wait,
    /// Answered by the filter.
    Replied,
}

impl Next {
    fn action(self) -> Action {
        match self {
            Next::Continue => Action::Continue,
            Next::Wait | Next::Replied => Action::Pause,
        }
    }
}

/// Acts on a decision for the current (effective) request context.
fn apply(runtime: &Runtime, decision: Decision, lease: &Cell<Option<Lease>>) -> Next {
    let metrics = &runtime.metrics;
    match decision {
        Decision::Forward {
            lease: granted,
            evicted,
        } => {
            metrics.executions.increment();
            if evicted {
                metrics.evictions.increment();
            }
            lease.set(Some(granted));
            Next::Continue
        }
        Decision::Replay(reply) => {
            metrics.replays.increment();
            send(&reply);
            Next::Replied
        }
        Decision::Conflict(reply) => {
            metrics.conflicts.increment();
            send(&reply);
            Next::Replied
        }
        Decision::Mismatch(reply) => {
            metrics.mismatches.increment();
            send(&reply);
            Next::Replied
        }
        Decision::Unavailable { reply, error } => {
            metrics.store_errors.increment();
            log::warn(&format!("meshward idempotency: {error}"));
            match reply {
                Some(reply) => {
                    send(&reply);
                    Next::Replied
                }
                None => Next::Continue,
            }
        }
    }
}

/// The answer of a remote call: the response message, or why there is none.
fn answer(status_code: u32, response_size: usize) -> Result<Vec<u8>, StoreError> {
    if status_code == grpc::OK {
        Ok(grpc::response(response_size))
    } else {
        Err(StoreError::Unavailable(format!(
            "the idempotency store failed: {}",
            grpc::status_message()
        )))
    }
}

pub struct IdempotencyRoot {
    context_id: u32,
    runtime: Option<Rc<Runtime>>,
    sweep_cursor: u32,
    last_sweep: u64,
    waiters: Waiters,
    /// Remote store: the scope each waiter's `Reserve` in flight asks about (a waiter
    /// that left meanwhile may have been granted the key: it is released).
    polls: HashMap<u32, Digest128>,
}

impl IdempotencyRoot {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            runtime: None,
            sweep_cursor: 0,
            last_sweep: 0,
            waiters: Waiters::default(),
            polls: HashMap::new(),
        }
    }
}

impl Context for IdempotencyRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let Some(scope) = self.polls.remove(&token_id) else {
            return; // a release made for a waiter that had left
        };
        let reservation =
            answer(status_code, response_size).and_then(|message| remote::reservation(&message));
        let waiter = {
            let mut waiters = self.waiters.borrow_mut();
            waiters
                .iter()
                .position(|w| w.polling == Some(token_id))
                .map(|at| waiters.swap_remove(at))
        };
        match waiter {
            None => {
                if let Ok(Reservation::Execute {
                    lease: Lease::Token(token),
                    ..
                }) = reservation
                {
                    release_for_departed(&runtime, &scope, &token);
                }
            }
            Some(mut waiter) => {
                let now = HostClock.now_nanos();
                if matches!(reservation, Ok(Reservation::InFlight)) && now < waiter.deadline {
                    waiter.polling = None;
                    self.waiters.borrow_mut().push(waiter);
                } else {
                    resolve_waiter(&runtime, &waiter, reservation);
                }
            }
        }
        if self.waiters.borrow().is_empty() {
            flow::set_tick_period(runtime.idle_tick());
        }
    }
}

impl RootContext for IdempotencyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure(&plugin::configuration_bytes())
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(IdempotencyHttp {
            runtime: self.runtime.clone(),
            context_id,
            waiters: self.waiters.clone(),
            ..IdempotencyHttp::default()
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl IdempotencyRoot {
    /// Applies a configuration (the plugin's, or the bundle's `idempotency` section);
    /// false when it is invalid (logged).
    pub fn configure(&mut self, bytes: &[u8]) -> bool {
        let config = match config::parse(bytes) {
            Ok(config) => config,
            Err(err) => {
                log::error(&format!(
                    "meshward idempotency: invalid configuration: {err}"
                ));
                return false;
            }
        };
        let backend = match &config.store {
            StoreMode::Local => {
                let records = SharedDataRecords::new(
                    &HostSharedData,
                    NAMESPACE,
                    config.max_entries,
                    config.max_stored_bytes,
                );
                if let Err(err) = records.prepare() {
                    log::error(&format!(
                        "meshward idempotency: cannot create the record table: {err}"
                    ));
                    return false;
                }
                Backend::Local(records)
            }
            StoreMode::Remote(store) => match grpc_target::service_target(&store.cluster) {
                Some(target) => Backend::Remote {
                    target,
                    timeout: Duration::from_nanos(store.timeout_nanos),
                },
                None => {
                    log::error(
                        "meshward idempotency: invalid configuration: store.cluster: too long",
                    );
                    return false;
                }
            },
        };
        let runtime = Runtime {
            config,
            metrics: Metrics::define(),
            backend,
            root_context_id: self.context_id,
        };
        flow::set_tick_period(runtime.idle_tick());
        self.runtime = Some(Rc::new(runtime));
        true
    }

    /// Polls waiting duplicates and sweeps a slice of the record table.
    pub fn tick(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let now = HostClock.now_nanos();
        self.poll_waiters(&runtime, now);
        let Some(table) = runtime.table() else {
            return;
        };
        if now.saturating_sub(self.last_sweep)
            >= SWEEP_INTERVAL.as_nanos().try_into().unwrap_or(u64::MAX)
        {
            self.last_sweep = now;
            if let Err(err) = table.sweep(now, self.sweep_cursor, SWEEP_PAGES_PER_TICK) {
                log::warn(&format!("meshward idempotency: sweep failed: {err}"));
            }
            self.sweep_cursor = self.sweep_cursor.wrapping_add(SWEEP_PAGES_PER_TICK);
        }
    }
}

/// A waiter's request is decided: act as that request (`set_effective_context`), then
/// switch back to the root context.
fn resolve_waiter(
    runtime: &Runtime,
    waiter: &Waiter,
    reservation: Result<Reservation, StoreError>,
) {
    if proxy_wasm::hostcalls::set_effective_context(waiter.context_id).is_err() {
        // The request is gone; a key it was granted goes back at once.
        match reservation {
            Ok(Reservation::Execute {
                lease: Lease::Token(token),
                ..
            }) => release_for_departed(runtime, &waiter.scope, &token),
            Ok(Reservation::Execute { lease, .. }) => {
                if let Some(table) = runtime.table() {
                    let _ = table.release(lease);
                }
            }
            _ => {}
        }
        return;
    }
    let decision = machine::decide(&runtime.config, reservation);
    if apply(runtime, decision, &waiter.lease) == Next::Continue {
        flow::resume(waiter.context_id, Stream::Request);
    }
    // Back to the root: calls made after this one (the next waiter's `Reserve`, a
    // release) must not belong to this request, or Envoy cancels them when it ends and
    // no answer ever comes.
    let _ = proxy_wasm::hostcalls::set_effective_context(runtime.root_context_id);
}

/// Gives back a key granted to a request that left before it could use it (from the
/// root context: nobody waits for the answer).
fn release_for_departed(runtime: &Runtime, scope: &Digest128, token: &Token) {
    if let Err(err) = runtime.call(remote::RELEASE, &remote::release_request(scope, token)) {
        runtime.metrics.store_errors.increment();
        log::warn(&format!(
            "meshward idempotency: could not release a record: {err}"
        ));
    }
}

impl IdempotencyRoot {
    /// Looks at every waiting duplicate's record again, acting as that request
    /// (`set_effective_context`): replay when the first request completed, execute when
    /// it was released, 409 when the wait is over. Back to the idle tick when none wait.
    /// With the remote store, each waiter gets one `Reserve` at a time, answered in
    /// `on_grpc_call_response`.
    fn poll_waiters(&mut self, runtime: &Runtime, now: u64) {
        // Take the list out: no borrow may be held across host calls, which could run
        // another context's callbacks (its `on_log` removes its own entry).
        let waiting = std::mem::take(&mut *self.waiters.borrow_mut());
        if waiting.is_empty() {
            return;
        }
        let config = &runtime.config;
        let mut still = Vec::with_capacity(waiting.len());
        for mut waiter in waiting {
            let reservation = match runtime.table() {
                Some(table) => {
                    table.reserve(&waiter.scope, &waiter.fingerprint, now, config.lock_nanos)
                }
                None if waiter.polling.is_some() => {
                    // Its `Reserve` is bounded by `store.timeout`; should its answer
                    // never come (a cancelled call), the wait ends all the same.
                    let limit = waiter
                        .deadline
                        .saturating_add(runtime.store_timeout_nanos());
                    if now < limit {
                        still.push(waiter);
                        continue;
                    }
                    if let Some(token) = waiter.polling.take() {
                        self.polls.remove(&token);
                    }
                    Err(StoreError::Unavailable(
                        "the idempotency store did not answer a waiting request's Reserve".into(),
                    ))
                }
                None => {
                    let message = remote::reserve_request(
                        &waiter.scope,
                        &waiter.fingerprint,
                        config.lock_nanos,
                    );
                    match runtime.call(remote::RESERVE, &message) {
                        Ok(token) => {
                            self.polls.insert(token, waiter.scope);
                            waiter.polling = Some(token);
                            still.push(waiter);
                            continue;
                        }
                        Err(err) => Err(StoreError::Unavailable(err)),
                    }
                }
            };
            if matches!(reservation, Ok(Reservation::InFlight)) && now < waiter.deadline {
                still.push(waiter);
            } else {
                resolve_waiter(runtime, &waiter, reservation);
            }
        }
        let mut waiters = self.waiters.borrow_mut();
        waiters.extend(still);
        if waiters.is_empty() {
            flow::set_tick_period(runtime.idle_tick());
        }
    }
}

/// The upstream response being captured for storage.
struct Capture {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    too_large: bool,
    /// Remote store: the body is held (Envoy buffers it) until the record is stored, so
    /// a client that has the whole response finds it on any replica. Bounded by
    /// `maxResponseBytes`: a larger body is released and not stored.
    held: bool,
}

/// Up to `size` bytes of the response body Envoy holds for this callback.
fn response_body(size: usize) -> Vec<u8> {
    proxy_wasm::hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A remote call the request waits for.
enum Call {
    Reserve {
        fingerprint: Digest128,
    },
    Complete {
        sent: Result<(), NotStored>,
        /// The response waits for the answer (a response being stored); a `Complete`
        /// that records "not stored" does not hold the response.
        held: bool,
        /// A response was sent: if the store refuses or fails it, the record is marked
        /// "completed, not stored" with a second `Complete` (the same token), as the
        /// embedded store does, rather than staying locked until `lockTimeout`.
        fallback: Option<(Digest128, Token)>,
    },
    Release,
}

#[derive(Default)]
struct IdempotencyHttp {
    runtime: Option<Rc<Runtime>>,
    context_id: u32,
    waiters: Waiters,
    /// Set while the request takes part and is not decided yet.
    pending: Option<(Digest128, String, String)>,
    /// The record's scope once the request takes part (the remote store's key).
    scope: Option<Digest128>,
    /// Shared with a [`Waiter`], which may fill it.
    lease: Rc<Cell<Option<Lease>>>,
    capture: Option<Capture>,
    /// The remote call in flight for this request, by token.
    call: Option<(u32, Call)>,
}

fn send(reply: &Reply) -> Action {
    plugin::send_local_reply(reply.status, &reply.headers, &reply.body)
}

impl Context for IdempotencyHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let call = match self.call.take() {
            Some((token, call)) if token == token_id => call,
            other => {
                self.call = other;
                return;
            }
        };
        let answer = answer(status_code, response_size);
        match call {
            Call::Reserve { fingerprint } => {
                let reservation = answer.and_then(|message| remote::reservation(&message));
                if self.on_reservation(&runtime, reservation, fingerprint) == Next::Continue {
                    flow::resume(self.context_id, Stream::Request);
                }
            }
            Call::Complete {
                sent,
                held,
                fallback,
            } => {
                match answer.and_then(|message| remote::finish(&message, sent)) {
                    // Counted in `uncacheable` when sent (see `finish`).
                    Ok(Finish::NotStored(_)) => {}
                    Err(err) => {
                        report_finish(&runtime, Err(err));
                        if let Some((scope, token)) = fallback {
                            self.complete_not_stored(&runtime, &scope, &token);
                        }
                    }
                    other => report_finish(&runtime, other),
                }
                if held {
                    flow::resume(self.context_id, Stream::Response);
                }
            }
            Call::Release => {
                match answer.and_then(|message| remote::released(&message)) {
                    Ok(true) => {}
                    Ok(false) => log::debug(
                        "meshward idempotency: the record's lock had expired before its release",
                    ),
                    Err(err) => {
                        runtime.metrics.store_errors.increment();
                        log::warn(&format!(
                            "meshward idempotency: could not release a record: {err}"
                        ));
                    }
                }
                flow::resume(self.context_id, Stream::Response);
            }
        }
    }
}

fn report_finish(runtime: &Runtime, result: Result<Finish, StoreError>) {
    match result {
        Ok(Finish::Stored) => {}
        Ok(Finish::NotStored(reason)) => {
            runtime.metrics.uncacheable.increment();
            log::debug(&format!(
                "meshward idempotency: response not stored: {}",
                reason.as_str()
            ));
        }
        Ok(Finish::LeaseLost) => log::warn("meshward idempotency: the record's lock expired before the response completed; it was not stored"),
        Err(err) => {
            runtime.metrics.store_errors.increment();
            log::warn(&format!("meshward idempotency: could not store the response: {err}"));
        }
    }
}

impl IdempotencyHttp {
    /// Fingerprints the request and asks the store; acts on the answer at once
    /// (embedded) or when it arrives (remote, the request held until then).
    fn reserve(&mut self, runtime: &Runtime, body: &[u8]) -> Action {
        let Some((scope, method, path)) = self.pending.take() else {
            return Action::Continue;
        };
        let config = &runtime.config;
        let print = fingerprint(&method, &path, body);
        self.scope = Some(scope);
        let reservation = match runtime.table() {
            Some(table) => table.reserve(&scope, &print, HostClock.now_nanos(), config.lock_nanos),
            None => {
                let message = remote::reserve_request(&scope, &print, config.lock_nanos);
                match runtime.call(remote::RESERVE, &message) {
                    Ok(token) => {
                        self.call = Some((token, Call::Reserve { fingerprint: print }));
                        return Action::Pause;
                    }
                    Err(err) => Err(StoreError::Unavailable(err)),
                }
            }
        };
        self.on_reservation(runtime, reservation, print).action()
    }

    /// The store's answer for this request: wait for the first request's result
    /// (`inFlightWait`), or decide.
    fn on_reservation(
        &mut self,
        runtime: &Runtime,
        reservation: Result<Reservation, StoreError>,
        print: Digest128,
    ) -> Next {
        let config = &runtime.config;
        if let (true, Ok(Reservation::InFlight), Some(scope)) =
            (config.in_flight_wait_nanos > 0, &reservation, self.scope)
        {
            self.waiters.borrow_mut().push(Waiter {
                context_id: self.context_id,
                scope,
                fingerprint: print,
                deadline: HostClock
                    .now_nanos()
                    .saturating_add(config.in_flight_wait_nanos),
                lease: self.lease.clone(),
                polling: None,
            });
            flow::set_tick_period(WAIT_POLL);
            return Next::Wait;
        }
        apply(runtime, machine::decide(config, reservation), &self.lease)
    }

    fn reserve_with_buffered_body(&mut self, runtime: &Runtime, size: usize) -> Action {
        let body = proxy_wasm::hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.reserve(runtime, &body)
    }

    /// Records the outcome of the execution. Remote: the response (its end) is held
    /// until the store answers.
    fn finish(&mut self, runtime: &Runtime, outcome: Result<StoredResponse, NotStored>) -> Action {
        let Some(lease) = self.lease.take() else {
            return Action::Continue;
        };
        match (lease, runtime.table(), self.scope) {
            (Lease::Token(token), None, Some(scope)) => {
                let message = remote::complete_request(
                    &scope,
                    &token,
                    outcome.as_ref().map_err(|r| *r),
                    runtime.config.ttl_nanos,
                );
                if let Err(reason) = &outcome {
                    // Counted now: the answer may come after this context is gone (the
                    // response was not held), and then it is dropped.
                    runtime.metrics.uncacheable.increment();
                    log::debug(&format!(
                        "meshward idempotency: response not stored: {}",
                        reason.as_str()
                    ));
                }
                match runtime.call_as_root(self.context_id, remote::COMPLETE, &message) {
                    Ok(call) => {
                        // Only a response being stored is held until the answer.
                        let held = outcome.is_ok();
                        let sent = outcome.map(|_| ());
                        let fallback = held.then_some((scope, token));
                        self.call = Some((
                            call,
                            Call::Complete {
                                sent,
                                held,
                                fallback,
                            },
                        ));
                        if held {
                            Action::Pause
                        } else {
                            Action::Continue
                        }
                    }
                    Err(err) => {
                        report_finish(runtime, Err(StoreError::Unavailable(err)));
                        Action::Continue
                    }
                }
            }
            (lease, Some(table), _) => {
                let result = table.complete(
                    lease,
                    outcome.as_ref().map_err(|r| *r),
                    HostClock.now_nanos(),
                    runtime.config.ttl_nanos,
                );
                report_finish(runtime, result);
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    /// Best effort after a refused or failed `Complete` with a response: records
    /// "completed, not stored" (`STORE_FAILED`) with the same token, so a retry gets the
    /// embedded store's answer instead of executing again once the lock expires. The
    /// response is not held for it.
    fn complete_not_stored(&mut self, runtime: &Runtime, scope: &Digest128, token: &Token) {
        let reason = NotStored::StoreFailed;
        let message = remote::complete_request(scope, token, Err(reason), runtime.config.ttl_nanos);
        runtime.metrics.uncacheable.increment();
        match runtime.call_as_root(self.context_id, remote::COMPLETE, &message) {
            Ok(call) => {
                self.call = Some((
                    call,
                    Call::Complete {
                        sent: Err(reason),
                        held: false,
                        fallback: None,
                    },
                ));
            }
            Err(err) => report_finish(runtime, Err(StoreError::Unavailable(err))),
        }
    }

    /// Gives the key back so a retry executes again. Remote: the response is held until
    /// the store answers.
    fn release(&mut self, runtime: &Runtime) -> Action {
        let Some(lease) = self.lease.take() else {
            return Action::Continue;
        };
        runtime.metrics.released.increment();
        let result = match (lease, runtime.table(), self.scope) {
            (Lease::Token(token), None, Some(scope)) => {
                let message = remote::release_request(&scope, &token);
                match runtime.call_as_root(self.context_id, remote::RELEASE, &message) {
                    Ok(call) => {
                        self.call = Some((call, Call::Release));
                        return Action::Pause;
                    }
                    Err(err) => Err(StoreError::Unavailable(err)),
                }
            }
            (lease, Some(table), _) => table.release(lease),
            _ => Ok(()),
        };
        if let Err(err) = result {
            runtime.metrics.store_errors.increment();
            log::warn(&format!(
                "meshward idempotency: could not release a record: {err}"
            ));
        }
        Action::Continue
    }
}

impl HttpContext for IdempotencyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        // Most requests are not of a covered method: decided on `:method` alone, the
        // rest of the head unread (one small host call instead of all headers).
        let method = request_header(":method");
        if !method.is_some_and(|method| runtime.config.methods.contains(&method)) {
            return Action::Continue;
        }
        let request = read_request_head(runtime.config.identity_client_address);
        match machine::plan_request(&runtime.config, &request) {
            RequestPlan::Skip => Action::Continue,
            RequestPlan::Reject(reply) => {
                runtime.metrics.rejected.increment();
                send(&reply)
            }
            RequestPlan::Check { scope } => {
                let method = request.method().unwrap_or_default().to_owned();
                let path = request.header(":path").unwrap_or_default().to_owned();
                self.pending = Some((scope, method, path));
                if end_of_stream {
                    self.reserve(&runtime, &[])
                } else {
                    // The body is part of the fingerprint. Pausing here would not help:
                    // the host turns a header-phase pause into "stop everything", and no
                    // body callback would follow. The headers move on; the body is held
                    // (paused) until complete, and on a duplicate the upstream stream is
                    // reset before any body is sent.
                    Action::Continue
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        if self.pending.is_none() {
            return Action::Continue;
        }
        if body_size > runtime.config.max_body_bytes {
            self.pending = None;
            return match runtime.config.oversized_body {
                Oversized::Reject => {
                    runtime.metrics.rejected.increment();
                    send(&machine::body_too_large(&runtime.config))
                }
                Oversized::PassThrough => {
                    log::debug("meshward idempotency: body over maxBodyBytes, passed through without idempotency");
                    Action::Continue
                }
            };
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.reserve_with_buffered_body(&runtime, body_size)
    }

    /// Trailers end a request whose last body callback did not: decide now, with the
    /// body held so far.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        if self.pending.is_none() {
            return Action::Continue;
        }
        self.reserve_with_buffered_body(&runtime, runtime.config.max_body_bytes)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        if self.lease.get().is_none() {
            return Action::Continue;
        }
        let headers = read_headers(MapType::HttpResponseHeaders);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let status = header(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let via_upstream = proxy_wasm::hostcalls::get_property(vec!["response", "code_details"])
            .ok()
            .flatten()
            .is_some_and(|details| details == b"via_upstream");
        match machine::plan_response(
            &runtime.config,
            status,
            via_upstream,
            header("content-type"),
        ) {
            ResponsePlan::Release => self.release(&runtime),
            ResponsePlan::NotStored(reason) => self.finish(&runtime, Err(reason)),
            ResponsePlan::Capture => {
                let replayed = machine::replay_headers(&runtime.config, &headers);
                self.capture = Some(Capture {
                    status,
                    headers: replayed,
                    body: Vec::new(),
                    too_large: false,
                    held: runtime.table().is_none(),
                });
                if end_of_stream {
                    self.on_response_end(&runtime)
                } else {
                    Action::Continue
                }
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        let Some(capture) = &mut self.capture else {
            return Action::Continue;
        };
        let max = runtime.config.max_response_bytes;
        if capture.held {
            // Remote store: the body is held in Envoy's buffer (`body_size` is all of it so
            // far) until the store has the record, unless it outgrows what is stored.
            if body_size > max {
                capture.too_large = true;
                capture.held = false; // released below: delivered, not stored
            } else if !end_of_stream {
                return Action::Pause;
            } else {
                capture.body = response_body(body_size);
            }
        } else if !capture.too_large && body_size > 0 {
            let chunk = response_body(body_size);
            if capture.body.len() + chunk.len() > max {
                capture.too_large = true;
                capture.body = Vec::new();
            } else {
                capture.body.extend_from_slice(&chunk);
            }
        }
        if end_of_stream {
            self.on_response_end(&runtime)
        } else {
            Action::Continue
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        if let Some(capture) = self.capture.as_mut().filter(|c| c.held) {
            // The held body, complete now.
            let body = response_body(runtime.config.max_response_bytes.saturating_add(1));
            if body.len() > runtime.config.max_response_bytes {
                capture.too_large = true;
            } else {
                capture.body = body;
            }
        }
        self.on_response_end(&runtime)
    }

    /// The stream ended without the response completing. If the upstream had started
    /// answering, it executed: record "executed, not stored" so a retry cannot run it
    /// again. If no answer came at all (client gone, stream reset before a response),
    /// whether it executed is unknown: keep the lock, which expires after
    /// `lockTimeout`. Only an Envoy-generated response (seen in the response headers)
    /// releases the key at once.
    fn on_log(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        // A waiting request whose client left is waited for no longer.
        let id = self.context_id;
        self.waiters
            .borrow_mut()
            .retain(|waiter| waiter.context_id != id);
        if self.capture.take().is_some() {
            // Remote: made on the root's behalf, it outlives this context.
            let _ = self.finish(&runtime, Err(NotStored::Incomplete));
        } else if self.lease.take().is_some() {
            log::debug("meshward idempotency: stream ended before any response; the key stays locked until lockTimeout");
        }
    }
}

impl IdempotencyHttp {
    fn on_response_end(&mut self, runtime: &Runtime) -> Action {
        let Some(capture) = self.capture.take() else {
            return Action::Continue;
        };
        let outcome = if capture.too_large {
            Err(NotStored::TooLarge)
        } else {
            Ok(StoredResponse {
                status: capture.status,
                headers: capture.headers,
                body: capture.body,
            })
        };
        self.finish(runtime, outcome)
    }
}
