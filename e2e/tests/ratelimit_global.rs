//! `scope: global` end to end: one policy file, the control plane pushing the rate-limit
//! filter in global mode over ECDS to two real Envoys ("replicas" of one workload) and
//! serving the same policy's limits over Envoy's RLS API on one Valkey.
//!
//! - a burst of 5 × L spread over both replicas admits exactly L in total;
//! - Valkey stopped → every request follows `failureMode` within the filter's timeout
//!   (+100 ms), the errors are counted; Valkey back → exact limits again, without
//!   restarting Envoy or the control plane.
//!
//! Every test runs twice, with the same assertions: `separate::…` has the control plane
//! push the filter's own module over ECDS; `bundle::…` runs the bundle
//! `meshward_bundle` with only its `ratelimit` section. The control plane's ECDS knows
//! only the filters' own modules, so the bundle replicas get, from their bootstrap, the
//! very configuration the control plane pushes for them (compiled from the same policy
//! file by the control plane's own code); the rate-limit service, Valkey and
//! everything after the filter stay the same.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshward_control_plane::policy::compile::{filter_config, Replica};
use meshward_control_plane::policy::file_source::parse_file;
use meshward_control_plane::policy::model::{Kind, Workload};
use meshward_control_plane::server::{start_full, GlobalOptions, ModuleMode, Options, Running};
use meshward_e2e::control_plane::ecds_bootstrap;
use meshward_e2e::paths::wasm_dir;
use meshward_e2e::valkey::Valkey;
use meshward_e2e::{Bootstrap, Envoy, EnvoyOptions, Packaging, RecordingUpstream, Request};

const LIMIT: u64 = 10;
/// The filter's call timeout in the policy below.
const TIMEOUT: Duration = Duration::from_millis(200);
const BOUND: Duration = Duration::from_secs(20);

fn policy(failure_mode: &str) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: orders-limit, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  scope: global
  config:
    global: {{cluster: meshward-rls, timeout: 200ms, failureMode: {failure_mode}}}
    rules:
      - name: per-client
        key: [{{type: header, name: x-client}}]
        limit: {{algorithm: tokenBucket, requests: {LIMIT}, per: 1h}}
"#
    )
}

/// The control plane with the rate-limit service, in-process.
struct Services {
    runtime: tokio::runtime::Runtime,
    running: Option<Running>,
}

