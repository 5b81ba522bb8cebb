//! proxy-wasm adapter: plans the request from its headers, buffers the body for the
//! fingerprint, reserves the key, and captures the upstream response as it streams by
//! (never delaying it) to store it at the end. All decisions come from
//! [`crate::machine`]; records live in [`crate::table::SharedDataRecords`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

use crate::config::{self, CompiledConfig, Oversized};
use crate::fingerprint::{fingerprint, Digest128};
use crate::machine::{self, Decision, Reply, RequestPlan, ResponsePlan};
use crate::response::StoredResponse;
use crate::store::{Finish, Lease, NotStored, RecordStore, Reservation};
use crate::table::SharedDataRecords;
use meshward_filter_common::clock::Clock;
use meshward_filter_common::host::clock::HostClock;
use meshward_filter_common::host::log;
use meshward_filter_common::host::metrics::Counter;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::request::{read_headers, read_request_head};
use meshward_filter_common::host::shared_data::HostSharedData;

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

struct Runtime {
    config: CompiledConfig,
    metrics: Metrics,
    /// Built once per configuration: every request reserves and completes through it.
    records: SharedDataRecords<'static>,
}

#[derive(Default)]
pub struct IdempotencyRoot {
    runtime: Option<Rc<Runtime>>,
    sweep_cursor: u32,
    last_sweep: u64,
    waiters: Waiters,
}

impl Context for IdempotencyRoot {}

impl RootContext for IdempotencyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match config::parse(&plugin::configuration_bytes()) {
            Ok(config) => config,
            Err(err) => {
                log::error(&format!(
                    "meshward idempotency: invalid configuration: {err}"
                ));
                return false;
            }
        };
        let records = SharedDataRecords::new(
            &HostSharedData,
            NAMESPACE,
            config.max_entries,
            config.max_stored_bytes,
        );
        let runtime = Runtime {
            config,
            metrics: Metrics::define(),
            records,
        };
        if let Err(err) = runtime.records.prepare() {
            log::error(&format!(
                "meshward idempotency: cannot create the record table: {err}"
            ));
            return false;
        }
        self.runtime = Some(Rc::new(runtime));
        let _ = proxy_wasm::hostcalls::set_tick_period(SWEEP_INTERVAL);
        true
    }

    fn on_tick(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let now = HostClock.now_nanos();
        self.poll_waiters(&runtime, now);
        if now.saturating_sub(self.last_sweep)
            >= SWEEP_INTERVAL.as_nanos().try_into().unwrap_or(u64::MAX)
        {
            self.last_sweep = now;
            if let Err(err) = runtime
                .records
                .sweep(now, self.sweep_cursor, SWEEP_PAGES_PER_TICK)
            {
                log::warn(&format!("meshward idempotency: sweep failed: {err}"));
            }
            self.sweep_cursor = self.sweep_cursor.wrapping_add(SWEEP_PAGES_PER_TICK);
        }
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
    /// Looks at every waiting duplicate's record again, acting as that request
    /// (`set_effective_context`): replay when the first request completed, execute when
    /// it was released, 409 when the wait is over. Back to the slow tick when none wait.
    fn poll_waiters(&mut self, runtime: &Runtime, now: u64) {
        // Take the list out: no borrow may be held across host calls, which could run
        // another context's callbacks (its `on_log` removes its own entry).
        let waiting = std::mem::take(&mut *self.waiters.borrow_mut());
        if waiting.is_empty() {
            return;
        }
        let config = &runtime.config;
        let still: Vec<Waiter> = waiting
            .into_iter()
            .filter(|waiter| {
                let reservation = runtime.records.reserve(
                    &waiter.scope,
                    &waiter.fingerprint,
                    now,
                    config.lock_nanos,
                );
                let still_waiting =
                    matches!(reservation, Ok(Reservation::InFlight)) && now < waiter.deadline;
                if still_waiting {
                    return true;
                }
                if proxy_wasm::hostcalls::set_effective_context(waiter.context_id).is_err() {
                    return false; // the request is gone
                }
                match machine::decide(config, reservation) {
                    Decision::Forward { lease, evicted } => {
                        runtime.metrics.executions.increment();
                        if evicted {
                            runtime.metrics.evictions.increment();
                        }
                        waiter.lease.set(Some(lease));
                        let _ = proxy_wasm::hostcalls::resume_http_request();
                    }
                    Decision::Replay(reply) => {
                        runtime.metrics.replays.increment();
                        send(&reply);
                    }
                    Decision::Conflict(reply) => {
                        runtime.metrics.conflicts.increment();
                        send(&reply);
                    }
                    Decision::Mismatch(reply) => {
                        runtime.metrics.mismatches.increment();
                        send(&reply);
                    }
                    Decision::Unavailable { reply, error } => {
                        runtime.metrics.store_errors.increment();
                        log::warn(&format!("meshward idempotency: {error}"));
                        match reply {
                            Some(reply) => {
                                send(&reply);
                            }
                            None => {
                                let _ = proxy_wasm::hostcalls::resume_http_request();
                            }
                        }
                    }
                }
                false
            })
            .collect();
        let mut waiters = self.waiters.borrow_mut();
        waiters.extend(still);
        if waiters.is_empty() {
            let _ = proxy_wasm::hostcalls::set_tick_period(SWEEP_INTERVAL);
        }
    }
}

