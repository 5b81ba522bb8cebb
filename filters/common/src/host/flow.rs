//! Resuming a paused stream and setting the tick period, routed by the module hosting
//! the filter. A filter module of its own calls the host at once. Inside the bundle
//! several filters share one HTTP context and one root context: a filter that resumes
//! a request must not let it go upstream before the filters after it have run, and the
//! root has one tick for all of them. The bundle therefore turns on [`host_in_bundle`]
//! and, after each call into a filter, collects what that filter asked for with
//! [`take_resumed`] and [`take_tick_period`].

use std::cell::{Cell, RefCell};
use std::time::Duration;

/// Which half of an HTTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Request,
    Response,
}

/// A resumption asked for while in the bundle: the context and the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub context_id: u32,
    pub stream: Stream,
}

thread_local! {
    static IN_BUNDLE: Cell<bool> = const { Cell::new(false) };
    static RESUMED: RefCell<Vec<Resumed>> = const { RefCell::new(Vec::new()) };
    static TICK: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Called once by the bundle's entry point: from then on resumptions and tick periods
/// are recorded for it instead of going to the host.
pub fn host_in_bundle() {
    IN_BUNDLE.with(|flag| flag.set(true));
}

fn in_bundle() -> bool {
    IN_BUNDLE.with(Cell::get)
}

/// Lets `stream` of the request `context_id` go on. `context_id` must be the effective
/// context (the one being called back, or the one set with `set_effective_context`).
pub fn resume(context_id: u32, stream: Stream) {
    if in_bundle() {
        RESUMED.with(|resumed| resumed.borrow_mut().push(Resumed { context_id, stream }));
        return;
    }
    let _ = match stream {
        Stream::Request => proxy_wasm::hostcalls::resume_http_request(),
        Stream::Response => proxy_wasm::hostcalls::resume_http_response(),
    };
}

/// Sets how often the root's `on_tick` runs (zero: never).
pub fn set_tick_period(period: Duration) {
    if in_bundle() {
        TICK.with(|tick| tick.set(Some(period)));
        return;
    }
    let _ = proxy_wasm::hostcalls::set_tick_period(period);
}

/// The bundle: the resumptions asked for since the last call, in order.
pub fn take_resumed() -> Vec<Resumed> {
    RESUMED.with(|resumed| std::mem::take(&mut *resumed.borrow_mut()))
}

/// The bundle: the tick period last asked for since the last call.
pub fn take_tick_period() -> Option<Duration> {
    TICK.with(Cell::take)
}
