//! The idempotency filter with `store: remote` (docs/adr/0009): two real Envoys — two
//! replicas of one service — in front of one recording upstream, both keeping their
//! records in the control plane's idempotency store on one Valkey. A retry on the other
//! replica replays the first response byte for byte; 40 concurrent duplicates spread
//! over both execute once; 5xx releases and "completed, not stored" hold across
//! replicas; with Valkey stopped or not answering each replica follows its
//! `failureMode` within its timeout and counts the errors, and after a Valkey restart
//! everything works again without restarting Envoy or the store. Every test runs
//! twice, with the filter's own module (`separate::…`) and with the bundle
//! `meshward_bundle` holding only its `idempotency` section (`bundle::…`), with the
//! same assertions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshward_control_plane::server::{
    start_store, StoreOptions, StoreRunning, StoreServiceOptions,
};
use meshward_e2e::upstream::TRUNCATE_HEADER;
use meshward_e2e::valkey::Valkey;
use meshward_e2e::{
    Bootstrap, Envoy, EnvoyOptions, Packaging, RecordedRequest, RecordingUpstream, Reply, Request,
    Response,
};

/// The filter's per-call timeout (`store.timeout`).
const STORE_TIMEOUT: Duration = Duration::from_millis(100);

fn config(failure_mode: &str, extra: &str) -> String {
    format!(
        r#"{{
  "store": {{"type": "remote", "cluster": "meshward-store", "timeout": "100ms"}},
  "routes": [{{"name": "orders", "match": {{"path": {{"prefix": "/"}}}}, "key": "required"}}],
  "maxResponseBytes": 4096,
  "failureMode": "{failure_mode}"{extra}
}}"#
    )
}

/// The idempotency store in-process (its own runtime), on Valkey.
struct Store {
    runtime: tokio::runtime::Runtime,
    running: Option<StoreRunning>,
}

impl Store {
    fn start(valkey: &Valkey, redis_timeout: Duration) -> Store {
        Store::start_with(
            valkey,
            redis_timeout,
            StoreOptions::on("127.0.0.1:0".parse().unwrap()),
        )
    }

    fn start_with(valkey: &Valkey, redis_timeout: Duration, store: StoreOptions) -> Store {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = runtime
            .block_on(start_store(StoreServiceOptions {
                redis_url: valkey.url(),
                redis_timeout,
                store,
                http_addr: None,
            }))
            .unwrap();
        Store {
            runtime,
            running: Some(running),
        }
    }

    fn port(&self) -> u16 {
        self.running.as_ref().map_or(0, |r| r.store_addr.port())
    }

    fn metrics(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.world.metrics.encode())
            .unwrap_or_default()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

/// `/slow…` answers after 300 ms; `/fail…` answers 500 the first time; `/big…` sends
/// 10 kB (over `maxResponseBytes`); `/mid…` sends 2 kB (under it); `/cut…` dies mid-body; everything else is the JSON
/// echo, 201.
fn upstream() -> RecordingUpstream {
    let failures = Arc::new(AtomicUsize::new(0));
    RecordingUpstream::start_with(
        "127.0.0.1:0",
        Arc::new(move |request: &RecordedRequest| {
            if request.path.starts_with("/slow") {
                std::thread::sleep(Duration::from_millis(300));
            }
            if request.path.starts_with("/fail") && failures.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply {
                    status: 500,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: b"try again".to_vec(),
                };
            }
            if request.path.starts_with("/cut") {
                // Dies 100 bytes into 1000.
                return Reply {
                    status: 200,
                    headers: vec![
                        ("content-type".into(), "text/plain".into()),
                        (TRUNCATE_HEADER.into(), "100".into()),
                    ],
                    body: vec![b'y'; 1000],
                };
            }
            if request.path.starts_with("/mid") {
                return Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: vec![b'm'; 2_000],
                };
            }
            if request.path.starts_with("/big") {
                return Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: vec![b'x'; 10_000],
                };
            }
            let mut reply = Reply::echo(request);
            reply.status = 201;
            reply.headers.push(("location".into(), "/orders/42".into()));
            reply
        }),
    )
    .unwrap()
}

/// One replica: listener → upstream, the idempotency filter (packaged as `packaging`
/// says), and the `meshward-store` cluster (HTTP/2) to the store.
fn replica(
    packaging: Packaging,
    upstream: &RecordingUpstream,
    store_port: u16,
    config: &str,
) -> Envoy {
    let bootstrap = Bootstrap::new(upstream.port())
        .grpc_cluster("meshward-store", store_port)
        .packaged_filter(packaging, "meshward_idempotency", config)
        .unwrap();
    Envoy::start(&bootstrap, &EnvoyOptions::default()).unwrap()
}

