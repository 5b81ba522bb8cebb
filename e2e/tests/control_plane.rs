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
    // One change per response: the rate-limit NACK may come just after the authz ACK.
    let status = loop {
        let status = control.status();
        if !proxy_resource(&status, "orders-delta", "meshward.ratelimit")["nack"].is_null() {
            break status;
        }
        assert!(started.elapsed() < BOUND, "no NACK recorded: {status:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let auth = proxy_resource(&status, "orders-delta", "meshward.authz");
    assert!(
        auth["nack"].is_null(),
        "only the rejected resource carries the NACK: {status:#}"
    );
    assert_eq!(auth["ackedVersion"], auth["pushedVersion"]);
    assert_eq!(admitted(&envoy, 6), 4, "the last good limit stays");
}

// ---------------------------------------------------------------------------------
// Remote modules and Envoy's code cache: Envoy downloads a remote module only while a
// listener warms, unless the VmConfig says `nack_on_code_cache_miss` — then it NACKs
// a configuration naming a module it has not downloaded, downloads it in the
// background, and the control plane sends the same version again (code_cache.rs). Each
// of these ended with a filter that ACKed and did nothing before.

/// The 105-byte do-nothing plugin of istio-manifests/mesh/envoyfilter-ratelimit.yaml's
/// `default_config`: every request passes.
const PASS_THROUGH_WASM: &str = "AGFzbQEAAAABCQJgAABgAX8BfwMDAgABBQMBAAEHPwMGbWVtb3J5AgAXcHJveHlfYWJpX3ZlcnNpb25fMF8yXzEAABhwcm94eV9vbl9tZW1vcnlfYWxsb2NhdGUAAQoJAgIACwQAQQAL";

/// Gives every `config_discovery` filter of the bootstrap the pass-through
/// `default_config` (as the mesh's EnvoyFilter does), this `initial_fetch_timeout`, and
/// with `warming: false` `apply_default_config_without_warming`.
fn with_pass_through_default(config: &mut Value, warming: bool, initial_fetch_timeout: &str) {
    let filters = config
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .expect("the first listener's HTTP filters");
    for discovery in filters
        .iter_mut()
        .filter_map(|f| f.get_mut("config_discovery"))
    {
        discovery["config_source"]["initial_fetch_timeout"] = initial_fetch_timeout.into();
        discovery["default_config"] = serde_json::json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meshward_passthrough",
                "root_id": "meshward_passthrough",
                "vm_config": {
                    "vm_id": "meshward_passthrough",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"inline_bytes": PASS_THROUGH_WASM}}
                }
            }
        });
        if !warming {
            discovery["apply_default_config_without_warming"] = true.into();
        }
    }
}

fn remote_envoy(
    base: &Bootstrap,
    xds_port: u16,
    node: &str,
    protocol: AdsProtocol,
    edit: impl FnOnce(&mut Value),
) -> Envoy {
    let mut config = ecds_bootstrap_with(
        base,
        xds_port,
        node,
        "shop",
        "orders",
        &[("app", "orders")],
        &FILTERS,
        protocol,
    );
    edit(&mut config);
    Envoy::start_config(&config, &EnvoyOptions::default()).unwrap()
}

/// A counter of the control plane's `/metrics`, 0 when absent.
fn metric(control: &ControlPlane, name: &str) -> u64 {
    control
        .metrics()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Polls until the proxy ACKed the version it was pushed (other than `not`, if given).
fn until_acked(control: &ControlPlane, node: &str, not: Option<&Value>) -> Value {
    let started = Instant::now();
    loop {
        let status = control.status();
        let resource = proxy_resource(&status, node, "meshward.ratelimit").clone();
        if resource["ackedVersion"].is_string()
            && resource["ackedVersion"] == resource["pushedVersion"]
            && Some(&resource["ackedVersion"]) != not
        {
            return resource;
        }
        assert!(started.elapsed() < BOUND, "no ACK in {BOUND:?}: {status:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A wasm custom section (id 0: LEB128 size, then the LEB128 name length, the name and
/// the payload) appended to `module`: the same behaviour, another sha256.
fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = module.to_vec();
    out.push(0);
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// A copy of the built modules, the rate-limit one with a custom section appended.
fn modules_with_another_ratelimit_build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(meshward_e2e::paths::wasm_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if path.file_name().and_then(|n| n.to_str()) == Some("meshward_ratelimit.wasm") {
            bytes = with_custom_section(&bytes, "meshward.build", b"another build, same code");
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), bytes).unwrap();
    }
    dir
}

#[test]
fn a_custom_section_is_appended_as_the_wasm_spec_says() {
    let module =
        std::fs::read(meshward_e2e::paths::wasm_module("meshward_ratelimit").unwrap()).unwrap();
    let bigger = with_custom_section(&module, "x", &[7; 300]);
    assert_eq!(&bigger[..module.len()], module.as_slice());
    // id 0, size 302 (LEB128: 0xae 0x02), name length 1, "x", the payload.
    assert_eq!(
        &bigger[module.len()..module.len() + 5],
        &[0, 0xae, 0x02, 1, b'x']
    );
    assert_eq!(bigger.len(), module.len() + 5 + 300);
}

/// With warming (the mesh's EnvoyFilter): the first configuration names a module this
/// Envoy has not downloaded; Envoy NACKs it, which ends warming, so the listener serves
/// its default until the re-send (200 ms later) has created the plugin — compiling the
/// modules takes most of that. Before, the listener waited for the download; this is
/// the price of `nack_on_code_cache_miss`, measured here.
#[test]
fn remote_modules_with_warming_serve_the_default_until_the_module_is_in() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(3, "perReplica"));
    let control = ControlPlane::start_serving_modules(dir.path(), "meshward_modules").unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let base = Bootstrap::new(upstream.port()).cluster("meshward_modules", control.http_port());
    let envoy = remote_envoy(
        &base,
        control.xds_port(),
        "orders-warm",
        AdsProtocol::Sotw,
        |c| with_pass_through_default(c, true, "20s"),
    );
    let enforced = until_limit(&envoy, 3);
    eprintln!("with warming: enforced {enforced:?} after Envoy was ready");
    assert!(enforced < Duration::from_secs(5), "{enforced:?}");
    until_acked(&control, "orders-warm", None);
}

