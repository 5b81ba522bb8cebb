//! The trace-inject filter at both sidecar hops of a workload, in a real Envoy:
//!
//! client → [inbound listener, filter] → careless app → [outbound listener, filter]
//!        → recording upstream
//!
//! The app copies its inbound headers verbatim onto each outbound call, so everything
//! the upstream sees about the trace comes from the filter's work at the two hops.
//!
//! Every test runs twice, against the filter's own module (`separate::…`) and against
//! the bundle `meshward_bundle` with only its `traceInject` section (`bundle::…`), with
//! the same assertions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use meshward_e2e::apps::careless_app;
use meshward_e2e::{
    Bootstrap, Envoy, EnvoyOptions, Listener, Packaging, RecordedRequest, RecordingUpstream,
    Request, Response,
};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const LOG_FORMAT: &str = "%REQ(:PATH)% trace_id=%FILTER_STATE(wasm.meshward_trace_id:PLAIN)% span_id=%FILTER_STATE(wasm.meshward_span_id:PLAIN)%";

struct Mesh {
    upstream: RecordingUpstream,
    app: RecordingUpstream,
    envoy: Envoy,
    log: PathBuf,
    inbound: u16,
}

fn mesh(packaging: Packaging, config: &str) -> Mesh {
    let upstream = RecordingUpstream::start().unwrap();
    let outbound_port = Arc::new(AtomicU16::new(0));
    let app = careless_app(outbound_port.clone()).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "meshward-trace-{}-{}",
        std::process::id(),
        app.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let filter = packaging.filter("meshward_trace_inject", config).unwrap();
    let bootstrap = Bootstrap::empty()
        .cluster("app", app.port())
        .cluster("upstream", upstream.port())
        .listener(
            Listener::new("inbound", "app")
                .direction("INBOUND")
                .http_filter(filter.clone())
                .access_log(&log, LOG_FORMAT),
        )
        .listener(
            Listener::new("outbound", "upstream")
                .direction("OUTBOUND")
                .http_filter(filter)
                .access_log(&log, LOG_FORMAT),
        );
    let envoy = Envoy::start(&bootstrap, &EnvoyOptions::default()).unwrap();
    outbound_port.store(envoy.listener_port("outbound").unwrap(), Ordering::SeqCst);
    let inbound = envoy.listener_port("inbound").unwrap();
    Mesh {
        upstream,
        app,
        envoy,
        log,
        inbound,
    }
}

impl Mesh {
    fn send(&self, request: Request) -> Response {
        let response = request.send(self.inbound).unwrap();
        assert_eq!(response.status, 200, "{}", response.body_text());
        response
    }

