//! What `cargo xtask demo` runs and prints, kept here so the e2e suite checks the very
//! same config file and the requests behind the printed curl lines.

/// The static-configuration example (filters carry their JSON).
pub const CONFIG: &str = "examples/envoy/ratelimit-demo.yaml";
/// What the demo runs: Envoy taking its filter configs from the control plane.
pub const CONTROL_PLANE_CONFIG: &str = "examples/envoy/control-plane-demo.yaml";
pub const POLICY_DIR: &str = "examples/policies";
pub const XDS_PORT: u16 = 18000;
pub const CONTROL_PLANE_HTTP_PORT: u16 = 18001;
pub const LISTENER_PORT: u16 = 10000;
pub const ADMIN_PORT: u16 = 9901;
pub const UPSTREAM_PORT: u16 = 18080;

pub const CURL_LINES: &str = r#"
# 1. Token bucket per client address on /hello (burst 5, then 1 every 10 s): 200s turn into 429s
for i in $(seq 1 7); do curl -s -o /dev/null -w "%{http_code}\n" http://127.0.0.1:10000/hello; done

# 2. A limited reply: problem+json body, Retry-After, RateLimit and RateLimit-Policy
curl -i http://127.0.0.1:10000/hello

# 3. Sliding window per API key on /api/ (3 per minute): alice is limited, bob is not, /hello's bucket is untouched
for i in 1 2 3 4; do curl -s -o /dev/null -w "alice %{http_code}\n" -H 'x-api-key: alice' http://127.0.0.1:10000/api/orders; done
curl -s -o /dev/null -w "bob %{http_code}\n" -H 'x-api-key: bob' http://127.0.0.1:10000/api/orders

# 4. Shadow rule on /login: never 429, but its shadow_limited counter moves
for i in 1 2 3 4; do curl -s -o /dev/null -w "%{http_code}\n" http://127.0.0.1:10000/login; done

# 5. Trace context: the upstream sees a traceparent with the same trace id and a new span id, the reply a traceresponse
curl -s -D - -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' http://127.0.0.1:10000/api/trace | grep -iE 'traceresponse|"traceparent"|"tracestate"'

# 6. Idempotency-Key on /orders: the first POST executes, the retry is replayed (Idempotent-Replayed: true),
#    the same key with another body is 422, and a POST without a key is 400
curl -s -i -X POST -H 'Idempotency-Key: "order-1"' -d '{"qty":1}' http://127.0.0.1:10000/orders | head -1
curl -s -i -X POST -H 'Idempotency-Key: "order-1"' -d '{"qty":1}' http://127.0.0.1:10000/orders | grep -iE '^HTTP|idempotent-replayed'
curl -s -o /dev/null -w "%{http_code}\n" -X POST -H 'Idempotency-Key: "order-1"' -d '{"qty":2}' http://127.0.0.1:10000/orders
curl -s -o /dev/null -w "%{http_code}\n" -X POST -d '{"qty":1}' http://127.0.0.1:10000/orders

# 7. The filters' metrics, as Prometheus scrapes them
curl -s http://127.0.0.1:9901/stats/prometheus | grep '^meshward_'
"#;

/// The demo config with its fixed ports and relative module path replaced, for tests.
pub fn config_for_test(upstream_port: u16) -> Result<String, String> {
    let path = crate::paths::workspace_root().join(CONFIG);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let module = crate::paths::wasm_module("meshward_ratelimit")?;
    let trace_module = crate::paths::wasm_module("meshward_trace_inject")?;
    let idempotency_module = crate::paths::wasm_module("meshward_idempotency")?;
    let replacements = [
        (
            "filename: target/meshward-wasm/meshward_idempotency.wasm".to_string(),
            format!("filename: {}", idempotency_module.display()),
        ),
        (
            "filename: target/meshward-wasm/meshward_trace_inject.wasm".to_string(),
            format!("filename: {}", trace_module.display()),
        ),
        (
            format!("port_value: {ADMIN_PORT}"),
            "port_value: 0".to_string(),
        ),
        (
            format!("port_value: {LISTENER_PORT}"),
            "port_value: 0".to_string(),
        ),
        (
            format!("port_value: {UPSTREAM_PORT}"),
            format!("port_value: {upstream_port}"),
        ),
        (
            "filename: target/meshward-wasm/meshward_ratelimit.wasm".to_string(),
            format!("filename: {}", module.display()),
        ),
    ];
    let mut text = text;
    for (from, to) in replacements {
        if !text.contains(&from) {
            return Err(format!(
                "{CONFIG} no longer contains {from:?}; update e2e/src/demo.rs"
            ));
        }
        text = text.replace(&from, &to);
    }
    Ok(text)
}

/// The control-plane demo bootstrap with its fixed ports replaced, for tests.
pub fn control_plane_config_for_test(upstream_port: u16, xds_port: u16) -> Result<String, String> {
    let path = crate::paths::workspace_root().join(CONTROL_PLANE_CONFIG);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let replacements = [
        (
            format!("port_value: {ADMIN_PORT}"),
            "port_value: 0".to_string(),
        ),
        (
            format!("port_value: {LISTENER_PORT}"),
            "port_value: 0".to_string(),
        ),
        (
            format!("port_value: {UPSTREAM_PORT}"),
            format!("port_value: {upstream_port}"),
        ),
        (
            format!("port_value: {XDS_PORT}"),
            format!("port_value: {xds_port}"),
        ),
    ];
    let mut text = text;
    for (from, to) in replacements {
        if !text.contains(&from) {
            return Err(format!(
                "{CONTROL_PLANE_CONFIG} no longer contains {from:?}"
            ));
        }
        text = text.replace(&from, &to);
    }
    Ok(text)
}