/// `apply_default_config_without_warming`: the listener serves the pass-through default
/// at once; the configuration that arrives next names a module this Envoy has not
/// downloaded. It used to be ACKed with a plugin that never loaded.
#[test]
fn over_sotw_remote_modules_without_warming_end_enforcing() {
    remote_modules_without_warming_end_enforcing(AdsProtocol::Sotw);
}

#[test]
fn over_delta_remote_modules_without_warming_end_enforcing() {
    remote_modules_without_warming_end_enforcing(AdsProtocol::Delta);
}

fn remote_modules_without_warming_end_enforcing(protocol: AdsProtocol) {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(3, "perReplica"));
    let control = ControlPlane::start_serving_modules(dir.path(), "meshward_modules").unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let base = Bootstrap::new(upstream.port()).cluster("meshward_modules", control.http_port());
    let envoy = remote_envoy(&base, control.xds_port(), "orders-cold", protocol, |c| {
        with_pass_through_default(c, false, "20s")
    });
    let enforced = until_limit(&envoy, 3);
    eprintln!("{protocol:?}: without warming, enforced {enforced:?} after Envoy was ready");
    until_acked(&control, "orders-cold", None);
    assert!(
        metric(
            &control,
            "meshward_control_plane_module_fetch_retries_total"
        ) >= 1,
        "Envoy did not miss its code cache: the test proves nothing\n{}",
        control.metrics()
    );
    assert_eq!(metric(&control, "meshward_control_plane_nacks_total"), 0);
    // And it keeps taking edits.
    write_policy(dir.path(), "limits.yaml", &limit_policy(2, "perReplica"));
    until_limit(&envoy, 2);

    // A configuration the filter refuses gets the same message from Envoy as a missing
    // module; this proxy runs the module, so it is a rejection: recorded at once, never
    // sent again, and the limit stays.
    let retries = metric(
        &control,
        "meshward_control_plane_module_fetch_retries_total",
    );
    write_policy(
        dir.path(),
        "limits.yaml",
        &limit_policy(9, "perReplica").replace("per: 1h", "per: soon"),
    );
    let started = Instant::now();
    let nack = loop {
        let status = control.status();
        let nack = proxy_resource(&status, "orders-cold", "meshward.ratelimit")["nack"].clone();
        if !nack.is_null() {
            break nack;
        }
        assert!(started.elapsed() < BOUND, "no NACK recorded: {status:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        nack["message"], "Unable to create Wasm plugin meshward_ratelimit",
        "{nack}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        metric(
            &control,
            "meshward_control_plane_module_fetch_retries_total"
        ),
        retries,
        "a refused configuration is not sent again"
    );
    assert_eq!(metric(&control, "meshward_control_plane_nacks_total"), 1);
    assert_eq!(admitted(&envoy, 4), 2, "the last good limit stays");
}

