//! The idempotency filter in a real Envoy (2 workers) in front of a recording upstream:
//! exactly-once execution under concurrency, byte-identical replays, payload
//! mismatches, caller scoping, release on upstream failure, oversized responses, TTL,
//! required keys, and bounded memory. Every test runs twice, against the filter's own
//! module (`separate::…`) and against the bundle `meshward_bundle` with only its
//! `idempotency` section (`bundle::…`), with the same assertions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshward_e2e::upstream::TRUNCATE_HEADER;

use meshward_e2e::{
    Bootstrap, Envoy, EnvoyOptions, Packaging, RecordedRequest, RecordingUpstream, Reply, Request,
    Response,
};

const CONFIG: &str = r#"{
  "routes": [
    {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "key": "required"},
    {"name": "other", "match": {"path": {"prefix": "/"}}}
  ],
  "maxResponseBytes": 4096
}"#;

/// `/slow…` answers after 300 ms (`/slower…` after 2 s), `…/reset…` resets the first time, `/cut…` dies
/// mid-body, `/big…` sends 100 kB; everything else is the JSON echo.
fn upstream() -> RecordingUpstream {
    let resets = Arc::new(AtomicUsize::new(0));
    RecordingUpstream::start_with(
        "127.0.0.1:0",
        Arc::new(move |request: &RecordedRequest| {
            if request.path.starts_with("/slower") {
                std::thread::sleep(Duration::from_millis(2000));
            } else if request.path.starts_with("/slow") {
                std::thread::sleep(Duration::from_millis(300));
            }
            if request.path.contains("/reset") && resets.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::reset();
            }
            if request.path.starts_with("/cut") {
                let headers = vec![
                    ("content-type".into(), "text/plain".into()),
                    (TRUNCATE_HEADER.into(), "100".into()),
                ];
                return Reply {
                    status: 200,
                    headers,
                    body: vec![b'y'; 1000],
                };
            }
            if request.path.starts_with("/big") {
                return Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: vec![b'x'; 100_000],
                };
            }
            let mut reply = Reply::echo(request);
            reply.status = 201;
            reply.headers.push(("location".into(), "/orders/42".into()));
            reply
                .headers
                .push(("set-cookie".into(), "session=secret".into()));
            reply
        }),
    )
    .unwrap()
}

fn start(packaging: Packaging, config: &str) -> (RecordingUpstream, Envoy) {
    let upstream = upstream();
    let bootstrap = Bootstrap::new(upstream.port())
        .packaged_filter(packaging, "meshward_idempotency", config)
        .unwrap();
    let envoy = Envoy::start(&bootstrap, &EnvoyOptions::default()).unwrap();
    (upstream, envoy)
}

fn post(path: &str, key: &str, body: &str, principal: &str) -> Request {
    Request::post(path, body.as_bytes())
        .header("idempotency-key", &format!("\"{key}\""))
        .header("x-meshward-principal", principal)
        .header("content-type", "application/json")
}

fn send(envoy: &Envoy, request: Request) -> Response {
    request.send(envoy.port()).unwrap()
}

