//! `cargo xtask demo`'s config (examples/envoy/ratelimit-demo.yaml) in a real Envoy,
//! driven with the same requests as the curl lines the demo prints.

use meshward_e2e::{demo, Envoy, EnvoyOptions, RecordingUpstream, Request};

#[test]
fn the_printed_curl_lines_show_200s_turning_into_429s() {
    for fragment in [
        "/hello",
        "x-api-key: alice",
        "x-api-key: bob",
        "/login",
        "/stats/prometheus",
    ] {
        assert!(
            demo::CURL_LINES.contains(fragment),
            "the demo no longer prints {fragment:?}; update this test"
        );
    }
    let upstream = RecordingUpstream::start().unwrap();
    let envoy = Envoy::start_yaml(
        &demo::config_for_test(upstream.port()).unwrap(),
        &EnvoyOptions::default(),
    )
    .unwrap();
    let port = envoy.port();
    let get = |request: Request| request.send(port).unwrap();

    // 1. per-client token bucket, burst 5
    let statuses: Vec<u16> = (0..7).map(|_| get(Request::get("/hello")).status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);

    // 2. the limited reply
    let limited = get(Request::get("/hello"));
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some(r#""per-client";q=1;w=10"#)
    );
    assert!(limited
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""per-client";r=0;t="#));
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");

    // 3. per-API-key sliding window, independent of /hello
    let alice: Vec<u16> = (0..4)
        .map(|_| get(Request::get("/api/orders").header("x-api-key", "alice")).status)
        .collect();
    assert_eq!(alice, [200, 200, 200, 429]);
    assert_eq!(
        get(Request::get("/api/orders").header("x-api-key", "bob")).status,
        200
    );
    let allowed = get(Request::get("/api/orders").header("x-api-key", "carol"));
    assert!(
        allowed
            .header("ratelimit")
            .unwrap()
            .starts_with(r#""per-api-key";r=2;t="#),
        "onAllowed fields"
    );

    // 4. shadow rule
    let login: Vec<u16> = (0..4).map(|_| get(Request::get("/login")).status).collect();
    assert_eq!(login, [200, 200, 200, 200]);

    // 5. trace context through the same chain (also on the 429 from the rate limiter)
    let traced = get(Request::get("/api/trace").header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    assert_eq!(traced.status, 200);
    let seen = traced.json().unwrap();
    let traceparent = seen["headers"]["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && !traceparent.contains("00f067aa0ba902b7"),
        "{traceparent}"
    );
    let span = &traceparent[36..52];
    assert_eq!(seen["headers"]["tracestate"], format!("meshward={span}"));
    assert_eq!(
        traced.header("traceresponse"),
        Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01").as_str())
    );
    assert_eq!(
        traced.header("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(
        limited.header("traceresponse").is_some(),
        "the 429 went through trace-inject on its way out"
    );

    // 6. idempotency on /orders
    let order =
        || Request::post("/orders", br#"{"qty":1}"#).header("idempotency-key", "\"order-1\"");
    let first = get(order());
    assert_eq!(first.status, 200);
    assert!(first.header("idempotent-replayed").is_none());
    let again = get(order());
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (200, Some("true"))
    );
    assert_eq!(again.body, first.body, "byte-identical replay");
    let other =
        get(Request::post("/orders", br#"{"qty":2}"#).header("idempotency-key", "\"order-1\""));
    assert_eq!(other.status, 422);
    assert_eq!(get(Request::post("/orders", b"")).status, 400);

    // 7. metrics
    let prometheus = envoy.prometheus().unwrap();
    let value = |series: &str| meshward_e2e::stats::prometheus_value(&prometheus, series);
    assert_eq!(
        value(r#"meshward_ratelimit_rule_limited{meshward_rule="per-client"}"#),
        Some(3.0)
    );
    assert_eq!(
        value(r#"meshward_ratelimit_rule_limited{meshward_rule="per-api-key"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(r#"meshward_ratelimit_rule_shadow_limited{meshward_rule="login-dry-run"}"#),
        Some(2.0)
    );
    assert_eq!(value("meshward_trace_inject_propagated{}"), Some(1.0));
    assert_eq!(value("meshward_idempotency_replays{}"), Some(1.0));
    assert_eq!(upstream.hits(), 5 + 3 + 2 + 1 + 4 + 1);
}

/// What `cargo xtask demo` runs now: the control plane serving examples/policies/ and
/// Envoy from examples/envoy/control-plane-demo.yaml. The same requests behave the same
/// way, and editing a policy file (in a copy) changes the behaviour live.
#[test]
fn the_control_plane_demo_serves_the_example_policies_and_takes_edits_live() {
    let policies = tempfile::tempdir().unwrap();
    let source = meshward_e2e::paths::workspace_root().join(demo::POLICY_DIR);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.path().join(path.file_name().unwrap())).unwrap();
    }
    let control = meshward_e2e::control_plane::ControlPlane::start(policies.path()).unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let envoy = Envoy::start_yaml(
        &demo::control_plane_config_for_test(upstream.port(), control.xds_port()).unwrap(),
        &EnvoyOptions::default(),
    )
    .unwrap();
    let port = envoy.port();
    let get = |request: Request| request.send(port).unwrap();

    let statuses: Vec<u16> = (0..7).map(|_| get(Request::get("/hello")).status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let traced = get(Request::get("/api/trace").header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ));
    assert!(
        traced.header("traceresponse").is_some(),
        "{:?}",
        traced.headers
    );
    let order =
        || Request::post("/orders", br#"{"qty":1}"#).header("idempotency-key", "\"order-1\"");
    assert_eq!(get(order()).status, 200);
    assert_eq!(get(order()).header("idempotent-replayed"), Some("true"));
    assert_eq!(get(Request::post("/orders", b"{}")).status, 400);

    // Live edit: /hello's burst 5 → 2, for a client the bucket has not seen.
    let file = policies.path().join("ratelimit.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("burst: 5"));
    std::fs::write(&file, text.replace("burst: 5", "burst: 2")).unwrap();
    let started = std::time::Instant::now();
    for client in 10u8.. {
        // A client address the bucket has never seen, every probe.
        let ip = format!("127.0.0.{client}");
        let statuses: Vec<u16> = (0..3)
            .map(|_| get(Request::get("/hello").from_ip(&ip)).status)
            .collect();
        if statuses == [200, 200, 429] {
            break;
        }
        assert_eq!(statuses, [200, 200, 200], "old or new limit, nothing else");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15) && client < 250,
            "the edit was not applied: {statuses:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
