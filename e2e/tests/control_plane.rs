//! The control plane with real Envoys (`--concurrency 2`) that take the rate-limit and
//! authz filter configurations from it over ADS/ECDS: live policy edits (with the
//! edit-to-enforced time measured), refused policy files, configurations the filter
//! NACKs, the control plane going away and coming back, and a `scope: workload` limit
//! split over two replicas.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshward_e2e::control_plane::{ecds_bootstrap, ecds_bootstrap_with, AdsProtocol, ControlPlane};
use meshward_e2e::{Bootstrap, Envoy, EnvoyOptions, RecordingUpstream, Request};
use serde_json::Value;

const FILTERS: [&str; 2] = ["meshward.authz", "meshward.ratelimit"];
const BOUND: Duration = Duration::from_secs(15);

fn limit_policy(requests: u64, scope: &str) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: orders-limit, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  scope: {scope}
  config:
    rules:
      - name: per-client
        key: [{{type: header, name: x-client}}]
        limit: {{algorithm: tokenBucket, requests: {requests}, per: 1h}}
"#
    )
}

/// `/admin` needs a token (inline HS256 key), everything else is anonymous.
const AUTH_POLICY: &str = r#"apiVersion: meshward.io/v1alpha1
kind: AuthPolicy
metadata: {name: orders-auth, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  config:
    realm: orders
    providers:
      - name: main
        issuer: https://id.example.com/
        audiences: [orders]
        jwks:
          inline: {keys: [{kty: oct, kid: k1, k: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA}]}
    rules:
      - {name: admin, action: allow, match: {path: {prefix: /admin}}}
      - {name: public, action: allow, require: anonymous}
"#;

/// Writes by rename, as editors and `kubectl cp` do, so the poller never reads half a file.
fn write_policy(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn start_envoy(control: &ControlPlane, upstream: &RecordingUpstream, node: &str) -> Envoy {
    let config = ecds_bootstrap(
        &Bootstrap::new(upstream.port()),
        control.xds_port(),
        node,
        "shop",
        "orders",
        &[("app", "orders")],
        &FILTERS,
    );
    Envoy::start_config(&config, &EnvoyOptions::default()).unwrap()
}

/// A client key never used before, so every probe starts with a full bucket.
fn fresh_client() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "client-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// How many of `limit + 2` requests from one fresh client get through.
fn admitted(envoy: &Envoy, attempts: u64) -> u64 {
    let client = fresh_client();
    (0..attempts)
        .filter(|_| {
            Request::get("/orders")
                .header("x-client", &client)
                .send(envoy.port())
                .map(|r| r.status == 200)
                .unwrap_or(false)
        })
        .count() as u64
}

/// Polls until a fresh client gets exactly `limit` requests through; the time it took.
fn until_limit(envoy: &Envoy, limit: u64) -> Duration {
    let started = Instant::now();
    while started.elapsed() < BOUND {
        if admitted(envoy, limit + 2) == limit {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "limit {limit} not enforced within {BOUND:?}:\n{}",
        envoy.log()
    );
}

fn proxy_resource<'s>(status: &'s Value, node: &str, resource: &str) -> &'s Value {
    &status["proxies"][node]["resources"][resource]
}

#[test]
fn policy_edits_are_enforced_live_and_bad_ones_never_are() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(3, "perReplica"));
    write_policy(dir.path(), "auth.yaml", AUTH_POLICY);
    let control = ControlPlane::start(dir.path()).unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let envoy = start_envoy(&control, &upstream, "orders-1");
    until_limit(&envoy, 3);
    // The authz policy arrived too: /admin needs a token, the rest is anonymous.
    assert_eq!(
        Request::get("/admin").send(envoy.port()).unwrap().status,
        401
    );
    assert_eq!(
        Request::get("/public").send(envoy.port()).unwrap().status,
        200
    );

    // 20 edits, alternating limits; each must be enforced, the time is reported.
    let mut times = Vec::new();
    for round in 0..20u64 {
        let limit = 4 + round % 2;
        let written = Instant::now();
        write_policy(
            dir.path(),
            "limits.yaml",
            &limit_policy(limit, "perReplica"),
        );
        until_limit(&envoy, limit);
        times.push(written.elapsed());
    }
    times.sort();
    eprintln!(
        "edit-to-enforced over {} edits: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[(times.len() * 99).div_ceil(100) - 1],
        times[times.len() - 1]
    );
    let status = control.status();
    let limits = proxy_resource(&status, "orders-1", "meshward.ratelimit");
    assert!(limits["ackedVersion"].is_string(), "{status:#}");
    assert_eq!(
        limits["ackedVersion"], limits["pushedVersion"],
        "{status:#}"
    );
    assert!(limits["nack"].is_null());

    // An invalid policy file: refused with file, line and field; the limit stays 5.
    write_policy(
        dir.path(),
        "limits.yaml",
        &limit_policy(9, "perReplica")
            .replace("scope: perReplica", "scope: perReplica\n  colour: blue"),
    );
    let started = Instant::now();
    let error = loop {
        let status = control.status();
        if let Some(error) = status["policyErrors"].as_array().and_then(|e| e.first()) {
            break error.as_str().unwrap_or_default().to_owned();
        }
        assert!(
            started.elapsed() < BOUND,
            "no policy error reported: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        error.starts_with("limits.yaml:7:3: spec: unknown field `colour`"),
        "{error}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        admitted(&envoy, 7),
        5,
        "the last good policy stays in force"
    );

    // A policy the filter itself rejects: Envoy NACKs, the status shows why, the limit stays.
    write_policy(
        dir.path(),
        "limits.yaml",
        &limit_policy(9, "perReplica").replace("per: 1h", "per: soon"),
    );
    let started = Instant::now();
    let nack = loop {
        let status = control.status();
        let nack = proxy_resource(&status, "orders-1", "meshward.ratelimit")["nack"].clone();
        if !nack.is_null() {
            break nack;
        }
        assert!(started.elapsed() < BOUND, "no NACK recorded: {status:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let message = nack["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{nack}");
    eprintln!("NACK message as Envoy sent it: {message}");
    assert_eq!(
        admitted(&envoy, 7),
        5,
        "a rejected config never replaces the last good one"
    );
    assert!(control.status()["policyErrors"]
        .as_array()
        .unwrap()
        .is_empty());

    // Fixed again: applied.
    write_policy(dir.path(), "limits.yaml", &limit_policy(2, "perReplica"));
    until_limit(&envoy, 2);
    let status = control.status();
    assert!(proxy_resource(&status, "orders-1", "meshward.ratelimit")["nack"].is_null());
}

#[test]
fn envoy_keeps_enforcing_while_the_control_plane_is_down_and_takes_the_next_edit_after() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(3, "perReplica"));
    let mut control = ControlPlane::start(dir.path()).unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let envoy = start_envoy(&control, &upstream, "orders-1");
    until_limit(&envoy, 3);

    control.stop();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(admitted(&envoy, 5), 3, "the last config stays in force");
    write_policy(dir.path(), "limits.yaml", &limit_policy(4, "perReplica"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(admitted(&envoy, 6), 3, "nobody serves the edit yet");

    control.restart().unwrap();
    until_limit(&envoy, 4);
    write_policy(dir.path(), "limits.yaml", &limit_policy(2, "perReplica"));
    until_limit(&envoy, 2);
}

#[test]
fn a_workload_limit_is_split_over_the_connected_replicas() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(5, "workload"));
    let control = ControlPlane::start(dir.path()).unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let first = start_envoy(&control, &upstream, "orders-a");
    let second = start_envoy(&control, &upstream, "orders-b");
    // Node ids order the replicas: orders-a gets ⌈5/2⌉ = 3, orders-b ⌊5/2⌋ = 2.
    until_limit(&first, 3);
    until_limit(&second, 2);
    assert_eq!(control.status()["workloads"]["shop/orders"], 2);

    drop(first);
    until_limit(&second, 5);
    assert_eq!(control.status()["workloads"]["shop/orders"], 1);
}

