//! proxy-wasm adapter: one root context that configures the filters' own roots from
//! the bundle's sections and shares its single tick among them, and one HTTP context
//! per request that holds each filter's HTTP context and drives them in order
//! ([`crate::chain`]). The filters' code is unchanged: they run exactly as they do in
//! modules of their own, except that resuming a stream and setting the tick period go
//! through `meshward_filter_common::host::flow`, which the bundle collects after every
//! call into a filter, and the request head is read from the host once per callback
//! and shared by the stages (`host::request::sharing`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::chain::{Chain, Half, Phase, Stages, Step};
use crate::config::{self, Kind, Section};
use crate::ticks::Ticks;
use meshward_authz::filter::AuthzRoot;
use meshward_filter_common::clock::Clock;
use meshward_filter_common::host::clock::HostClock;
use meshward_filter_common::host::flow::{self, Stream};
use meshward_filter_common::host::log;
use meshward_filter_common::host::plugin;
use meshward_filter_common::host::request;
use meshward_idempotency::filter::IdempotencyRoot;
use meshward_ratelimit::filter::RateLimitRoot;
use meshward_trace_inject::filter::TraceInjectRoot;

/// One request's filters and where its halves are held.
struct Request {
    stages: Vec<Box<dyn HttpContext>>,
    chain: Chain,
}

/// The stages' HTTP contexts, driven by [`Chain`].
struct StageContexts<'a>(&'a mut Vec<Box<dyn HttpContext>>, &'a Shared);

impl Stages for StageContexts<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn run(&mut self, stage: usize, phase: Phase) -> Step {
        let Some(context) = self.0.get_mut(stage) else {
            return Step::Continue;
        };
        let action = match phase {
            Phase::RequestHeaders {
                headers,
                end_of_stream,
            } => context.on_http_request_headers(headers, end_of_stream),
            Phase::RequestBody {
                size,
                end_of_stream,
            } => context.on_http_request_body(size, end_of_stream),
            Phase::RequestTrailers { trailers } => context.on_http_request_trailers(trailers),
            Phase::ResponseHeaders {
                headers,
                end_of_stream,
            } => context.on_http_response_headers(headers, end_of_stream),
            Phase::ResponseBody {
                size,
                end_of_stream,
            } => context.on_http_response_body(size, end_of_stream),
            Phase::ResponseTrailers { trailers } => context.on_http_response_trailers(trailers),
        };
        self.1.collect(stage);
        match action {
            Action::Continue => Step::Continue,
            _ => Step::Pause,
        }
    }
}

/// What the root and its requests share.
struct Shared {
    root_context_id: u32,
    /// Requests by context id, so a filter's root can resume one of them.
    requests: RefCell<HashMap<u32, Rc<RefCell<Request>>>>,
    ticks: RefCell<Ticks>,
    /// Resumptions collected, handled once the call that made them returns.
    resumed: RefCell<Vec<(usize, flow::Resumed)>>,
}

impl Shared {
    /// After a call into `stage`: what it asked of the host.
    fn collect(&self, stage: usize) {
        if let Some(period) = flow::take_tick_period() {
            let nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
            let changed = self
                .ticks
                .borrow_mut()
                .set(stage, nanos, HostClock.now_nanos());
            if let Some(host) = changed {
                let _ =
                    proxy_wasm::hostcalls::set_tick_period(std::time::Duration::from_nanos(host));
            }
        }
        let resumed = flow::take_resumed();
        if !resumed.is_empty() {
            self.resumed
                .borrow_mut()
                .extend(resumed.into_iter().map(|r| (stage, r)));
        }
    }

    /// Runs the stages after each one that resumed a request, then lets the host go
    /// on with it when none holds it any longer. Each request is acted on as the
    /// effective context; the root is the effective context again afterwards.
    fn pump(&self) {
        loop {
            let next = {
                let mut resumed = self.resumed.borrow_mut();
                if resumed.is_empty() {
                    break;
                }
                resumed.remove(0)
            };
            let (stage, flow::Resumed { context_id, stream }) = next;
            let Some(request) = self.requests.borrow().get(&context_id).cloned() else {
                continue; // the request is gone
            };
            if proxy_wasm::hostcalls::set_effective_context(context_id).is_err() {
                continue;
            }
            let half = match stream {
                Stream::Request => Half::Request,
                Stream::Response => Half::Response,
            };
            let step = match request.try_borrow_mut() {
                Ok(mut request) => {
                    let Request { stages, chain } = &mut *request;
                    request::sharing(|| chain.resume(&mut StageContexts(stages, self), half, stage))
                }
                Err(_) => {
                    log::warn("meshward bundle: a resumption arrived while its request was busy; resuming it as is");
                    Some(Step::Continue)
                }
            };
            if step == Some(Step::Continue) {
                let _ = match half {
                    Half::Request => proxy_wasm::hostcalls::resume_http_request(),
                    Half::Response => proxy_wasm::hostcalls::resume_http_response(),
                };
            }
            let _ = proxy_wasm::hostcalls::set_effective_context(self.root_context_id);
        }
    }
}

pub struct BundleRoot {
    shared: Rc<Shared>,
    /// The filters' roots, in request order.
    roots: Vec<Box<dyn RootContext>>,
}

impl BundleRoot {
    pub fn new(context_id: u32) -> Self {
        flow::host_in_bundle();
        Self {
            shared: Rc::new(Shared {
                root_context_id: context_id,
                requests: RefCell::new(HashMap::new()),
                ticks: RefCell::new(Ticks::new(0)),
                resumed: RefCell::new(Vec::new()),
            }),
            roots: Vec::new(),
        }
    }

