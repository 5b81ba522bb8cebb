//! Envoy bootstraps for tests and the demo: one HTTP listener (port 0, resolved after
//! start) routing everything to an upstream cluster, with the HTTP filters a test asks
//! for in front of the router.

use std::path::Path;

use serde_json::{json, Value};

/// Tag extraction for Meshward metric names, so Prometheus gets
/// `envoy_wasmcustom_meshward_ratelimit_rule_allowed{meshward_rule="..."}`.
/// Mirrored in examples/envoy/ratelimit-demo.yaml.
pub fn meshward_stats_tags() -> Value {
    json!([{
        "tag_name": "meshward_rule",
        "regex": "^wasmcustom\\.meshward\\.[a-z_]+\\.rule\\.(([^.]+)\\.)[a-z_]+$"
    }])
}

/// The `envoy.filters.http.wasm` entry for a Meshward module: `root_id` and `vm_id`
/// are the module name, so every filter instance of one module shares its state.
pub fn wasm_filter(module_path: &Path, module_name: &str, configuration: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": module_name,
                "root_id": module_name,
                "vm_config": {
                    "vm_id": module_name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module_path.to_string_lossy()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                }
            }
        }
    })
}

/// Envoy's own `local_ratelimit` filter (the native baseline in benchmarks).
pub fn native_local_ratelimit(max_tokens: u64, tokens_per_fill: u64, fill_interval: &str) -> Value {
    json!({
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "native_local_rate_limit",
            "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": tokens_per_fill, "fill_interval": fill_interval},
            "filter_enabled": {"runtime_key": "local_rate_limit_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "local_rate_limit_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}}
        }
    })
}

#[derive(Debug, Clone)]
pub struct Bootstrap {
    upstream_port: u16,
    http_filters: Vec<Value>,
    /// Listener port; 0 lets the kernel choose (read back with `Envoy::port`).
    listener_port: u16,
    admin_port: u16,
    /// Answer 200 "ok" from Envoy itself instead of routing upstream (benchmarks).
    direct_response: bool,
}

impl Bootstrap {
    pub fn new(upstream_port: u16) -> Self {
        Self {
            upstream_port,
            http_filters: Vec::new(),
            listener_port: 0,
            admin_port: 0,
            direct_response: false,
        }
    }

    pub fn http_filter(mut self, filter: Value) -> Self {
        self.http_filters.push(filter);
        self
    }

    /// Adds a built Meshward module (`meshward_ratelimit`, ...) with its JSON config.
    pub fn meshward_filter(self, module_name: &str, configuration: &str) -> Result<Self, String> {
        let module = crate::paths::wasm_module(module_name)?;
        Ok(self.http_filter(wasm_filter(&module, module_name, configuration)))
    }

    /// Envoy answers 200 itself; filters still run, no upstream is involved.
    pub fn direct_response(mut self) -> Self {
        self.direct_response = true;
        self
    }

    pub fn fixed_ports(mut self, listener_port: u16, admin_port: u16) -> Self {
        self.listener_port = listener_port;
        self.admin_port = admin_port;
        self
    }

    /// The bootstrap with its listener served from a file (filesystem LDS) instead of
    /// static resources: write [`Bootstrap::lds_file`] output to `lds_path` (by rename)
    /// to push a new listener config at runtime.
    pub fn to_json_with_lds(&self, lds_path: &Path) -> Value {
        let mut config = self.to_json();
        if let Some(resources) = config
            .get_mut("static_resources")
            .and_then(Value::as_object_mut)
        {
            resources.remove("listeners");
        }
        config["dynamic_resources"] = json!({
            "lds_config": {"path_config_source": {"path": lds_path.to_string_lossy()}, "resource_api_version": "V3"}
        });
        config
    }

    /// A filesystem-LDS document holding this bootstrap's listener.
    pub fn lds_file(&self, version: &str) -> Value {
        let mut listener = self.listener_json();
        listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
        json!({"version_info": version, "resources": [listener]})
    }

    fn listener_json(&self) -> Value {
        self.to_json()
            .pointer("/static_resources/listeners/0")
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn to_json(&self) -> Value {
        let mut filters = self.http_filters.clone();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let route = if self.direct_response {
            json!({"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}})
        } else {
            json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}})
        };
        json!({
            "node": {"id": "meshward-e2e", "cluster": "meshward-e2e"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "stats_config": {"stats_tags": meshward_stats_tags()},
            "static_resources": {
                "listeners": [{
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.listener_port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "route_config": {"virtual_hosts": [{
                                "name": "all", "domains": ["*"],
                                "routes": [route]
                            }]},
                            "http_filters": filters
                        }
                    }]}]
                }],
                "clusters": [{
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.upstream_port}}
                    }}]}]}
                }]
            }
        })
    }
}