impl Services {
    fn start(policy_dir: &Path, valkey: &Valkey) -> Services {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let options = Options {
            policy_dir: policy_dir.to_path_buf(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            wasm_dir: None,
            modules: ModuleMode::Local {
                dir: wasm_dir().to_string_lossy().into_owned(),
            },
            poll_interval: Duration::from_millis(100),
        };
        let global = GlobalOptions {
            redis_url: valkey.url(),
            redis_timeout: Duration::from_millis(50),
            rls_addr: Some(([127, 0, 0, 1], 0).into()),
        };
        let running = runtime
            .block_on(start_full(options, None, Some(global)))
            .unwrap();
        Services {
            runtime,
            running: Some(running),
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn metrics(&self) -> String {
        self.running().world.metrics.encode()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

/// The rate-limit filter's configuration the control plane pushes to a replica of
/// `shop/orders` for `policy` (the `global.domain` it sets included).
fn pushed_config(policy: &str) -> String {
    let policies = parse_file("limits.yaml", policy).unwrap();
    let workload = Workload {
        namespace: "shop".into(),
        name: "orders".into(),
        labels: [("app".to_owned(), "orders".to_owned())].into(),
    };
    let replica = Replica { index: 0, count: 1 };
    filter_config(&policies, Kind::RateLimit, &workload, replica).to_string()
}

/// A replica of `shop/orders` under `policy`, plus the static `meshward-rls` cluster
/// (HTTP/2) the global mode calls. `Separate`: its filter comes from the control plane
/// over ECDS; `Bundle`: the bundle with what the control plane would push.
fn replica(
    packaging: Packaging,
    services: &Services,
    upstream: &RecordingUpstream,
    node: &str,
    policy: &str,
) -> Envoy {
    let running = services.running();
    let base = Bootstrap::new(upstream.port())
        .grpc_cluster("meshward-rls", running.rls_addr.unwrap().port());
    let config = match packaging {
        Packaging::Separate => ecds_bootstrap(
            &base,
            running.xds_addr.port(),
            node,
            "shop",
            "orders",
            &[("app", "orders")],
            &["meshward.ratelimit"],
        ),
        Packaging::Bundle => base
            .packaged_filter(packaging, "meshward_ratelimit", &pushed_config(policy))
            .unwrap()
            .to_json(),
    };
    Envoy::start_config(&config, &EnvoyOptions::default()).unwrap()
}

fn fresh_client() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "client-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn send(envoy: &Envoy, client: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = Request::get("/orders")
        .header("x-client", client)
        .send(envoy.port())
        .unwrap();
    (response.status, started.elapsed())
}

/// Waits until both replicas enforce the pushed global config: a 429 for a client that
/// used up its quota on the other replica.
fn until_global(a: &Envoy, b: &Envoy) {
    let started = Instant::now();
    loop {
        let client = fresh_client();
        let through_a = (0..LIMIT).filter(|_| send(a, &client).0 == 200).count();
        if through_a as u64 == LIMIT && send(b, &client).0 == 429 {
            return;
        }
        assert!(
            started.elapsed() < BOUND,
            "the global limit was not enforced across replicas within {BOUND:?}\n--- a\n{}\n--- b\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn a_burst_over_two_replicas_admits_exactly_the_limit_and_valkey_outages_follow_the_failure_mode(
    packaging: Packaging,
) {
    let mut valkey = Valkey::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy("deny");
    std::fs::write(dir.path().join("limits.yaml"), &policy).unwrap();
    let services = Services::start(dir.path(), &valkey);
    let upstream = RecordingUpstream::start().unwrap();
    let a = replica(packaging, &services, &upstream, "orders-a", &policy);
    let b = replica(packaging, &services, &upstream, "orders-b", &policy);
    until_global(&a, &b);

    // 5 × L requests of one client, concurrently, alternating replicas.
    let client = fresh_client();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5 * LIMIT)
            .map(|i| {
                let envoy = if i % 2 == 0 { &a } else { &b };
                let client = client.as_str();
                scope.spawn(move || send(envoy, client).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(
        (admitted, limited),
        (LIMIT, 4 * LIMIT),
        "exactly L admitted over both replicas: {statuses:?}"
    );

    // Valkey gone: the service answers UNAVAILABLE, `failureMode: deny` closes, fast.
    valkey.stop().unwrap();
    let errors_before = a.counter("wasmcustom.meshward.ratelimit.rls.errors")
        + b.counter("wasmcustom.meshward.ratelimit.rls.errors");
    for i in 0..10 {
        let envoy = if i % 2 == 0 { &a } else { &b };
        let (status, took) = send(envoy, &fresh_client());
        assert_eq!(status, 429, "failureMode: deny while Valkey is down");
        assert!(
            took <= TIMEOUT + Duration::from_millis(100),
            "a request waited {took:?} (timeout {TIMEOUT:?})"
        );
    }
    let errors_after = a.counter("wasmcustom.meshward.ratelimit.rls.errors")
        + b.counter("wasmcustom.meshward.ratelimit.rls.errors");
    assert_eq!(errors_after - errors_before, 10, "each failed call counted");
    assert!(
        services.metrics().lines().any(|l| l
            .starts_with("meshward_control_plane_redis_errors_total")
            && !l.ends_with(" 0")),
        "the control plane counts Redis errors:\n{}",
        services.metrics()
    );

    // Valkey back (empty: a restart loses counters, as documented): exact again, with
    // neither Envoy nor the control plane restarted.
    valkey.restart().unwrap();
    let started = Instant::now();
    loop {
        let client = fresh_client();
        if send(&a, &client).0 == 200 {
            let rest: u64 = (1..LIMIT)
                .map(|i| if i % 2 == 0 { &a } else { &b })
                .filter(|envoy| send(envoy, &client).0 == 200)
                .count() as u64;
            assert_eq!(rest, LIMIT - 1);
            assert_eq!(
                send(&b, &client).0,
                429,
                "the limit holds across replicas again"
            );
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "no recovery after Valkey came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn failure_mode_allow_passes_while_the_service_is_unreachable(packaging: Packaging) {
    let mut valkey = Valkey::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy("allow");
    std::fs::write(dir.path().join("limits.yaml"), &policy).unwrap();
    let services = Services::start(dir.path(), &valkey);
    let upstream = RecordingUpstream::start().unwrap();
    let a = replica(packaging, &services, &upstream, "orders-a", &policy);
    let b = replica(packaging, &services, &upstream, "orders-b", &policy);
    until_global(&a, &b);
    valkey.stop().unwrap();
    let client = fresh_client();
    for _ in 0..(2 * LIMIT) {
        let (status, took) = send(&a, &client);
        assert_eq!(status, 200, "failureMode: allow");
        assert!(
            took <= TIMEOUT + Duration::from_millis(100),
            "waited {took:?}"
        );
    }
}

meshward_e2e::packaged_tests!(
    a_burst_over_two_replicas_admits_exactly_the_limit_and_valkey_outages_follow_the_failure_mode,
    failure_mode_allow_passes_while_the_service_is_unreachable,
);