fn fifty_concurrent_identical_posts_execute_once(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, CONFIG);
    let port = envoy.port();
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..50)
            .map(|_| {
                scope.spawn(move || {
                    post("/slow/orders", "k-concurrent", "{\"qty\":1}", "alice")
                        .send(port)
                        .unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(upstream.hits(), 1, "exactly one execution");
    let executed: Vec<&Response> = responses
        .iter()
        .filter(|r| r.status == 201 && r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(executed.len(), 1);
    let original = executed[0];
    for response in &responses {
        match response.status {
            409 => assert_eq!(
                response.header("content-type"),
                Some("application/problem+json")
            ),
            201 if response.header("idempotent-replayed").is_some() => {
                assert_eq!(response.body, original.body, "byte-identical replay")
            }
            201 => {}
            other => panic!("unexpected status {other}: {}", response.body_text()),
        }
    }
    assert!(
        responses.iter().filter(|r| r.status == 409).count() >= 1,
        "some arrived while in flight"
    );
    for _ in 0..10 {
        let replay = send(
            &envoy,
            post("/slow/orders", "k-concurrent", "{\"qty\":1}", "alice"),
        );
        assert_eq!(replay.status, 201);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, original.body);
        assert_eq!(replay.header("location"), Some("/orders/42"));
        assert_eq!(
            replay.header("set-cookie"),
            None,
            "cookies are not replayed by default"
        );
    }
    assert_eq!(upstream.hits(), 1);
    assert_eq!(
        envoy.counter("wasmcustom.meshward.idempotency.executions"),
        1
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.idempotency.replays") as usize,
        10 + responses
            .iter()
            .filter(|r| r.header("idempotent-replayed").is_some())
            .count()
    );
}

fn same_key_different_body_is_422_and_leaves_the_record_alone(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, CONFIG);
    let first = send(&envoy, post("/orders", "k1", "{\"qty\":1}", "alice"));
    assert_eq!(first.status, 201);
    let mismatch = send(&envoy, post("/orders", "k1", "{\"qty\":2}", "alice"));
    assert_eq!(mismatch.status, 422);
    assert_eq!(mismatch.json().unwrap()["status"], 422);
    let replay = send(&envoy, post("/orders", "k1", "{\"qty\":1}", "alice"));
    assert_eq!(
        (replay.status, replay.header("idempotent-replayed")),
        (201, Some("true"))
    );
    assert_eq!(replay.body, first.body);
    assert_eq!(upstream.hits(), 1);
}

fn one_key_from_two_principals_executes_twice(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, CONFIG);
    let alice = send(&envoy, post("/orders", "shared", "{}", "alice"));
    let bob = send(&envoy, post("/orders", "shared", "{}", "bob"));
    assert_eq!((alice.status, bob.status), (201, 201));
    assert!(
        alice.header("idempotent-replayed").is_none()
            && bob.header("idempotent-replayed").is_none()
    );
    assert_eq!(upstream.hits(), 2);
}

fn an_upstream_reset_releases_the_key_so_a_retry_executes(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, CONFIG);
    let failed = send(&envoy, post("/reset/orders", "k-reset", "{}", "alice"));
    assert_eq!(
        failed.status,
        503,
        "Envoy reports the reset: {}",
        failed.body_text()
    );
    let retry = send(&envoy, post("/reset/orders", "k-reset", "{}", "alice"));
    assert_eq!(retry.status, 201);
    assert!(retry.header("idempotent-replayed").is_none());
    assert_eq!(upstream.hits(), 2);
    assert_eq!(envoy.counter("wasmcustom.meshward.idempotency.released"), 1);
}

fn an_upstream_dying_mid_response_executed_so_a_retry_does_not_run_it_again(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, CONFIG);
    // The upstream answered 200 and died 100 bytes into 1000: the client sees a broken
    // response, but the request was executed.
    let _ = post("/cut", "k-cut", "{}", "alice").send(envoy.port());
    assert_eq!(upstream.hits(), 1);
    let retry = send(&envoy, post("/cut", "k-cut", "{}", "alice"));
    assert_eq!(retry.status, 409, "{}", retry.body_text());
    assert!(
        retry.body_text().contains("cut off"),
        "{}",
        retry.body_text()
    );
    assert_eq!(upstream.hits(), 1, "not executed twice");
}

