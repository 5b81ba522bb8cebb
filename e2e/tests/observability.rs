//! The Grafana dashboard against real data: a real Prometheus (Debian's) scrapes a real
//! Envoy running all four filters (configured over ECDS by the control plane) and the
//! control plane's /metrics, with the scrape jobs of istio-manifests/prometheus/
//! unchanged (only Kubernetes discovery is replaced by static targets carrying the same
//! `__meta_kubernetes_*` labels) and the stats tags of the Istio bootstrap override.
//! The test drives traffic that moves every panel — 429s and shadow decisions, authz
//! denials by reason, JWKS fetches ok and failed, idempotency executions, replays,
//! conflicts and mismatches, trace propagation and restarts, control-plane pushes, a
//! NACK, a refused policy file, runtime-tuning reports — then evaluates every PromQL
//! expression of istio-manifests/grafana/meshward.json through Prometheus's HTTP API
//! (variables from the dashboard's own `label_values` queries): each must return a
//! series with a value above 0 (the store-errors panel: a series).

use std::path::Path;
use std::time::{Duration, Instant};

use meshward_e2e::control_plane::{ecds_bootstrap, ControlPlane};
use meshward_e2e::paths::workspace_root;
use meshward_e2e::prometheus::Prometheus;
use meshward_e2e::{
    Bootstrap, Envoy, EnvoyOptions, JwksServer, RecordedRequest, RecordingUpstream, Reply, Request,
};
use meshward_jwt_testkit::{jwks, now_secs, Alg, Signer};
use serde_json::{json, Value};

/// Every wait is bounded by this.
const BOUND: Duration = Duration::from_secs(20);
const ISSUER: &str = "https://issuer.test";
const FILTERS: [&str; 4] = [
    "meshward.trace-inject",
    "meshward.authz",
    "meshward.ratelimit",
    "meshward.idempotency",
];
/// Panels whose series are 0 in a healthy mesh (failures an operator hopes never to see).
const MAY_BE_ZERO: [&str; 1] = ["Rate-limit store errors"];