struct Fixture {
    valkey: Valkey,
    store: Store,
    upstream: RecordingUpstream,
    a: Envoy,
    b: Envoy,
}

impl Fixture {
    fn start(
        packaging: Packaging,
        config_a: &str,
        config_b: &str,
        redis_timeout: Duration,
    ) -> Fixture {
        let valkey = Valkey::start().unwrap();
        let store = Store::start(&valkey, redis_timeout);
        let upstream = upstream();
        let a = replica(packaging, &upstream, store.port(), config_a);
        let b = replica(packaging, &upstream, store.port(), config_b);
        Fixture {
            valkey,
            store,
            upstream,
            a,
            b,
        }
    }

    fn both(packaging: Packaging, config: &str) -> Fixture {
        Self::start(packaging, config, config, Duration::from_millis(50))
    }
}

fn post(path: &str, key: &str, body: &str) -> Request {
    Request::post(path, body.as_bytes())
        .header("idempotency-key", &format!("\"{key}\""))
        .header("x-meshward-principal", "alice")
        .header("content-type", "application/json")
}

fn counter(envoy: &Envoy, what: &str) -> u64 {
    envoy.counter(&format!("wasmcustom.meshward.idempotency.{what}"))
}

fn a_retry_on_the_other_replica_replays_the_first_response(packaging: Packaging) {
    let f = Fixture::both(packaging, &config("deny", ""));
    let first = post("/orders", "k-ab", "{\"qty\":1}")
        .send(f.a.port())
        .unwrap();
    assert_eq!(first.status, 201, "{}", first.body_text());
    assert!(first.header("idempotent-replayed").is_none());
    let retry = post("/orders", "k-ab", "{\"qty\":1}")
        .send(f.b.port())
        .unwrap();
    assert_eq!(retry.status, 201, "{}", retry.body_text());
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body, "byte-identical replay");
    assert_eq!(retry.header("location"), Some("/orders/42"));
    assert_eq!(retry.header("content-type"), first.header("content-type"));
    // And back on A, and with another payload on B.
    let again = post("/orders", "k-ab", "{\"qty\":1}")
        .send(f.a.port())
        .unwrap();
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let reused = post("/orders", "k-ab", "{\"qty\":2}")
        .send(f.b.port())
        .unwrap();
    assert_eq!(reused.status, 422, "{}", reused.body_text());
    assert_eq!(f.upstream.hits(), 1);
    assert_eq!(counter(&f.a, "executions"), 1);
    assert_eq!(counter(&f.a, "replays"), 1);
    assert_eq!(
        (counter(&f.b, "replays"), counter(&f.b, "mismatches")),
        (1, 1)
    );
    assert_eq!(
        counter(&f.a, "store_errors") + counter(&f.b, "store_errors"),
        0
    );
    let metrics = f.store.metrics();
    for (outcome, n) in [("new", 1), ("completed", 2), ("mismatch", 1)] {
        assert!(
            metrics.contains(&format!(
                "meshward_control_plane_store_reservations_total{{outcome=\"{outcome}\"}} {n}"
            )),
            "{outcome}: {metrics}"
        );
    }
}