#[test]
fn envoy_can_fetch_the_modules_from_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(2, "perReplica"));
    let control = ControlPlane::start_serving_modules(dir.path(), "meshward_modules").unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let base = Bootstrap::new(upstream.port()).cluster("meshward_modules", control.http_port());
    let config = ecds_bootstrap(
        &base,
        control.xds_port(),
        "orders-remote",
        "shop",
        "orders",
        &[("app", "orders")],
        &["meshward.ratelimit"],
    );
    let envoy = Envoy::start_config(&config, &EnvoyOptions::default()).unwrap();
    until_limit(&envoy, 2);
    let status = control.status();
    assert!(
        proxy_resource(&status, "orders-remote", "meshward.ratelimit")["ackedVersion"].is_string()
    );
}

/// A rate-limit config the filter rejects does not hold back an authz update written at
/// the same moment: Envoy accepts or rejects a response as a whole, so the control plane
/// sends one change per response and the NACK lands on the resource at fault.
#[test]
fn over_sotw_a_rejected_filter_config_does_not_block_the_others() {
    rejected_config_does_not_block_the_others(AdsProtocol::Sotw);
}

#[test]
fn over_delta_a_rejected_filter_config_does_not_block_the_others() {
    rejected_config_does_not_block_the_others(AdsProtocol::Delta);
}

fn rejected_config_does_not_block_the_others(protocol: AdsProtocol) {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(3, "perReplica"));
    let control = ControlPlane::start(dir.path()).unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let config = ecds_bootstrap_with(
        &Bootstrap::new(upstream.port()),
        control.xds_port(),
        "orders-delta",
        "shop",
        "orders",
        &[("app", "orders")],
        &FILTERS,
        protocol,
    );
    let envoy = Envoy::start_config(&config, &EnvoyOptions::default()).unwrap();
    until_limit(&envoy, 3);
    write_policy(dir.path(), "limits.yaml", &limit_policy(4, "perReplica"));
    until_limit(&envoy, 4);
    assert_eq!(
        Request::get("/admin").send(envoy.port()).unwrap().status,
        200,
        "no auth policy yet"
    );

    // A bad rate-limit config and a new auth policy at once.
    write_policy(
        dir.path(),
        "limits.yaml",
        &limit_policy(9, "perReplica").replace("per: 1h", "per: soon"),
    );
    write_policy(dir.path(), "auth.yaml", AUTH_POLICY);
    let started = Instant::now();
    while Request::get("/admin").send(envoy.port()).unwrap().status != 401 {
        assert!(started.elapsed() < BOUND, "the authz update was held back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = control.status();
    let limits = proxy_resource(&status, "orders-delta", "meshward.ratelimit");
    let auth = proxy_resource(&status, "orders-delta", "meshward.authz");
    assert!(!limits["nack"].is_null(), "{status:#}");
    assert!(
        auth["nack"].is_null(),
        "only the rejected resource carries the NACK: {status:#}"
    );
    assert_eq!(auth["ackedVersion"], auth["pushedVersion"]);
    assert_eq!(admitted(&envoy, 6), 4, "the last good limit stays");
}