    fn configure(&mut self, bytes: &[u8]) -> bool {
        let sections = match config::parse(bytes) {
            Ok(sections) => sections,
            Err(err) => {
                log::error(&format!("meshward bundle: invalid configuration: {err}"));
                return false;
            }
        };
        *self.shared.ticks.borrow_mut() = Ticks::new(sections.len());
        let mut roots: Vec<Box<dyn RootContext>> = Vec::with_capacity(sections.len());
        for (stage, Section { kind, json }) in sections.iter().enumerate() {
            let root = match kind {
                Kind::TraceInject => {
                    configured(TraceInjectRoot::default(), TraceInjectRoot::configure, json)
                }
                Kind::Authz => configured(AuthzRoot::default(), AuthzRoot::configure, json),
                Kind::RateLimit => {
                    configured(RateLimitRoot::default(), RateLimitRoot::configure, json)
                }
                Kind::Idempotency => configured(
                    IdempotencyRoot::new(self.shared.root_context_id),
                    IdempotencyRoot::configure,
                    json,
                ),
            };
            self.shared.collect(stage);
            match root {
                Some(root) => roots.push(root),
                None => return false, // the filter logged why
            }
        }
        log::info(&format!(
            "meshward bundle: configured {}",
            sections
                .iter()
                .map(|s| s.kind.key())
                .collect::<Vec<_>>()
                .join(" → ")
        ));
        self.roots = roots;
        self.shared.pump();
        true
    }
}

/// A filter's root with its section applied, or `None` when the filter refused it (and
/// logged why).
fn configured<R: RootContext + 'static>(
    mut root: R,
    configure: fn(&mut R, &[u8]) -> bool,
    json: &[u8],
) -> Option<Box<dyn RootContext>> {
    configure(&mut root, json).then(|| Box::new(root) as Box<dyn RootContext>)
}

impl Context for BundleRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        for (stage, root) in self.roots.iter_mut().enumerate() {
            root.on_http_call_response(token, headers, body, trailers);
            self.shared.collect(stage);
        }
        self.shared.pump();
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        for (stage, root) in self.roots.iter_mut().enumerate() {
            root.on_grpc_call_response(token, status, size);
            self.shared.collect(stage);
        }
        self.shared.pump();
    }
}

impl RootContext for BundleRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.configure(&plugin::configuration_bytes())
    }

    fn on_tick(&mut self) {
        let due = self.shared.ticks.borrow_mut().due(HostClock.now_nanos());
        for stage in due {
            if let Some(root) = self.roots.get_mut(stage) {
                root.on_tick();
                self.shared.collect(stage);
            }
        }
        self.shared.pump();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let stages = self
            .roots
            .iter()
            .filter_map(|root| root.create_http_context(context_id))
            .collect();
        let request = Rc::new(RefCell::new(Request {
            stages,
            chain: Chain::default(),
        }));
        self.shared
            .requests
            .borrow_mut()
            .insert(context_id, request.clone());
        Some(Box::new(BundleHttp {
            shared: self.shared.clone(),
            context_id,
            request,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct BundleHttp {
    shared: Rc<Shared>,
    context_id: u32,
    request: Rc<RefCell<Request>>,
}

impl Drop for BundleHttp {
    fn drop(&mut self) {
        self.shared.requests.borrow_mut().remove(&self.context_id);
    }
}

impl BundleHttp {
    /// A host callback of one half, through the chain.
    fn enter(&mut self, phase: Phase) -> Action {
        let step = match self.request.try_borrow_mut() {
            Ok(mut request) => {
                let Request { stages, chain } = &mut *request;
                request::sharing(|| chain.enter(&mut StageContexts(stages, &self.shared), phase))
            }
            Err(_) => Step::Continue, // unreachable: the host does not re-enter a context
        };
        self.shared.pump();
        match step {
            Step::Continue => Action::Continue,
            Step::Pause => Action::Pause,
        }
    }

    /// A callback every stage gets (answers to calls, the end of the stream).
    fn each(&mut self, mut call: impl FnMut(&mut dyn HttpContext)) {
        if let Ok(mut request) = self.request.try_borrow_mut() {
            for (stage, context) in request.stages.iter_mut().enumerate() {
                call(context.as_mut());
                self.shared.collect(stage);
            }
        }
        self.shared.pump();
    }
}

impl Context for BundleHttp {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        self.each(|stage| stage.on_http_call_response(token, headers, body, trailers));
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.each(|stage| stage.on_grpc_call_response(token, status, size));
    }
}

impl HttpContext for BundleHttp {
    fn on_http_request_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        self.enter(Phase::RequestHeaders {
            headers,
            end_of_stream,
        })
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.enter(Phase::RequestBody {
            size,
            end_of_stream,
        })
    }

    fn on_http_request_trailers(&mut self, trailers: usize) -> Action {
        self.enter(Phase::RequestTrailers { trailers })
    }

    fn on_http_response_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        self.enter(Phase::ResponseHeaders {
            headers,
            end_of_stream,
        })
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.enter(Phase::ResponseBody {
            size,
            end_of_stream,
        })
    }

    fn on_http_response_trailers(&mut self, trailers: usize) -> Action {
        self.enter(Phase::ResponseTrailers { trailers })
    }

    fn on_log(&mut self) {
        self.each(|stage| stage.on_log());
    }
}