fn forty_concurrent_duplicates_over_two_replicas_execute_once(packaging: Packaging) {
    let f = Fixture::both(packaging, &config("deny", ""));
    let ports = [f.a.port(), f.b.port()];
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..40)
            .map(|i| {
                let port = ports[i % 2];
                scope.spawn(move || {
                    post("/slow/orders", "k-forty", "{\"qty\":1}")
                        .send(port)
                        .unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(
        f.upstream.hits(),
        1,
        "exactly one execution across replicas"
    );
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
    for port in ports {
        let replay = post("/slow/orders", "k-forty", "{\"qty\":1}")
            .send(port)
            .unwrap();
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, original.body);
    }
    assert_eq!(f.upstream.hits(), 1);
    assert_eq!(counter(&f.a, "executions") + counter(&f.b, "executions"), 1);
}

fn a_5xx_on_one_replica_releases_the_key_for_a_retry_on_the_other(packaging: Packaging) {
    let f = Fixture::both(packaging, &config("deny", ""));
    let failed = post("/fail/orders", "k-5xx", "{}")
        .send(f.a.port())
        .unwrap();
    assert_eq!(failed.status, 500);
    let retry = post("/fail/orders", "k-5xx", "{}")
        .send(f.b.port())
        .unwrap();
    assert_eq!(retry.status, 201, "released: executed again");
    assert!(retry.header("idempotent-replayed").is_none());
    assert_eq!(f.upstream.hits(), 2);
    assert_eq!(counter(&f.a, "released"), 1);
    let replay = post("/fail/orders", "k-5xx", "{}")
        .send(f.a.port())
        .unwrap();
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, retry.body);
}

fn completed_not_stored_on_one_replica_is_409_on_the_other(packaging: Packaging) {
    let f = Fixture::both(packaging, &config("deny", ""));
    let big = post("/big", "k-big", "{}").send(f.a.port()).unwrap();
    assert_eq!(
        (big.status, big.body.len()),
        (200, 10_000),
        "delivered in full"
    );
    // A not-stored response is delivered without waiting for its record (README): a
    // retry racing the record's write sees "in progress" — a 409 too, never a second
    // execution — and then the reason.
    let started = Instant::now();
    let retry = loop {
        let retry = post("/big", "k-big", "{}").send(f.b.port()).unwrap();
        assert_eq!(retry.status, 409, "{}", retry.body_text());
        if retry.body_text().contains("maxResponseBytes")
            || started.elapsed() > Duration::from_secs(2)
        {
            break retry;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        retry.body_text().contains("maxResponseBytes"),
        "{}",
        retry.body_text()
    );
    assert_eq!(f.upstream.hits(), 1, "never executed twice");
    assert_eq!(counter(&f.a, "uncacheable"), 1);
}

/// The store refuses a response the filter would store (here: a body over the store's
/// `--store-max-response-bytes`): the record becomes "completed, not stored" (as with
/// the embedded store), not a lock that a retry waits out and then executes again.
fn a_response_the_store_refuses_is_completed_not_stored(packaging: Packaging) {
    let valkey = Valkey::start().unwrap();
    let mut options = StoreOptions::on("127.0.0.1:0".parse().unwrap());
    options.max_response_bytes = 1_000;
    let store = Store::start_with(&valkey, Duration::from_millis(50), options);
    let upstream = upstream();
    let config = config("deny", r#", "lockTimeout": "60s""#);
    let a = replica(packaging, &upstream, store.port(), &config);
    let b = replica(packaging, &upstream, store.port(), &config);
    let first = post("/mid", "k-mid", "{}").send(a.port()).unwrap();
    assert_eq!((first.status, first.body.len()), (200, 2_000), "delivered");
    // The second `Complete` ("not stored") is not waited for: give it its round trip.
    let deadline = Instant::now() + Duration::from_secs(2);
    let retry = loop {
        let retry = post("/mid", "k-mid", "{}").send(b.port()).unwrap();
        if retry.body_text().contains("written to the store") || Instant::now() > deadline {
            break retry;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(retry.status, 409, "{}", retry.body_text());
    assert!(
        retry
            .body_text()
            .contains("could not be written to the store"),
        "{}",
        retry.body_text()
    );
    assert_eq!(upstream.hits(), 1, "never executed twice");
    assert_eq!(counter(&a, "store_errors"), 1);
    assert_eq!(counter(&a, "uncacheable"), 1);
    drop((a, b, upstream, store, valkey));
}

fn an_upstream_dying_mid_response_on_one_replica_is_not_run_again_on_the_other(
    packaging: Packaging,
) {
    let f = Fixture::both(packaging, &config("deny", ""));
    // Executed, but the response broke: the client sees a failure.
    let _ = post("/cut", "k-cut", "{}").send(f.a.port());
    assert_eq!(f.upstream.hits(), 1);
    // The record ("executed, not stored") is written on the root context's behalf
    // after the request's context is gone; give it its round trip.
    let deadline = Instant::now() + Duration::from_secs(2);
    let retry = loop {
        let retry = post("/cut", "k-cut", "{}").send(f.b.port()).unwrap();
        if retry.body_text().contains("cut off") || Instant::now() > deadline {
            break retry;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(retry.status, 409, "{}", retry.body_text());
    assert!(
        retry.body_text().contains("cut off"),
        "{}",
        retry.body_text()
    );
    assert_eq!(f.upstream.hits(), 1, "not executed twice");
}

fn with_in_flight_wait_duplicates_on_the_other_replica_get_the_result(packaging: Packaging) {
    let f = Fixture::both(packaging, &config("deny", r#", "inFlightWait": "3s""#));
    let ports = [f.a.port(), f.b.port()];
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let port = ports[i % 2];
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 80 }));
                    post("/slow/pay", "k-wait", "{}").send(port).unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(f.upstream.hits(), 1);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    for response in &responses {
        assert_eq!(response.body, responses[0].body);
    }
    assert_eq!(counter(&f.a, "conflicts") + counter(&f.b, "conflicts"), 0);
}

/// Sends `count` requests with fresh keys to `envoy`, each timed; returns the statuses
/// and the slowest.
fn timed_posts(envoy: &Envoy, prefix: &str, count: usize) -> (Vec<u16>, Duration) {
    let mut slowest = Duration::ZERO;
    let statuses = (0..count)
        .map(|i| {
            let start = Instant::now();
            let response = post("/orders", &format!("{prefix}-{i}"), "{}")
                .send(envoy.port())
                .unwrap();
            slowest = slowest.max(start.elapsed());
            response.status
        })
        .collect();
    (statuses, slowest)
}

fn valkey_stopped_each_replica_follows_its_failure_mode_within_the_timeout_and_recovers(
    packaging: Packaging,
) {
    // The store's own Redis timeout (1 s) is longer than the filter's (100 ms): while
    // Valkey does not answer, it is the filter's timeout that bounds every request.
    let mut f = Fixture::start(
        packaging,
        &config("deny", ""),
        &config("allow", ""),
        Duration::from_secs(1),
    );
    let bound = STORE_TIMEOUT + Duration::from_millis(100);
    // Healthy.
    assert_eq!(
        post("/orders", "k-before", "{}")
            .send(f.a.port())
            .unwrap()
            .status,
        201
    );
    // What an allowed request costs anyway (upstream round trip, on a loaded machine):
    // the bound is on the extra wait for the store, not on the upstream.
    let (_, baseline) = timed_posts(&f.b, "baseline-b", 4);
    let hits = f.upstream.hits();

    // 1. Valkey hangs (every client paused): the store does not answer in time.
    let pause = f
        .valkey
        .command(&["CLIENT", "PAUSE", "1500", "ALL"])
        .unwrap();
    assert_eq!(pause.strings(), ["OK"]);
    let (denied, slowest_a) = timed_posts(&f.a, "hang-a", 4);
    let (allowed, slowest_b) = timed_posts(&f.b, "hang-b", 4);
    eprintln!("Valkey paused: slowest deny {slowest_a:?}, slowest allow {slowest_b:?}");
    assert_eq!(denied, [503; 4], "failureMode deny");
    assert_eq!(allowed, [201; 4], "failureMode allow");
    assert!(
        slowest_a < bound && slowest_b < bound + baseline,
        "deny {slowest_a:?}, allow {slowest_b:?} (healthy allowed request: {baseline:?})"
    );
    assert_eq!(
        f.upstream.hits(),
        hits + 4,
        "only the allowed ones executed"
    );
    std::thread::sleep(Duration::from_millis(1600)); // the pause ends

    // 2. Valkey killed: the store answers UNAVAILABLE.
    f.valkey.stop().unwrap();
    let (denied, slowest_a) = timed_posts(&f.a, "down-a", 4);
    let (allowed, slowest_b) = timed_posts(&f.b, "down-b", 4);
    eprintln!("Valkey down: slowest deny {slowest_a:?}, slowest allow {slowest_b:?}");
    assert_eq!(denied, [503; 4]);
    assert_eq!(allowed, [201; 4]);
    assert!(
        slowest_a < bound && slowest_b < bound + baseline,
        "deny {slowest_a:?}, allow {slowest_b:?} (healthy allowed request: {baseline:?})"
    );
    let refused = post("/orders", "down-x", "{}").send(f.a.port()).unwrap();
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(refused
        .body_text()
        .contains("idempotency-store-unavailable"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(counter(&f.a, "store_errors"), 9);
    assert_eq!(counter(&f.b, "store_errors"), 8);
    assert!(f
        .store
        .metrics()
        .contains("meshward_control_plane_redis_errors_total{op=\"store_reserve\"}"));

    // 3. Valkey back (empty): normal behaviour, nothing restarted but Valkey.
    f.valkey.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let response = post("/orders", "k-after", "{\"n\":1}")
            .send(f.a.port())
            .unwrap();
        if response.status != 503 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first.status, 201, "{}", first.body_text());
    let retry = post("/orders", "k-after", "{\"n\":1}")
        .send(f.b.port())
        .unwrap();
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    let (statuses, slowest) = timed_posts(&f.b, "after-b", 5);
    assert_eq!(statuses, [201; 5]);
    assert!(slowest < bound, "{slowest:?}");
}

fn a_missing_cluster_or_a_store_that_refuses_connections_follows_failure_mode(
    packaging: Packaging,
) {
    let upstream = upstream();
    // A names a cluster Envoy does not have; B's `meshward-store` is port 1, where
    // nothing listens.
    let missing = config("deny", "").replace("\"meshward-store\"", "\"no-such-cluster\"");
    let a = replica(packaging, &upstream, 1, &missing);
    let b = replica(packaging, &upstream, 1, &config("allow", ""));
    for i in 0..3 {
        let start = Instant::now();
        let denied = post("/orders", &format!("k{i}"), "{}")
            .send(a.port())
            .unwrap();
        assert_eq!(denied.status, 503, "{}", denied.body_text());
        let allowed = post("/orders", &format!("k{i}"), "{}")
            .send(b.port())
            .unwrap();
        assert_eq!(allowed.status, 201);
        assert!(start.elapsed() < 2 * (STORE_TIMEOUT + Duration::from_millis(100)));
    }
    assert_eq!(counter(&a, "store_errors"), 3);
    assert_eq!(counter(&b, "store_errors"), 3);
    assert_eq!(upstream.hits(), 3, "only the allowed ones");
}

/// Per-request latency, remote store vs the embedded one, on this machine (not a
/// benchmark: sequential requests, debug-free Envoy, everything on one host), with
/// each packaging in turn. Prints the figures; run with `--ignored --nocapture`. Not
/// in [`meshward_e2e::packaged_tests!`], whose tests cannot be `#[ignore]`d.
#[test]
#[ignore]
fn latency_remote_vs_local_store() {
    for packaging in [Packaging::Separate, Packaging::Bundle] {
        eprintln!("{packaging:?}:");
        latency_remote_vs_local_store_with(packaging);
    }
}

fn latency_remote_vs_local_store_with(packaging: Packaging) {
    let f = Fixture::both(packaging, &config("deny", ""));
    let local = {
        let bootstrap = Bootstrap::new(f.upstream.port())
            .packaged_filter(
                packaging,
                "meshward_idempotency",
                r#"{"routes": [{"name": "orders", "match": {"path": {"prefix": "/"}}, "key": "required"}], "maxResponseBytes": 4096}"#,
            )
            .unwrap();
        Envoy::start(&bootstrap, &EnvoyOptions::default()).unwrap()
    };
    let bare = {
        let bootstrap = Bootstrap::new(f.upstream.port());
        Envoy::start(&bootstrap, &EnvoyOptions::default()).unwrap()
    };
    let measure = |envoy: &Envoy, prefix: &str, retry: bool| -> Vec<Duration> {
        let mut samples: Vec<Duration> = (0..400)
            .map(|i| {
                let key = format!("{prefix}-{i}");
                if retry {
                    post("/orders", &key, "{}").send(envoy.port()).unwrap();
                }
                let start = Instant::now();
                let response = post("/orders", &key, "{}").send(envoy.port()).unwrap();
                assert!(response.status == 201);
                start.elapsed()
            })
            .collect();
        samples.sort();
        samples
    };
    let show = |what: &str, samples: &[Duration]| {
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        eprintln!(
            "{what:<32} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms",
            at(0.5).as_secs_f64() * 1e3,
            at(0.9).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3
        );
    };
    let _ = measure(&f.a, "warm", false);
    let _ = measure(&local, "warm", false);
    show("no filter", &measure(&bare, "bare", false));
    show("local store: first execution", &measure(&local, "l", false));
    show("remote store: first execution", &measure(&f.a, "r", false));
    show("local store: replay", &measure(&local, "lr", true));
    show("remote store: replay", &measure(&f.b, "rr", true));
}

meshward_e2e::packaged_tests!(
    a_retry_on_the_other_replica_replays_the_first_response,
    forty_concurrent_duplicates_over_two_replicas_execute_once,
    a_5xx_on_one_replica_releases_the_key_for_a_retry_on_the_other,
    completed_not_stored_on_one_replica_is_409_on_the_other,
    a_response_the_store_refuses_is_completed_not_stored,
    an_upstream_dying_mid_response_on_one_replica_is_not_run_again_on_the_other,
    with_in_flight_wait_duplicates_on_the_other_replica_get_the_result,
    valkey_stopped_each_replica_follows_its_failure_mode_within_the_timeout_and_recovers,
    a_missing_cluster_or_a_store_that_refuses_connections_follows_failure_mode,
);