/// The control plane is unreachable when the pod starts: after `initial_fetch_timeout`
/// the listener serves the pass-through default; the control plane comes up later. (The
/// mesh's timeout is 20 s; 1 s here.)
#[test]
fn remote_modules_from_a_control_plane_that_comes_up_late_end_enforcing() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "limits.yaml", &limit_policy(3, "perReplica"));
    let (xds_port, http_port) = loop {
        let ports = (
            meshward_e2e::paths::free_port().unwrap(),
            meshward_e2e::paths::free_port().unwrap(),
        );
        if ports.0 != ports.1 {
            break ports;
        }
    };
    let upstream = RecordingUpstream::start().unwrap();
    let base = Bootstrap::new(upstream.port()).cluster("meshward_modules", http_port);
    let envoy = remote_envoy(&base, xds_port, "orders-late", AdsProtocol::Sotw, |c| {
        with_pass_through_default(c, true, "1s")
    });
    assert_eq!(admitted(&envoy, 5), 5, "the pass-through default serves");
    std::thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let control = ControlPlane::start_serving_modules_from(
        dir.path(),
        "meshward_modules",
        &meshward_e2e::paths::wasm_dir(),
        xds_port,
        http_port,
    )
    .unwrap();
    until_limit(&envoy, 3);
    eprintln!(
        "control plane up late: enforced {:?} after it started",
        started.elapsed()
    );
    until_acked(&control, "orders-late", None);
    assert!(
        metric(
            &control,
            "meshward_control_plane_module_fetch_retries_total"
        ) >= 1
    );
}

/// The control plane restarts serving another build of the rate-limit module (another
/// sha256; a control-plane upgrade). The sidecar, which was enforcing, used to ACK the
/// new version and stop enforcing. Now it keeps the old configuration until it has the
/// new module, then ACKs it: the limit holds throughout.
#[test]
fn over_sotw_a_restart_with_another_module_build_keeps_enforcing() {
    restart_with_another_module_build_keeps_enforcing(AdsProtocol::Sotw);
}

#[test]
fn over_delta_a_restart_with_another_module_build_keeps_enforcing() {
    restart_with_another_module_build_keeps_enforcing(AdsProtocol::Delta);
}

fn restart_with_another_module_build_keeps_enforcing(protocol: AdsProtocol) {
    const LIMIT: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "limits.yaml",
        &limit_policy(LIMIT, "perReplica"),
    );
    let mut control = ControlPlane::start_serving_modules(dir.path(), "meshward_modules").unwrap();
    let upstream = RecordingUpstream::start().unwrap();
    let base = Bootstrap::new(upstream.port()).cluster("meshward_modules", control.http_port());
    let envoy = remote_envoy(
        &base,
        control.xds_port(),
        "orders-upgrade",
        protocol,
        |_| {},
    );
    until_limit(&envoy, LIMIT);
    let before = until_acked(&control, "orders-upgrade", None);
    let another_build = modules_with_another_ratelimit_build();

    // Probe all along: a fresh client gets LIMIT requests through and the next is a 429.
    let port = envoy.port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut probes: Vec<(Instant, Instant, bool)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let client = fresh_client();
                let statuses: Vec<u16> = (0..=LIMIT)
                    .map(|_| {
                        Request::get("/orders")
                            .header("x-client", &client)
                            .send(port)
                            .map_or(0, |r| r.status)
                    })
                    .collect();
                let enforcing = statuses[..LIMIT as usize].iter().all(|s| *s == 200)
                    && statuses[LIMIT as usize] == 429;
                probes.push((started, Instant::now(), enforcing));
                std::thread::sleep(Duration::from_millis(10));
            }
            probes
        })
    };

    let restarted = Instant::now();
    control
        .restart_serving_modules_from(another_build.path())
        .unwrap();
    let after = until_acked(&control, "orders-upgrade", Some(&before["ackedVersion"]));
    let converged = restarted.elapsed();
    // A little more probing with the new module in force.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let probes = probe.join().unwrap();

    // The longest stretch without enforcement: from the end of the last enforcing probe
    // before it to the start of the first one after.
    let mut longest = Duration::ZERO;
    let mut last_good_end: Option<Instant> = None;
    let mut in_gap = false;
    for (start, end, enforcing) in &probes {
        match (enforcing, in_gap) {
            (false, _) => in_gap = true,
            (true, true) => {
                let from = last_good_end.unwrap_or(restarted);
                longest = longest.max(start.saturating_duration_since(from));
                in_gap = false;
                last_good_end = Some(*end);
            }
            (true, false) => last_good_end = Some(*end),
        }
    }
    assert!(!in_gap, "not enforcing at the end: {probes:?}");
    let failed = probes.iter().filter(|p| !p.2).count();
    eprintln!(
        "{protocol:?}: new module ACKed {converged:?} after the restart; {} probes, {failed} not enforcing, longest pass-through window {longest:?}; re-sends {}",
        probes.len(),
        metric(&control, "meshward_control_plane_module_fetch_retries_total"),
    );
    // Never a pass-through window longer than the first re-send delay (there should be
    // none: Envoy keeps its configuration until it has the module).
    assert!(
        longest <= meshward_control_plane::xds::code_cache::FIRST_DELAY,
        "pass-through for {longest:?} ({failed} of {} probes)",
        probes.len()
    );
    assert_ne!(after["ackedVersion"], before["ackedVersion"]);
    assert!(
        metric(
            &control,
            "meshward_control_plane_module_fetch_retries_total"
        ) >= 1
    );
    assert_eq!(metric(&control, "meshward_control_plane_nacks_total"), 0);
    // The new build is what runs: the limit is still enforced by it.
    until_limit(&envoy, LIMIT);
}