    /// (trace id, parent id, flags) of a recorded request's traceparent, validated.
    fn traceparent(request: &RecordedRequest) -> (String, String, String) {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter(|(k, _)| k == "traceparent")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            values.len(),
            1,
            "exactly one traceparent: {:?}",
            request.headers
        );
        let parts: Vec<&str> = values[0].split('-').collect();
        assert_eq!(parts.len(), 4, "{}", values[0]);
        assert_eq!(parts[0], "00");
        assert!(
            parts[1].len() == 32
                && parts[1]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && parts[1] != "0".repeat(32)
        );
        assert!(
            parts[2].len() == 16
                && parts[2]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && parts[2] != "0".repeat(16)
        );
        assert_eq!(parts[3].len(), 2);
        (parts[1].into(), parts[2].into(), parts[3].into())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn no_traceparent_gets_a_new_valid_one_and_a_request_id(packaging: Packaging) {
    let mesh = mesh(packaging, "{}");
    let response = mesh.send(Request::get("/"));
    let at_app = &mesh.app.requests()[0];
    let at_upstream = &mesh.upstream.requests()[0];
    let (trace_app, parent_app, flags) = Mesh::traceparent(at_app);
    let (trace_up, parent_up, _) = Mesh::traceparent(at_upstream);
    assert_eq!(
        flags, "03",
        "new traces are sampled (ratio 1) and their ids random"
    );
    assert_eq!(trace_app, trace_up);
    assert_ne!(
        parent_app, parent_up,
        "each hop is a participant with its own span id"
    );
    assert!(at_upstream
        .header("x-request-id")
        .is_some_and(|id| id.len() == 36));
    let traceresponse = response
        .header("traceresponse")
        .expect("traceresponse on the inbound hop");
    assert_eq!(
        traceresponse,
        format!("00-{trace_app}-{parent_app}-03"),
        "names the inbound hop's span"
    );
}

fn a_valid_context_keeps_its_trace_id_and_tracestate_with_new_parent_ids_per_hop(
    packaging: Packaging,
) {
    let mesh = mesh(packaging, "{}");
    mesh.send(
        Request::get("/")
            .header("traceparent", PARENT)
            .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    );
    let (trace_app, parent_app, flags_app) = Mesh::traceparent(&mesh.app.requests()[0]);
    let (trace_up, parent_up, _) = Mesh::traceparent(&mesh.upstream.requests()[0]);
    assert_eq!((trace_app.as_str(), trace_up.as_str()), (TRACE, TRACE));
    assert_eq!(flags_app, "01", "flags inherited");
    assert!(
        parent_app != "00f067aa0ba902b7"
            && parent_up != "00f067aa0ba902b7"
            && parent_app != parent_up
    );
    for request in [&mesh.app.requests()[0], &mesh.upstream.requests()[0]] {
        assert_eq!(
            request.header("tracestate"),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
    }
    assert_eq!(
        mesh.envoy
            .counter("wasmcustom.meshward.trace_inject.propagated"),
        2
    );
}

fn three_outbound_calls_share_the_trace_id_with_three_parent_ids(packaging: Packaging) {
    let mesh = mesh(packaging, "{}");
    mesh.send(Request::get("/?calls=3").header("traceparent", PARENT));
    let calls = mesh.upstream.requests();
    assert_eq!(calls.len(), 3);
    let parents: std::collections::BTreeSet<String> = calls
        .iter()
        .map(|call| {
            let (trace, parent, _) = Mesh::traceparent(call);
            assert_eq!(trace, TRACE);
            parent
        })
        .collect();
    assert_eq!(parents.len(), 3, "{parents:?}");
    let (_, inbound_span, _) = Mesh::traceparent(&mesh.app.requests()[0]);
    assert!(!parents.contains(&inbound_span));
}

fn invalid_or_duplicated_traceparent_restarts_the_trace(packaging: Packaging) {
    let mesh = mesh(packaging, "{}");
    let invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    mesh.send(
        Request::get("/")
            .header("traceparent", invalid)
            .header("tracestate", "congo=t61rcWkgMzE"),
    );
    mesh.send(
        Request::get("/")
            .header("traceparent", PARENT)
            .header("traceparent", PARENT),
    );
    for request in mesh
        .app
        .requests()
        .iter()
        .chain(mesh.upstream.requests().iter())
    {
        let (trace, _, _) = Mesh::traceparent(request);
        assert_ne!(trace, TRACE, "a new trace id");
        assert_eq!(
            request.header("tracestate"),
            None,
            "tracestate dropped with the restart"
        );
    }
    assert_eq!(
        mesh.envoy
            .counter("wasmcustom.meshward.trace_inject.restarted.invalid_traceparent"),
        1
    );
    assert_eq!(
        mesh.envoy
            .counter("wasmcustom.meshward.trace_inject.restarted.duplicate_traceparent"),
        1
    );
    let prometheus = mesh.envoy.prometheus().unwrap();
    let series = r#"meshward_trace_inject_restarted{meshward_reason="duplicate_traceparent"}"#;
    assert_eq!(
        meshward_e2e::stats::prometheus_value(&prometheus, series),
        Some(1.0),
        "{prometheus}"
    );
}

fn b3_only_requests_get_a_valid_traceparent_and_b3_when_configured(packaging: Packaging) {
    let mesh = mesh(packaging, r#"{"outbound":{"emit":["w3c","b3Multi"]}}"#);
    mesh.send(
        Request::get("/").header("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    );
    let at_app = &mesh.app.requests()[0];
    let (trace, _, flags) = Mesh::traceparent(at_app);
    assert_eq!(trace, "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(flags, "01");
    assert_eq!(
        at_app.header("b3"),
        None,
        "inbound emits W3C only: the stale b3 is removed"
    );
    let at_upstream = &mesh.upstream.requests()[0];
    let (trace_up, parent_up, _) = Mesh::traceparent(at_upstream);
    assert_eq!(trace_up, trace);
    assert_eq!(
        at_upstream.header("x-b3-traceid"),
        Some("80f198ee56343ba864fe8b2a57d3eff7"),
        "{:?}",
        at_upstream.headers
    );
    assert_eq!(at_upstream.header("x-b3-spanid"), Some(parent_up.as_str()));
    assert_eq!(at_upstream.header("x-b3-sampled"), Some("1"));
    assert_eq!(
        mesh.envoy
            .counter("wasmcustom.meshward.trace_inject.converted_from_b3"),
        1
    );
}

fn baggage_and_request_ids(packaging: Packaging) {
    let mesh = mesh(
        packaging,
        r#"{"baggage":{"allowKeys":["tenant"],"toHeaders":[{"key":"tenant","header":"x-tenant"}]},"requestId":{"fromTraceId":true,"header":"x-correlation-id"}}"#,
    );
    mesh.send(
        Request::get("/")
            .header("traceparent", PARENT)
            .header("baggage", "tenant=acme%20corp,secret=s3cr3t"),
    );
    let at_app = &mesh.app.requests()[0];
    assert_eq!(at_app.header("baggage"), Some("tenant=acme%20corp"));
    assert_eq!(at_app.header("x-tenant"), Some("acme corp"));
    assert_eq!(
        at_app.header("x-correlation-id"),
        Some("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
    );
    assert!(
        at_app.header("x-request-id").is_some(),
        "Envoy's own request id is left alone"
    );
    assert_eq!(
        mesh.envoy
            .counter("wasmcustom.meshward.trace_inject.baggage_dropped"),
        1
    );
}

fn the_access_log_line_carries_the_trace_id(packaging: Packaging) {
    let mesh = mesh(packaging, "{}");
    mesh.send(Request::get("/logged").header("traceparent", PARENT));
    let (_, inbound_span, _) = Mesh::traceparent(&mesh.app.requests()[0]);
    // Envoy flushes access logs periodically; wait for both hops' lines.
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&mesh.log).unwrap_or_default();
        if log.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let inbound_line = log
        .lines()
        .find(|line| line.starts_with("/logged "))
        .unwrap_or_else(|| panic!("no inbound line in:\n{log}"));
    assert_eq!(
        inbound_line,
        format!("/logged trace_id={TRACE} span_id={inbound_span}")
    );
    assert!(
        log.lines().any(
            |line| line.starts_with("/downstream/0 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 ")
        ),
        "{log}"
    );
}

meshward_e2e::packaged_tests!(
    no_traceparent_gets_a_new_valid_one_and_a_request_id,
    a_valid_context_keeps_its_trace_id_and_tracestate_with_new_parent_ids_per_hop,
    three_outbound_calls_share_the_trace_id_with_three_parent_ids,
    invalid_or_duplicated_traceparent_restarts_the_trace,
    b3_only_requests_get_a_valid_traceparent_and_b3_when_configured,
    baggage_and_request_ids,
    the_access_log_line_carries_the_trace_id,
);
