//! Envoy bootstraps for tests, the demo and benchmarks. By default one HTTP listener
//! `ingress` (port 0, resolved after start) routes everything to the cluster
//! `upstream`; tests that need more add listeners (with a traffic direction, their own
//! filters and an access log) and clusters.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Tag extraction for Meshward metric names, so Prometheus gets
/// `meshward_ratelimit_rule_allowed{meshward_rule="..."}`,
/// `meshward_trace_inject_restarted{meshward_reason="..."}`,
/// `meshward_authz_denied{meshward_reason="..."}` and
/// `meshward_authz_provider_rejected{meshward_provider="...",meshward_reason="..."}`.
/// Envoy matches each regex against the full name, removes the first capture group
/// from it and takes the second as the tag value; a tag name may appear only once,
/// hence one `meshward_reason` regex with alternatives.
/// Mirrored in examples/envoy/*.yaml.
pub fn meshward_stats_tags() -> Value {
    json!([
        {"tag_name": "meshward_rule", "regex": "^wasmcustom\\.meshward\\.[a-z_]+\\.rule\\.(([^.]+)\\.)[a-z_]+$"},
        {"tag_name": "meshward_provider", "regex": "^wasmcustom\\.meshward\\.authz\\.provider\\.(([^.]+)\\.)[a-z_]+(?:\\.[a-z_]+)?$"},
        {"tag_name": "meshward_reason", "regex": "^wasmcustom\\.meshward\\.(?:[a-z_]+\\.restarted|authz\\.denied|authz\\.provider\\.[^.]+\\.rejected)(\\.([a-z0-9_]+))$"}
    ])
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

/// A built Meshward module as an HTTP filter entry.
pub fn meshward_filter(module_name: &str, configuration: &str) -> Result<Value, String> {
    Ok(wasm_filter(
        &crate::paths::wasm_module(module_name)?,
        module_name,
        configuration,
    ))
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

/// One HTTP listener.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    /// 0: the kernel chooses (read back with `Envoy::listener_port`).
    pub port: u16,
    /// `INBOUND` / `OUTBOUND` (Envoy's `traffic_direction`, seen by filters as the
    /// `listener_direction` property).
    pub direction: Option<&'static str>,
    pub http_filters: Vec<Value>,
    /// Route target; `None` answers 200 "ok" from Envoy itself (benchmarks).
    pub cluster: Option<String>,
    /// File access log with this format (a newline is appended).
    pub access_log: Option<(PathBuf, String)>,
}

impl Listener {
    pub fn new(name: &str, cluster: &str) -> Self {
        Self {
            name: name.into(),
            port: 0,
            direction: None,
            http_filters: Vec::new(),
            cluster: Some(cluster.into()),
            access_log: None,
        }
    }

    pub fn direction(mut self, direction: &'static str) -> Self {
        self.direction = Some(direction);
        self
    }

    pub fn http_filter(mut self, filter: Value) -> Self {
        self.http_filters.push(filter);
        self
    }

    pub fn access_log(mut self, path: &Path, format: &str) -> Self {
        self.access_log = Some((path.to_path_buf(), format.to_owned()));
        self
    }

    fn to_json(&self) -> Value {
        let route = match &self.cluster {
            Some(cluster) => {
                json!({"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "10s"}})
            }
            None => {
                json!({"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}})
            }
        };
        let mut filters = self.http_filters.clone();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let mut manager = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": self.name,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
            "http_filters": filters
        });
        if let Some((path, format)) = &self.access_log {
            manager["access_log"] = json!([{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": path.to_string_lossy(),
                    "log_format": {"text_format_source": {"inline_string": format!("{format}\n")}}
                }
            }]);
        }
        let mut listener = json!({
            "name": self.name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]
        });
        if let Some(direction) = self.direction {
            listener["traffic_direction"] = json!(direction);
        }
        listener
    }
}

#[derive(Debug, Clone)]
pub struct Bootstrap {
    listeners: Vec<Listener>,
    /// (name, port, speaks HTTP/2 — gRPC services).
    clusters: Vec<(String, u16, bool)>,
    admin_port: u16,
}

impl Bootstrap {
    /// Listener `ingress` → cluster `upstream` at 127.0.0.1:`upstream_port`.
    pub fn new(upstream_port: u16) -> Self {
        Self {
            listeners: vec![Listener::new("ingress", "upstream")],
            clusters: vec![("upstream".into(), upstream_port, false)],
            admin_port: 0,
        }
    }

    /// No listener and no cluster yet.
    pub fn empty() -> Self {
        Self {
            listeners: Vec::new(),
            clusters: Vec::new(),
            admin_port: 0,
        }
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.into(), port, false));
        self
    }

    /// A cluster speaking HTTP/2, for gRPC services (rate-limit service, store, xDS).
    pub fn grpc_cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.into(), port, true));
        self
    }

    /// Adds an HTTP filter to the first listener.
    pub fn http_filter(mut self, filter: Value) -> Self {
        if let Some(first) = self.listeners.first_mut() {
            first.http_filters.push(filter);
        }
        self
    }

    /// Adds a built Meshward module (`meshward_ratelimit`, ...) to the first listener.
    pub fn meshward_filter(self, module_name: &str, configuration: &str) -> Result<Self, String> {
        Ok(self.http_filter(meshward_filter(module_name, configuration)?))
    }

    /// Adds the filter `module_name` with `configuration`, packaged as `packaging` says.
    pub fn packaged_filter(
        self,
        packaging: crate::Packaging,
        module_name: &str,
        configuration: &str,
    ) -> Result<Self, String> {
        Ok(self.http_filter(packaging.filter(module_name, configuration)?))
    }

    /// The first listener answers 200 itself; filters still run, no upstream involved.
    pub fn direct_response(mut self) -> Self {
        if let Some(first) = self.listeners.first_mut() {
            first.cluster = None;
        }
        self
    }

    pub fn fixed_ports(mut self, listener_port: u16, admin_port: u16) -> Self {
        if let Some(first) = self.listeners.first_mut() {
            first.port = listener_port;
        }
        self.admin_port = admin_port;
        self
    }

    /// The bootstrap with its listeners served from a file (filesystem LDS) instead of
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

    /// A filesystem-LDS document holding this bootstrap's listeners.
    pub fn lds_file(&self, version: &str) -> Value {
        let resources: Vec<Value> = self
            .listeners
            .iter()
            .map(|listener| {
                let mut resource = listener.to_json();
                resource["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
                resource
            })
            .collect();
        json!({"version_info": version, "resources": resources})
    }

    pub fn to_json(&self) -> Value {
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, port, http2)| {
                let mut cluster = json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
                    }}]}]}
                });
                if *http2 {
                    cluster["typed_extension_protocol_options"] = json!({
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}}
                        }
                    });
                }
                cluster
            })
            .collect();
        json!({
            "node": {"id": "meshward-e2e", "cluster": "meshward-e2e"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "stats_config": {"stats_tags": meshward_stats_tags()},
            "static_resources": {
                "listeners": self.listeners.iter().map(Listener::to_json).collect::<Vec<_>>(),
                "clusters": clusters
            }
        })
    }
}
