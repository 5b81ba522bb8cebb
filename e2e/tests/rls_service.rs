//! The control plane's rate-limit service (docs/adr/0009) against a real Valkey: exact
//! admission under concurrency from two clients, token refill, the sliding window's
//! weighting, counter TTLs, cardinality bounds, unknown domains, Valkey stopped
//! (UNAVAILABLE within the timeout) and restarted (the service reconnects by itself),
//! a policy edit taking effect live, and a one-node Redis Cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use meshward_control_plane::server::{start_rls, GlobalOptions, RlsOptions, RlsRunning};
use meshward_e2e::valkey::Valkey;
use tonic::transport::Channel;

const DOMAIN: &str = "shop/orders-limit";
const TIMEOUT: Duration = Duration::from_millis(50);

fn policy(rules: &str) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: orders-limit, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  scope: global
  config:
    global: {{cluster: meshward-rls}}
    rules:
{rules}
"#
    )
}

fn write_policy(dir: &Path, rules: &str) {
    // Write then rename: the poller never reads half a file.
    let tmp = dir.join(".policy.yaml.tmp");
    std::fs::write(&tmp, policy(rules)).unwrap();
    std::fs::rename(&tmp, dir.join("policy.yaml")).unwrap();
}

struct Fixture {
    valkey: Valkey,
    dir: tempfile::TempDir,
    running: Option<RlsRunning>,
    client: RateLimitServiceClient<Channel>,
}

impl Fixture {
    async fn start(rules: &str) -> Fixture {
        Self::start_on(Valkey::start().unwrap(), rules).await
    }

    async fn start_on(valkey: Valkey, rules: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path(), rules);
        let running = start_rls(RlsOptions {
            policy_dir: dir.path().to_owned(),
            poll_interval: Duration::from_millis(50),
            kubernetes: false,
            http_addr: None,
            global: GlobalOptions {
                redis_url: valkey.url(),
                redis_timeout: TIMEOUT,
                rls_addr: Some("127.0.0.1:0".parse().unwrap()),
            },
        })
        .await
        .unwrap();
        let client = Self::client_for(&running).await;
        Fixture {
            valkey,
            dir,
            running: Some(running),
            client,
        }
    }

    async fn client_for(running: &RlsRunning) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", running.rls_addr))
            .await
            .unwrap()
    }

    /// Another client on its own HTTP/2 connection (another "replica").
    async fn second_client(&self) -> RateLimitServiceClient<Channel> {
        Self::client_for(self.running.as_ref().unwrap()).await
    }

    fn metrics(&self) -> String {
        self.running.as_ref().unwrap().world.metrics.encode()
    }

    async fn call(&self, request: RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        self.client
            .clone()
            .should_rate_limit(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 1,
    }
}

fn client_request(rule: &str, client: &str) -> RateLimitRequest {
    request(
        DOMAIN,
        vec![descriptor(&[("rule", rule), ("remote_address", client)])],
    )
}

fn ok(response: &RateLimitResponse) -> bool {
    response.overall_code == Code::Ok as i32
}

/// The only counter key in Valkey, and its PTTL.
fn only_key_pttl(valkey: &Valkey) -> (String, i64) {
    let keys = valkey.command(&["KEYS", "mw:rl:*"]).unwrap().strings();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let pttl = valkey
        .command(&["PTTL", &keys[0]])
        .unwrap()
        .integer()
        .unwrap();
    (keys[0].clone(), pttl)
}

