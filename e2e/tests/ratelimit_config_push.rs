//! A bad rate-limit config pushed at runtime (filesystem LDS) is refused by Envoy, the
//! error names the JSON path, and the last good config keeps serving; a good push
//! takes effect while the buckets' state survives it. Runs twice, against the filter's
//! own module (`separate::…`) and against the bundle `meshward_bundle` with only its
//! `ratelimit` section (`bundle::…`), with the same assertions.

use std::path::Path;
use std::time::Duration;

use meshward_e2e::{Bootstrap, Envoy, EnvoyOptions, Packaging, RecordingUpstream, Request};

/// Writes the LDS file atomically (Envoy reacts to the rename).
fn push(dir: &Path, bootstrap: &Bootstrap, version: &str) {
    let tmp = dir.join("lds.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&bootstrap.lds_file(version)).unwrap(),
    )
    .unwrap();
    std::fs::rename(&tmp, dir.join("lds.json")).unwrap();
}

fn config(requests: u64, per: &str, burst: u64, legacy: bool) -> String {
    format!(
        r#"{{"responseHeaders":{{"legacy":{legacy}}},"rules":[{{"name":"r","limit":{{"algorithm":"tokenBucket","requests":{requests},"per":"{per}","burst":{burst}}}}}]}}"#
    )
}

fn runtime_pushes_bad_ones_refused_good_ones_applied_and_buckets_survive(packaging: Packaging) {
    let upstream = RecordingUpstream::start().unwrap();
    // Its own folder per test: both packagings may run in one process at once.
    let lds_dir = tempfile::Builder::new()
        .prefix("meshward-lds-")
        .tempdir()
        .unwrap();
    let dir = lds_dir.path();
    let port = meshward_e2e::paths::free_port().unwrap();
    let listener = |cfg: &str| {
        Bootstrap::new(upstream.port())
            .fixed_ports(port, 0)
            .packaged_filter(packaging, "meshward_ratelimit", cfg)
            .unwrap()
    };
    let good = listener(&config(1, "1h", 2, false));
    push(dir, &good, "1");
    let envoy = Envoy::start_config(
        &good.to_json_with_lds(&dir.join("lds.json")),
        &EnvoyOptions::default(),
    )
    .unwrap();
    assert!(
        envoy.eventually(Duration::from_secs(20), |e| e
            .listener_port("ingress")
            .is_ok()),
        "listener from LDS"
    );
    let send = || Request::get("/").send(port).unwrap();
    assert_eq!(
        [send().status, send().status, send().status],
        [200, 200, 429]
    );

    // Invalid: refused by Envoy, error names the path, the last good config serves on.
    push(dir, &listener(&config(1, "forever", 2, false)), "2");
    assert!(
        envoy.eventually(Duration::from_secs(20), |e| e
            .counter("listener_manager.lds.update_rejected")
            >= 1),
        "Envoy must reject the update"
    );
    assert!(
        envoy.log().contains("rules[0].limit.per:"),
        "the error names the JSON path"
    );
    assert_eq!(
        send().status,
        429,
        "the last good config (and its state) keeps serving"
    );

    // Valid, same limit, legacy headers on: the new config is live (the header shows
    // it) and the empty bucket survived the push (still 429).
    push(dir, &listener(&config(1, "1h", 2, true)), "3");
    assert!(
        envoy.eventually(Duration::from_secs(20), |_| send()
            .header("x-ratelimit-limit")
            .is_some()),
        "the pushed config applies"
    );
    assert_eq!(
        send().status,
        429,
        "token bucket state survives a config push"
    );

    // Valid, fast refill: admitted again.
    push(dir, &listener(&config(1000, "1s", 100, true)), "4");
    assert!(
        envoy.eventually(Duration::from_secs(20), |_| send().status == 200),
        "the new limit applies"
    );
    assert_eq!(envoy.counter("listener_manager.lds.update_rejected"), 1);
}

meshward_e2e::packaged_tests!(
    runtime_pushes_bad_ones_refused_good_ones_applied_and_buckets_survive
);