fn write_policy(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn ratelimit_policy(algorithm: &str, requests: u64) -> String {
    format!(
        r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: orders-limits, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  config:
    rules:
      - name: per-client
        match: {{path: {{prefix: /public}}}}
        key: [{{type: header, name: x-client, default: anonymous}}]
        limit: {{algorithm: {algorithm}, requests: {requests}, per: 1h}}
      - name: login-shadow
        shadow: true
        match: {{path: {{exact: /login}}}}
        key: [{{type: header, name: x-client, default: anonymous}}]
        limit: {{algorithm: tokenBucket, requests: 1, per: 1h}}
"#
    )
}

const OTHER_POLICIES: &str = r#"apiVersion: meshward.io/v1alpha1
kind: AuthPolicy
metadata: {name: orders-auth, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  config:
    realm: orders
    providers:
      - name: main
        issuer: https://issuer.test
        audiences: [orders]
        jwks:
          remote:
            cluster: jwks
            uri: http://jwks.test/keys
            cacheDuration: 300s
            retryInterval: 1s
            unknownKidRefetchInterval: 1s
    rules:
      - {name: admin, action: allow, match: {path: {prefix: /admin}}}
      - {name: public, action: allow, require: anonymous}
---
apiVersion: meshward.io/v1alpha1
kind: IdempotencyPolicy
metadata: {name: orders-idempotency, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  config:
    routes:
      - {name: pay, match: {path: {prefix: /pay}}, key: optional}
---
apiVersion: meshward.io/v1alpha1
kind: TracePolicy
metadata: {name: shop-tracing, namespace: shop}
spec:
  selector: {}
  config: {}
---
apiVersion: meshward.io/v1alpha1
kind: RuntimeTuning
metadata: {name: orders-runtime, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  gogc: {adaptive: {min: 50, max: 400}}
"#;

/// A YAML file of the repository as JSON.
fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The stats tags of the Istio bootstrap override (what sidecars get in a mesh).
fn manifest_stats_config() -> Value {
    let configmap = yaml("istio-manifests/app-namespace/bootstrap-configmap.yaml");
    let text = configmap["data"]["custom_bootstrap.json"].as_str().unwrap();
    let bootstrap: Value = serde_json::from_str(text).unwrap();
    bootstrap["stats_config"].clone()
}

/// The shipped scrape jobs, every 1 s, with static targets labelled as Kubernetes
/// discovery would label the pods.
fn prometheus_config(envoy_admin: u16, control_plane_http: u16) -> Value {
    let mut config = yaml("istio-manifests/prometheus/scrape-config.yaml");
    config["global"] = json!({"scrape_interval": "1s", "evaluation_interval": "1s"});
    for job in config["scrape_configs"].as_array_mut().unwrap() {
        let job = job.as_object_mut().unwrap();
        assert!(
            job.remove("kubernetes_sd_configs").is_some(),
            "scrape-config.yaml: a job without Kubernetes discovery"
        );
        job.insert("scrape_interval".into(), json!("1s"));
        let target = match job["job_name"].as_str().unwrap() {
            "meshward-sidecars" => json!({
                "targets": [format!("127.0.0.1:{envoy_admin}")],
                "labels": {
                    "__meta_kubernetes_namespace": "shop",
                    "__meta_kubernetes_pod_name": "orders-7d9f-1",
                    "__meta_kubernetes_pod_container_port_name": "http-envoy-prom",
                    "__meta_kubernetes_pod_label_service_istio_io_canonical_name": "orders"
                }
            }),
            "meshward-control-plane" => json!({
                "targets": [format!("127.0.0.1:{control_plane_http}")],
                "labels": {
                    "__meta_kubernetes_namespace": "meshward-system",
                    "__meta_kubernetes_pod_name": "meshward-control-plane-0",
                    "__meta_kubernetes_pod_container_port_name": "http",
                    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "meshward-control-plane"
                }
            }),
            other => panic!("scrape-config.yaml: unknown job {other}"),
        };
        job.insert("static_configs".into(), json!([target]));
    }
    config
}

fn upstream() -> RecordingUpstream {
    RecordingUpstream::start_with(
        "127.0.0.1:0",
        std::sync::Arc::new(|request: &RecordedRequest| {
            if request.path.contains("/slow") {
                std::thread::sleep(Duration::from_millis(1500));
            }
            Reply::echo(request)
        }),
    )
    .unwrap()
}

fn status(envoy: &Envoy, request: Request) -> u16 {
    request.send(envoy.port()).map(|r| r.status).unwrap_or(0)
}

fn token(signer: &Signer) -> String {
    let now = now_secs();
    signer.sign(
        &json!({"iss": ISSUER, "aud": "orders", "sub": "alice", "iat": now, "exp": now + 600}),
    )
}

fn admin(envoy: &Envoy, token: &str) -> u16 {
    status(
        envoy,
        Request::get("/admin").header("authorization", &format!("Bearer {token}")),
    )
}

fn pay(key: &str, body: &str) -> Request {
    Request::post("/pay", body.as_bytes())
        .header("idempotency-key", &format!("\"{key}\""))
        .header("content-type", "application/json")
}

/// Polls `check` until it returns Ok or BOUND passes.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        match check() {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {BOUND:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// (panel title, expression) for every query of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        })
        .collect()
}

fn substitute(expr: &str, variables: &[(String, String)]) -> String {
    let mut out = expr.replace("$__rate_interval", "1m");
    for (name, value) in variables {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let started = Instant::now();
    meshward_e2e::prometheus::binary().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    write_policy(
        &policies,
        "limits.yaml",
        &ratelimit_policy("tokenBucket", 3),
    );
    write_policy(&policies, "others.yaml", OTHER_POLICIES);

    let k1 = Signer::generate(Alg::ES256, "k1");
    let k2 = Signer::generate(Alg::ES256, "k2");
    let jwks_server = JwksServer::start(&jwks(&[&k1])).unwrap();
    let control = ControlPlane::start(&policies).unwrap();
    let upstream = upstream();
    let mut config = ecds_bootstrap(
        &Bootstrap::new(upstream.port()).cluster("jwks", jwks_server.port()),
        control.xds_port(),
        "orders-7d9f-1",
        "shop",
        "orders",
        &[("app", "orders")],
        &FILTERS,
    );
    config["stats_config"] = manifest_stats_config();
    let envoy = Envoy::start_config(&config, &EnvoyOptions::default()).unwrap();
    eventually("the four configurations ACKed", || {
        let status = control.status();
        let resources = &status["proxies"]["orders-7d9f-1"]["resources"];
        FILTERS
            .iter()
            .all(|f| resources[f]["ackedVersion"].is_string())
            .then_some(())
            .ok_or(format!("{status}"))
    });
    eventually("the first JWKS load", || {
        (admin(&envoy, &token(&k1)) == 200)
            .then_some(())
            .ok_or("not yet".to_owned())
    });

    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir(&prometheus_dir).unwrap();
    let prometheus = Prometheus::start(
        &prometheus_config(envoy.admin_port(), control.http_port()),
        &prometheus_dir,
    )
    .unwrap();
    // Traffic only after a first scrape of both targets, so every counter's increase
    // falls between two samples.
    eventually("both targets scraped", || {
        let up = prometheus.query("up == 1")?;
        let filters = prometheus.query("meshward_trace_inject_generated")?;
        (up.len() == 2 && !filters.is_empty())
            .then_some(())
            .ok_or(format!("up: {up:?}"))
    });

    // Rate limits: 3 allowed, then 429s; the shadow rule would refuse the 2nd /login.
    for _ in 0..5 {
        status(&envoy, Request::get("/public").header("x-client", "c1"));
    }
    for _ in 0..2 {
        status(&envoy, Request::get("/login").header("x-client", "c2"));
    }
    // Authz: no token, a token signed by an unknown key of a known kid (signature).
    assert_eq!(status(&envoy, Request::get("/admin")), 401);
    let forged = Signer::generate(Alg::ES256, "k1");
    assert_eq!(admin(&envoy, &token(&forged)), 401);
    // JWKS: a new kid while the issuer fails (fetch failed), then served (fetch ok).
    jwks_server.set_failing(true);
    let fetches = jwks_server.fetches();
    assert_ne!(admin(&envoy, &token(&k2)), 200);
    assert!(jwks_server.wait_for_fetches(fetches + 1, BOUND));
    jwks_server.set_failing(false);
    jwks_server.set_document(&jwks(&[&k1, &k2]));
    eventually("k2 accepted after a re-fetch", || {
        (admin(&envoy, &token(&k2)) == 200)
            .then_some(())
            .ok_or("not yet".to_owned())
    });
    // Idempotency: execution, replay, mismatch, and a conflict while one is in flight.
    assert_eq!(status(&envoy, pay("k-1", "{\"qty\":1}")), 200);
    assert_eq!(status(&envoy, pay("k-1", "{\"qty\":1}")), 200);
    assert_eq!(status(&envoy, pay("k-1", "{\"qty\":2}")), 422);
    let port = envoy.port();
    let slow = std::thread::spawn(move || {
        Request::post("/pay/slow", b"{}")
            .header("idempotency-key", "\"k-2\"")
            .send(port)
            .map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(400));
    let conflict = status(
        &envoy,
        Request::post("/pay/slow", b"{}").header("idempotency-key", "\"k-2\""),
    );
    assert_eq!(conflict, 409);
    assert_eq!(slow.join().unwrap(), Ok(200));
    // Trace context: continued, and restarted because it was invalid.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    status(
        &envoy,
        Request::get("/trace").header("traceparent", traceparent),
    );
    status(
        &envoy,
        Request::get("/trace").header("traceparent", "00-not-a-trace"),
    );
    // Control plane: a configuration the filter refuses (NACK), then a good one again;
    // a policy file it refuses itself; tuning reports (heap near the limit).
    write_policy(
        &policies,
        "limits.yaml",
        &ratelimit_policy("noSuchAlgorithm", 3),
    );
    eventually("the NACK", || {
        let status = control.status();
        status["proxies"]["orders-7d9f-1"]["resources"]["meshward.ratelimit"]["nack"]
            .is_object()
            .then_some(())
            .ok_or(format!("{status}"))
    });
    // A new valid version (the old one is what the proxy still runs): pushed, ACKed.
    write_policy(
        &policies,
        "limits.yaml",
        &ratelimit_policy("tokenBucket", 4),
    );
    write_policy(&policies, "broken.yaml", "kind: [this is not a policy");
    let report = json!({
        "nodeId": "orders-app-1", "namespace": "shop", "workload": "orders",
        "labels": {"app": "orders"}, "pod": "orders-7d9f-1", "container": "app",
        "memoryLimitBytes": 104_857_600u64, "liveHeapBytes": 99_000_000u64, "agent": "test"
    });
    for _ in 0..2 {
        let reply = Request::post("/tuning/v1/report", report.to_string().as_bytes())
            .header("content-type", "application/json")
            .send(control.http_port())
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body_text());
    }

    // The dashboard's variables, as Grafana resolves them.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("istio-manifests/grafana/meshward.json"))
            .unwrap(),
    )
    .unwrap();
    let mut variables: Vec<(String, String)> = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim(), &variables);
        let name = variable["name"].as_str().unwrap().to_owned();
        let values = eventually(&format!("values of ${name}"), || {
            let values = prometheus.label_values(label.trim(), &selector)?;
            values
                .first()
                .cloned()
                .ok_or(format!("none for {selector}"))
        });
        variables.push((name, values));
    }
    assert_eq!(
        variables,
        [
            ("namespace".to_owned(), "shop".to_owned()),
            ("workload".to_owned(), "orders".to_owned())
        ]
    );

    // Every query: a series, and (but for MAY_BE_ZERO) a value above 0.
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut failing = Vec::new();
    let deadline = Instant::now() + BOUND;
    loop {
        failing.clear();
        for (title, expr) in &queries {
            let expr = substitute(expr, &variables);
            let result = prometheus
                .query(&expr)
                .unwrap_or_else(|e| panic!("{title}: {expr}: {e}"));
            let moved = result.iter().any(|(_, v)| *v > 0.0);
            if result.is_empty() || !(moved || MAY_BE_ZERO.contains(&title.as_str())) {
                failing.push(format!("{title}: {expr} → {result:?}"));
            }
        }
        if failing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        failing.is_empty(),
        "dashboard queries without data:\n{}\n--- Envoy's /stats/prometheus (meshward)\n{}",
        failing.join("\n"),
        envoy
            .prometheus()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("meshward"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} dashboard queries returned data in {:.1}s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );
}