/// The upstream response being captured for storage.
struct Capture {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    too_large: bool,
}

#[derive(Default)]
struct IdempotencyHttp {
    runtime: Option<Rc<Runtime>>,
    context_id: u32,
    waiters: Waiters,
    /// Set while the request takes part and is not decided yet.
    pending: Option<(Digest128, String, String)>,
    /// Shared with a [`Waiter`], which may fill it.
    lease: Rc<Cell<Option<Lease>>>,
    capture: Option<Capture>,
}

impl Context for IdempotencyHttp {}

fn send(reply: &Reply) -> Action {
    plugin::send_local_reply(reply.status, &reply.headers, &reply.body)
}

impl IdempotencyHttp {
    /// Fingerprints the request and acts on the store's answer.
    fn reserve(&mut self, runtime: &Runtime, body: &[u8]) -> Action {
        let Some((scope, method, path)) = self.pending.take() else {
            return Action::Continue;
        };
        let config = &runtime.config;
        let metrics = &runtime.metrics;
        let print = fingerprint(&method, &path, body);
        let now = HostClock.now_nanos();
        let reservation = runtime
            .records
            .reserve(&scope, &print, now, config.lock_nanos);
        if config.in_flight_wait_nanos > 0 && matches!(reservation, Ok(Reservation::InFlight)) {
            self.waiters.borrow_mut().push(Waiter {
                context_id: self.context_id,
                scope,
                fingerprint: print,
                deadline: now.saturating_add(config.in_flight_wait_nanos),
                lease: self.lease.clone(),
            });
            let _ = proxy_wasm::hostcalls::set_tick_period(WAIT_POLL);
            return Action::Pause;
        }
        match machine::decide(config, reservation) {
            Decision::Forward { lease, evicted } => {
                metrics.executions.increment();
                if evicted {
                    metrics.evictions.increment();
                }
                self.lease.set(Some(lease));
                Action::Continue
            }
            Decision::Replay(reply) => {
                metrics.replays.increment();
                send(&reply)
            }
            Decision::Conflict(reply) => {
                metrics.conflicts.increment();
                send(&reply)
            }
            Decision::Mismatch(reply) => {
                metrics.mismatches.increment();
                send(&reply)
            }
            Decision::Unavailable { reply, error } => {
                metrics.store_errors.increment();
                log::warn(&format!("meshward idempotency: {error}"));
                reply.as_ref().map_or(Action::Continue, send)
            }
        }
    }

    fn reserve_with_buffered_body(&mut self, runtime: &Runtime, size: usize) -> Action {
        let body = proxy_wasm::hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.reserve(runtime, &body)
    }

    fn finish(&mut self, runtime: &Runtime, outcome: Result<StoredResponse, NotStored>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let now = HostClock.now_nanos();
        let result = runtime.records.complete(
            lease,
            outcome.as_ref().map_err(|r| *r),
            now,
            runtime.config.ttl_nanos,
        );
        match result {
            Ok(Finish::Stored) => {}
            Ok(Finish::NotStored(reason)) => {
                runtime.metrics.uncacheable.increment();
                log::debug(&format!("meshward idempotency: response not stored: {}", reason.as_str()));
            }
            Ok(Finish::LeaseLost) => log::warn("meshward idempotency: the record's lock expired before the response completed; it was not stored"),
            Err(err) => {
                runtime.metrics.store_errors.increment();
                log::warn(&format!("meshward idempotency: could not store the response: {err}"));
            }
        }
    }

    fn release(&mut self, runtime: &Runtime) {
        if let Some(lease) = self.lease.take() {
            runtime.metrics.released.increment();
            if let Err(err) = runtime.records.release(lease) {
                log::warn(&format!(
                    "meshward idempotency: could not release a record: {err}"
                ));
            }
        }
    }
}

impl HttpContext for IdempotencyHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
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
                });
                if end_of_stream {
                    self.on_response_end(&runtime);
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            return Action::Continue;
        };
        if let Some(capture) = &mut self.capture {
            if !capture.too_large && body_size > 0 {
                let chunk =
                    proxy_wasm::hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                if capture.body.len() + chunk.len() > runtime.config.max_response_bytes {
                    capture.too_large = true;
                    capture.body = Vec::new();
                } else {
                    capture.body.extend_from_slice(&chunk);
                }
            }
            if end_of_stream {
                self.on_response_end(&runtime);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(runtime) = self.runtime.clone() {
            self.on_response_end(&runtime);
        }
        Action::Continue
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
            self.finish(&runtime, Err(NotStored::Incomplete));
        } else if self.lease.take().is_some() {
            log::debug("meshward idempotency: stream ended before any response; the key stays locked until lockTimeout");
        }
    }
}

impl IdempotencyHttp {
    fn on_response_end(&mut self, runtime: &Runtime) {
        let Some(capture) = self.capture.take() else {
            return;
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
        self.finish(runtime, outcome);
    }
}