fn a_client_that_gives_up_after_forwarding_keeps_the_key_locked(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, r#"{"lockTimeout":"3s"}"#);
    // The upstream takes 300 ms; the client leaves after 50 ms.
    post("/slow/x", "k-gone", "{}", "alice")
        .send_and_abandon(envoy.port(), Duration::from_millis(50))
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let retry = send(&envoy, post("/slow/x", "k-gone", "{}", "alice"));
    assert_eq!(
        retry.status, 409,
        "whether it executed is unknown: locked, not run again"
    );
    std::thread::sleep(Duration::from_millis(3500));
    let later = send(&envoy, post("/slow/x", "k-gone", "{}", "alice"));
    assert_eq!(later.status, 201, "after lockTimeout the key is free");
    assert!(upstream.hits() <= 2);
}

fn a_response_over_the_limit_is_delivered_but_not_replayed(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, CONFIG);
    let big = send(&envoy, post("/big", "k-big", "{}", "alice"));
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 100_000, "delivered in full");
    let retry = send(&envoy, post("/big", "k-big", "{}", "alice"));
    assert_eq!(retry.status, 409);
    assert!(
        retry.body_text().contains("maxResponseBytes"),
        "{}",
        retry.body_text()
    );
    assert_eq!(upstream.hits(), 1, "never executed twice");
    assert_eq!(
        envoy.counter("wasmcustom.meshward.idempotency.uncacheable"),
        1
    );
}

fn after_the_ttl_the_key_executes_again(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, r#"{"ttl":"2s"}"#);
    assert_eq!(send(&envoy, post("/x", "k-ttl", "{}", "alice")).status, 201);
    assert_eq!(
        send(&envoy, post("/x", "k-ttl", "{}", "alice")).header("idempotent-replayed"),
        Some("true")
    );
    std::thread::sleep(Duration::from_millis(2500));
    let again = send(&envoy, post("/x", "k-ttl", "{}", "alice"));
    assert_eq!(again.status, 201);
    assert!(again.header("idempotent-replayed").is_none());
    assert_eq!(upstream.hits(), 2);
}

fn a_required_key_missing_or_malformed_is_400_and_nothing_reaches_the_upstream(
    packaging: Packaging,
) {
    let (upstream, envoy) = start(packaging, CONFIG);
    // Refused from the headers alone, before any body is read: bodiless requests here,
    // because a client still writing a body can see the early reply as a reset.
    let missing = send(&envoy, Request::post("/orders", b""));
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    let malformed = send(
        &envoy,
        Request::post("/orders", b"").header("idempotency-key", "not quoted"),
    );
    assert_eq!(malformed.status, 400);
    let optional_route = send(&envoy, Request::post("/elsewhere", b"{}"));
    assert_eq!(
        optional_route.status, 201,
        "optional routes pass without a key"
    );
    let get = send(&envoy, Request::get("/orders"));
    assert_eq!(get.status, 201, "GET never needs a key");
    assert_eq!(upstream.hits(), 2);
}

fn memory_stays_bounded_with_100k_distinct_keys(packaging: Packaging) {
    let (_upstream, envoy) = start(packaging, r#"{"maxEntries":1000,"maxStoredBytes":1000000}"#);
    let port = envoy.port();
    let run = |prefix: &str, count: usize| {
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let status = post("/x", &format!("{prefix}-{i}"), "{\"n\":1}", "alice")
                        .send(port)
                        .unwrap()
                        .status;
                    assert_eq!(status, 201);
                });
            }
        });
    };
    run("warm", 2_000);
    let before = envoy.allocated_bytes().unwrap();
    run("key", 100_000);
    let after = envoy.allocated_bytes().unwrap();
    let growth = after.saturating_sub(before);
    eprintln!("Envoy heap: {before} → {after} bytes (+{growth}) over 100,000 distinct keys (maxEntries 1000, maxStoredBytes 1 MB)");
    assert!(envoy.counter("wasmcustom.meshward.idempotency.evictions") >= 90_000);
    assert!(growth < 4 * 1024 * 1024, "heap grew by {growth} bytes");
}

