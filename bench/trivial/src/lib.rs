//! The per-filter floor of `cargo xtask bench`: a proxy-wasm filter that reads one
//! request header and adds one, nothing else. What it costs per request is what any
//! wasm filter pays for being one (context creation, calls into the VM, host-call
//! crossings); the report compares every Meshward filter with it.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

pub struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct Request;

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let seen = proxy_wasm::hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            "user-agent",
        )
        .ok()
        .flatten()
        .is_some();
        let _ = proxy_wasm::hostcalls::set_map_value(
            proxy_wasm::types::MapType::HttpRequestHeaders,
            "x-trivial",
            Some(if seen { "1" } else { "0" }),
        );
        Action::Continue
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}
