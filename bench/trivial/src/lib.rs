//! The per-filter floor of `cargo xtask bench`: a proxy-wasm filter that reads one
//! request header and adds one, nothing else. What it costs per request is what any
//! wasm filter pays for being one (context creation, calls into the VM, host-call
//! crossings); the report compares every Meshward filter with it.
//!
//! With a plugin configuration `<operation> <count>` it also repeats one host
//! operation `count` times per request, which is how the cost of each kind of host
//! call was measured (docs/bench/REPORT.md, "Where the time goes").

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType, MetricType};

/// One host operation to repeat.
#[derive(Clone, Copy)]
enum Operation {
    /// `proxy_get_header_map_pairs` on the request headers.
    AllHeaders,
    /// `proxy_get_header_map_value` for one header.
    OneHeader,
    /// `proxy_replace_header_map_value`.
    SetHeader,
    /// `proxy_get_property` `source.address`.
    GetProperty,
    /// `proxy_set_property` (filter state).
    SetProperty,
    /// `proxy_increment_metric`.
    Metric,
    /// `proxy_get_log_level`.
    LogLevel,
    /// `proxy_get_current_time_nanoseconds`.
    Clock,
    /// `proxy_get_shared_data`.
    SharedData,
    /// WASI `random_get` for 16 bytes.
    Random,
}

/// What to repeat: the operation, how often, the counter id, the property path.
type Repeat = (Operation, u32, u32, Vec<String>);

#[derive(Default)]
pub struct Root {
    repeat: Option<Rc<Repeat>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        let mut words = text.split_whitespace();
        let operation = match words.next() {
            None => return true,
            Some("all_headers") => Operation::AllHeaders,
            Some("one_header") => Operation::OneHeader,
            Some("set_header") => Operation::SetHeader,
            Some("get_property") => Operation::GetProperty,
            Some("set_property") => Operation::SetProperty,
            Some("metric") => Operation::Metric,
            Some("log_level") => Operation::LogLevel,
            Some("clock") => Operation::Clock,
            Some("shared_data") => Operation::SharedData,
            Some("random") => Operation::Random,
            Some(_) => return false,
        };
        let count = words.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        // `get_property N a.b`: the property path (default `source.address`).
        let path: Vec<String> = words
            .next()
            .unwrap_or("source.address")
            .split('.')
            .map(str::to_owned)
            .collect();
        let metric = hostcalls::define_metric(MetricType::Counter, "meshward_bench_trivial.ops")
            .unwrap_or(0);
        let _ = hostcalls::set_shared_data("meshward_bench_trivial", Some(b"12345678"), None);
        self.repeat = Some(Rc::new((operation, count, metric, path)));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            repeat: self.repeat.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct Request {
    repeat: Option<Rc<Repeat>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let seen = hostcalls::get_map_value(MapType::HttpRequestHeaders, "user-agent")
            .ok()
            .flatten()
            .is_some();
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-trivial",
            Some(if seen { "1" } else { "0" }),
        );
        if let Some(repeat) = &self.repeat {
            let (operation, count, metric, path) = &**repeat;
            let (operation, count, metric) = (*operation, *count, *metric);
            for _ in 0..count {
                match operation {
                    Operation::AllHeaders => {
                        drop(hostcalls::get_map_bytes(MapType::HttpRequestHeaders))
                    }
                    Operation::OneHeader => drop(hostcalls::get_map_value(
                        MapType::HttpRequestHeaders,
                        "user-agent",
                    )),
                    Operation::SetHeader => drop(hostcalls::set_map_value(
                        MapType::HttpRequestHeaders,
                        "x-trivial",
                        Some("2"),
                    )),
                    Operation::GetProperty => drop(hostcalls::get_property(
                        path.iter().map(String::as_str).collect(),
                    )),
                    Operation::SetProperty => drop(hostcalls::set_property(
                        vec!["meshward_bench"],
                        Some(b"0123456789abcdef"),
                    )),
                    Operation::Metric => drop(hostcalls::increment_metric(metric, 1)),
                    Operation::LogLevel => drop(hostcalls::get_log_level()),
                    Operation::Clock => drop(hostcalls::get_current_time()),
                    Operation::Random => {
                        let mut bytes = [0u8; 16];
                        let _ = getrandom::fill(&mut bytes);
                    }
                    Operation::SharedData => {
                        drop(hostcalls::get_shared_data("meshward_bench_trivial"))
                    }
                }
            }
        }
        Action::Continue
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}