fn concurrent(envoy: &Envoy, count: usize, request: impl Fn() -> Request + Sync) -> Vec<Response> {
    let port = envoy.port();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .map(|i| {
                let request = &request;
                scope.spawn(move || {
                    // Let the first one reserve before the duplicates arrive.
                    std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 50 }));
                    request().send(port).unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

fn with_in_flight_wait_duplicates_get_the_result_instead_of_409(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, r#"{"inFlightWait":"3s"}"#);
    let responses = concurrent(&envoy, 20, || post("/slow/pay", "k-wait", "{}", "alice"));
    assert_eq!(upstream.hits(), 1);
    assert!(
        responses.iter().all(|r| r.status == 201),
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let original: Vec<&Response> = responses
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(original.len(), 1);
    for response in &responses {
        assert_eq!(
            response.body, original[0].body,
            "every duplicate got the same bytes"
        );
    }
    assert_eq!(
        envoy.counter("wasmcustom.meshward.idempotency.conflicts"),
        0
    );
}

fn a_short_in_flight_wait_ends_in_409(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, r#"{"inFlightWait":"100ms"}"#);
    let responses = concurrent(&envoy, 5, || post("/slower/pay", "k-short", "{}", "alice"));
    assert_eq!(upstream.hits(), 1);
    assert_eq!(
        responses.iter().filter(|r| r.status == 409).count(),
        4,
        "the upstream takes 2 s, the wait is 100 ms"
    );
}

fn a_waiting_duplicate_executes_when_the_first_attempt_is_released(packaging: Packaging) {
    let (upstream, envoy) = start(packaging, r#"{"inFlightWait":"3s"}"#);
    // The first attempt is reset after 300 ms (Envoy answers 503, the key is released);
    // one waiting duplicate then executes, and the others get its stored result.
    let responses = concurrent(&envoy, 4, || {
        post("/slow/reset", "k-released", "{}", "alice")
    });
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        upstream.hits(),
        2,
        "the reset attempt and exactly one re-execution"
    );
}

fn requests_with_trailers_are_reserved_too(packaging: Packaging) {
    // HTTP/1.1 trailers reach filters only when the connection manager enables them.
    let upstream = upstream();
    let bootstrap = Bootstrap::new(upstream.port())
        .packaged_filter(packaging, "meshward_idempotency", CONFIG)
        .unwrap();
    let mut config = bootstrap.to_json();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_protocol_options"] = serde_json::json!({"enable_trailers": true});
    let envoy = Envoy::start_config(&config, &EnvoyOptions::default()).unwrap();
    let with_trailers = || {
        post("/slow/orders", "k-trailers", "{\"qty\":1}", "alice")
            .trailers(&[("x-checksum", "abc")])
    };
    let port = envoy.port();
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|_| scope.spawn(move || with_trailers().send(port).unwrap()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(
        upstream.hits(),
        1,
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        responses
            .iter()
            .filter(|r| r.status == 201 && r.header("idempotent-replayed").is_none())
            .count(),
        1
    );
    let replay = with_trailers().send(port).unwrap();
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

meshward_e2e::packaged_tests!(
    fifty_concurrent_identical_posts_execute_once,
    same_key_different_body_is_422_and_leaves_the_record_alone,
    one_key_from_two_principals_executes_twice,
    an_upstream_reset_releases_the_key_so_a_retry_executes,
    an_upstream_dying_mid_response_executed_so_a_retry_does_not_run_it_again,
    a_client_that_gives_up_after_forwarding_keeps_the_key_locked,
    a_response_over_the_limit_is_delivered_but_not_replayed,
    after_the_ttl_the_key_executes_again,
    a_required_key_missing_or_malformed_is_400_and_nothing_reaches_the_upstream,
    memory_stays_bounded_with_100k_distinct_keys,
    with_in_flight_wait_duplicates_get_the_result_instead_of_409,
    a_short_in_flight_wait_ends_in_409,
    a_waiting_duplicate_executes_when_the_first_attempt_is_released,
    requests_with_trailers_are_reserved_too,
);