/// Redis's clock, in microseconds (what the scripts use).
fn redis_micros(valkey: &Valkey) -> u64 {
    let time = valkey.command(&["TIME"]).unwrap().strings();
    time[0].parse::<u64>().unwrap() * 1_000_000 + time[1].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_limit_is_admitted_from_two_clients_under_concurrency() {
    let fixture = Fixture::start(
        "      - {name: per-client, key: [{type: clientAddress}], limit: {algorithm: tokenBucket, requests: 5, per: 1h}}",
    )
    .await;
    let clients = [fixture.client.clone(), fixture.second_client().await];
    let calls = (0..25).map(|i| {
        let mut client = clients[i % 2].clone();
        async move {
            client
                .should_rate_limit(client_request("per-client", "10.0.0.1"))
                .await
                .unwrap()
                .into_inner()
        }
    });
    let responses = futures_join_all(calls).await;
    let admitted: Vec<_> = responses.iter().filter(|r| ok(r)).collect();
    assert_eq!(admitted.len(), 5, "{responses:?}");
    let mut remaining: Vec<u32> = admitted
        .iter()
        .map(|r| r.statuses[0].limit_remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, [0, 1, 2, 3, 4]);
    let status = &admitted[0].statuses[0];
    let limit = status.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit, limit.unit),
        ("per-client", 5, Unit::Hour as i32)
    );
    let denied = responses.iter().find(|r| !ok(r)).unwrap();
    assert_eq!(denied.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(denied.statuses[0].limit_remaining, 0);
    // Denied: the wait for one token, 1h / 5 = 12 min (less what refilled meanwhile).
    let wait = denied.statuses[0].duration_until_reset.unwrap();
    assert!((715..=720).contains(&wait.seconds), "{wait:?}");

    // Another client has its own counter.
    let other = fixture
        .call(client_request("per-client", "10.0.0.2"))
        .await
        .unwrap();
    assert!(ok(&other));
    // The bucket's key lives until it would be full again: 5 × 12 min at most.
    let keys = fixture
        .valkey
        .command(&["KEYS", "mw:rl:*"])
        .unwrap()
        .strings();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(
            key.starts_with("mw:rl:{shop/orders-limit|per-client|"),
            "{key}"
        );
        let pttl = fixture
            .valkey
            .command(&["PTTL", key])
            .unwrap()
            .integer()
            .unwrap();
        assert!(pttl > 0 && pttl <= 3_600_000 + 1, "{key}: {pttl}");
    }
    let metrics = fixture.metrics();
    assert!(
        metrics.contains(r#"meshward_control_plane_rls_decisions_total{code="ok"} 6"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshward_control_plane_rls_decisions_total{code="over_limit"} 20"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshward_control_plane_redis_seconds_count{op="rls_token_bucket"} 26"#),
        "{metrics}"
    );
    fixture.stop().await;
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_refill_at_the_rate_up_to_the_burst() {
    // 4 per second (one token per 250 ms), capacity 2.
    let fixture = Fixture::start(
        "      - {name: paced, key: [{type: clientAddress}], limit: {algorithm: tokenBucket, requests: 4, per: 1s, burst: 2}}",
    )
    .await;
    let call = || fixture.call(client_request("paced", "10.0.0.1"));
    assert!(ok(&call().await.unwrap()));
    let second = call().await.unwrap();
    assert!(ok(&second));
    // (Nearly) empty: full again within 2 × 250 ms; the key expires then (PTTL rounds up).
    let reset = second.statuses[0].duration_until_reset.unwrap();
    assert!(
        reset.seconds == 0 && reset.nanos > 0 && reset.nanos <= 500_000_000,
        "{reset:?}"
    );
    let (_, pttl) = only_key_pttl(&fixture.valkey);
    assert!((1..=502).contains(&pttl), "{pttl}");
    let denied = call().await.unwrap();
    assert!(!ok(&denied));
    let wait = denied.statuses[0].duration_until_reset.unwrap();
    assert!(wait.seconds == 0 && wait.nanos <= 250_000_000, "{wait:?}");

    // 600 ms later the bucket is full again (2, not 2.4): two admitted, then denied.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(ok(&call().await.unwrap()));
    assert!(ok(&call().await.unwrap()));
    assert!(!ok(&call().await.unwrap()));
    // The key expires once the bucket is full; a fresh one would be full: equivalent.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let keys = fixture
        .valkey
        .command(&["KEYS", "mw:rl:*"])
        .unwrap()
        .strings();
    assert!(keys.is_empty(), "{keys:?}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sliding_window_weights_the_previous_window() {
    // 4 per 2 s windows. Aligned on Redis's clock.
    let fixture = Fixture::start(
        "      - {name: window, limit: {algorithm: slidingWindow, requests: 4, per: 2s}}",
    )
    .await;
    let width = 2_000_000u64;
    // How long until `offset` µs into a window (the next one when `next`).
    let wait_for_offset = |offset: u64, next: bool| {
        let now = redis_micros(&fixture.valkey);
        let into = now % width;
        let wait = if into <= offset && !next {
            offset - into
        } else {
            width - into + offset
        };
        Duration::from_micros(wait)
    };
    let call = || fixture.call(request(DOMAIN, vec![descriptor(&[("rule", "window")])]));
    tokio::time::sleep(wait_for_offset(50_000, false)).await;
    for i in 0..4 {
        let response = call().await.unwrap();
        assert!(ok(&response), "request {i}: {response:?}");
        assert_eq!(response.statuses[0].limit_remaining, 3 - i);
    }
    assert!(!ok(&call().await.unwrap()));
    let (_, pttl) = only_key_pttl(&fixture.valkey);
    // Until the end of the next window: 2 s + (2 s − ~50 ms).
    assert!((3_800..=4_001).contains(&pttl), "{pttl}");

    // 60% into the next window the previous 4 weigh 1.6: two more fit (3.6), not three.
    tokio::time::sleep(wait_for_offset(1_200_000, true)).await;
    let started = redis_micros(&fixture.valkey) % width;
    assert!(ok(&call().await.unwrap()));
    assert!(ok(&call().await.unwrap()));
    let third = call().await.unwrap();
    let ended = redis_micros(&fixture.valkey) % width;
    assert!(
        (1_000_000..1_500_000).contains(&started) && (1_000_000..1_500_000).contains(&ended),
        "timing drifted: {started}..{ended} µs into the window"
    );
    assert!(!ok(&third), "{third:?}");
    assert!(
        third.statuses[0].current_limit.is_none(),
        "2 s is no RLS unit"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_window_counts_hits_addend_and_expires_at_its_end() {
    let fixture = Fixture::start(
        "      - {name: fixed, limit: {algorithm: fixedWindow, requests: 5, per: 1h}}",
    )
    .await;
    let mut big = request(DOMAIN, vec![descriptor(&[("rule", "fixed")])]);
    big.hits_addend = 3;
    let first = fixture.call(big.clone()).await.unwrap();
    assert!(ok(&first));
    assert_eq!(first.statuses[0].limit_remaining, 2);
    assert_eq!(
        first.statuses[0].current_limit.as_ref().unwrap().unit,
        Unit::Hour as i32
    );
    // 3 more do not fit in the 2 left (and are not counted)...
    assert!(!ok(&fixture.call(big).await.unwrap()));
    // ...2 do.
    let mut two = request(DOMAIN, vec![descriptor(&[("rule", "fixed")])]);
    two.descriptors[0].hits_addend =
        Some(envoy_types::pb::google::protobuf::UInt64Value { value: 2 });
    assert!(ok(&fixture.call(two).await.unwrap()));
    let (_, pttl) = only_key_pttl(&fixture.valkey);
    let into = redis_micros(&fixture.valkey) % 3_600_000_000 / 1000;
    let until_end = 3_600_000 - into as i64;
    assert!((pttl - until_end).abs() <= 50, "{pttl} vs {until_end}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_domains_and_rules_are_ok_and_counted() {
    let fixture = Fixture::start(
        "      - {name: tight, limit: {algorithm: tokenBucket, requests: 1, per: 1h}}",
    )
    .await;
    for _ in 0..3 {
        let response = fixture
            .call(request(
                "shop/other",
                vec![descriptor(&[("rule", "tight")])],
            ))
            .await
            .unwrap();
        assert!(ok(&response));
        assert_eq!(response.statuses.len(), 1);
        assert!(response.statuses[0].current_limit.is_none());
    }
    // One descriptor known, one not: each gets its status, in order.
    let mixed = || {
        request(
            DOMAIN,
            vec![
                descriptor(&[("rule", "nope")]),
                descriptor(&[("rule", "tight")]),
                descriptor(&[("no-rule", "x")]),
            ],
        )
    };
    let response = fixture.call(mixed()).await.unwrap();
    assert!(ok(&response));
    let codes: Vec<i32> = response.statuses.iter().map(|s| s.code).collect();
    assert_eq!(codes, [Code::Ok as i32; 3]);
    let response = fixture.call(mixed()).await.unwrap();
    assert_eq!(response.overall_code, Code::OverLimit as i32);
    assert_eq!(response.statuses[1].code, Code::OverLimit as i32);
    assert_eq!(response.statuses[0].code, Code::Ok as i32);
    let metrics = fixture.metrics();
    assert!(
        metrics.contains(r#"meshward_control_plane_rls_decisions_total{code="unknown"} 7"#),
        "{metrics}"
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_cardinality_bounds_are_invalid() {
    let fixture = Fixture::start(
        "      - {name: r, limit: {algorithm: tokenBucket, requests: 100, per: 1s}}",
    )
    .await;
    let invalid = |request| async {
        let status = fixture.call(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_owned()
    };
    let many = vec![descriptor(&[("rule", "r")]); 65];
    assert!(invalid(request(DOMAIN, many))
        .await
        .contains("65 descriptors"));
    let entries: Vec<(String, String)> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(invalid(request(DOMAIN, vec![descriptor(&entries)]))
        .await
        .contains("17 entries"));
    let long = "x".repeat(257);
    assert!(invalid(request(
        DOMAIN,
        vec![descriptor(&[("rule", "r"), (&long, "v")])]
    ))
    .await
    .contains("256 bytes"));
    // At the bounds: fine.
    let at = vec![descriptor(&[("rule", "r"), ("path", &long[..256])]); 64];
    assert!(ok(&fixture.call(request(DOMAIN, at)).await.unwrap()));
    assert!(
        fixture
            .valkey
            .command(&["KEYS", "mw:rl:*"])
            .unwrap()
            .strings()
            .len()
            == 1
    );
    // `invalid` counts per descriptor, as every outcome does: 65 + 1 + 1.
    let metrics = fixture.metrics();
    assert!(
        metrics.contains(r#"meshward_control_plane_rls_decisions_total{code="invalid"} 67"#),
        "{metrics}"
    );
    fixture.stop().await;
}

/// A value over 256 bytes (one long header) does not make the request invalid, which
/// would switch off every global limit of it: it is counted under its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_values_are_limited_under_their_hash() {
    let fixture =
        Fixture::start("      - {name: r, limit: {algorithm: fixedWindow, requests: 2, per: 60s}}")
            .await;
    let long = "x".repeat(10_000);
    let other = "y".repeat(10_000);
    let call = |value: &str| {
        fixture.call(request(
            DOMAIN,
            vec![descriptor(&[("rule", "r"), ("path", value)])],
        ))
    };
    assert!(ok(&call(&long).await.unwrap()));
    assert!(ok(&call(&long).await.unwrap()));
    assert!(
        !ok(&call(&long).await.unwrap()),
        "the third is over the limit"
    );
    // Another long value has its own counter.
    assert!(ok(&call(&other).await.unwrap()));
    let keys = fixture
        .valkey
        .command(&["KEYS", "mw:rl:*"])
        .unwrap()
        .strings();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|key| key.len() < 100), "{keys:?}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_stopped_is_unavailable_within_the_timeout_and_restarted_works_again() {
    let mut fixture = Fixture::start(
        "      - {name: r, key: [{type: clientAddress}], limit: {algorithm: tokenBucket, requests: 1000, per: 1s}}",
    )
    .await;
    async fn call(fixture: &Fixture) -> Result<RateLimitResponse, tonic::Status> {
        fixture.call(client_request("r", "10.0.0.1")).await
    }
    assert!(ok(&call(&fixture).await.unwrap()));

    fixture.valkey.stop().unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        let status = call(&fixture).await.unwrap_err();
        slowest = slowest.max(start.elapsed());
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    assert!(
        slowest < TIMEOUT + Duration::from_millis(150),
        "{slowest:?}"
    );
    eprintln!("slowest UNAVAILABLE answer with Valkey down: {slowest:?}");
    let metrics = fixture.metrics();
    assert!(
        metrics.contains(r#"meshward_control_plane_rls_decisions_total{code="error"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshward_control_plane_redis_errors_total{op="rls_token_bucket"} 10"#),
        "{metrics}"
    );

    fixture.valkey.restart().unwrap();
    let restarted = Instant::now();
    loop {
        match call(&fixture).await {
            Ok(response) => {
                assert!(ok(&response));
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                assert!(
                    restarted.elapsed() < Duration::from_secs(5),
                    "no reconnect within 5 s: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!("reconnected {:?} after the restart", restarted.elapsed());
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_changes_the_limit_live() {
    let fixture =
        Fixture::start("      - {name: r, limit: {algorithm: tokenBucket, requests: 2, per: 1h}}")
            .await;
    let call = || fixture.call(request(DOMAIN, vec![descriptor(&[("rule", "r")])]));
    assert!(ok(&call().await.unwrap()));
    assert!(ok(&call().await.unwrap()));
    assert!(!ok(&call().await.unwrap()));
    // Same rule, much faster refill: the counter is kept, the new rate applies.
    write_policy(
        fixture.dir.path(),
        "      - {name: r, limit: {algorithm: tokenBucket, requests: 100, per: 1s}}",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = call().await.unwrap();
        let limit = response.statuses[0].current_limit.clone().unwrap();
        if (limit.requests_per_unit, limit.unit) == (100, Unit::Second as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ok(&call().await.unwrap()));
    // And the rule removed: nothing enforced.
    write_policy(
        fixture.dir.path(),
        "      - {name: other, limit: {algorithm: tokenBucket, requests: 1, per: 1h}}",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while call().await.unwrap().statuses[0].current_limit.is_some() {
        assert!(Instant::now() < deadline, "the removal was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_url_works() {
    let fixture = Fixture::start_on(
        Valkey::start_cluster().unwrap(),
        "      - {name: r, key: [{type: clientAddress}], limit: {algorithm: tokenBucket, requests: 3, per: 1h}}",
    )
    .await;
    assert!(fixture.valkey.url().starts_with("redis+cluster://"));
    let mut admitted = 0;
    for _ in 0..6 {
        if ok(&fixture.call(client_request("r", "10.0.0.9")).await.unwrap()) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    let (key, pttl) = only_key_pttl(&fixture.valkey);
    assert!(key.contains('{') && pttl > 0, "{key} {pttl}");
    fixture.stop().await;
}

/// Not an assertion on speed (shared CI machines): prints what a call costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_of_should_rate_limit_against_local_valkey() {
    let fixture = Fixture::start(
        "      - {name: r, key: [{type: clientAddress}], limit: {algorithm: tokenBucket, requests: 1000000, per: 1s}}",
    )
    .await;
    let mut samples = Vec::new();
    for i in 0..1000 {
        let start = Instant::now();
        let response = fixture
            .call(client_request(
                "r",
                &format!("10.0.{}.{}", i / 250, i % 250),
            ))
            .await
            .unwrap();
        samples.push(start.elapsed());
        assert!(ok(&response));
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "ShouldRateLimit, 1 descriptor, sequential, local Valkey: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    // Of which Redis (the script's round trip, from the service's histogram).
    let metrics = fixture.metrics();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{op=\"rls_token_bucket\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap()
            .parse()
            .unwrap()
    };
    let mean = value("meshward_control_plane_redis_seconds_sum")
        / value("meshward_control_plane_redis_seconds_count");
    eprintln!("of which the Redis script, mean: {:.0} µs", mean * 1e6);
    fixture.stop().await;
}
