//! `cargo xtask bench global`: what state across replicas costs per request, in one run —
//! the rate-limit filter deciding locally vs through the control plane's rate-limit
//! service (Envoy's RLS API on Valkey), and the idempotency filter with its embedded
//! store vs the remote store service (also on Valkey).
//!
//! Envoy (1 worker) is pinned to CPU 0 and wrk to CPU 1 as in the other benches; the
//! control plane (release build, its own process) and Valkey are not pinned (they share the machine: on 2 cores their
//! work lands mostly on CPU 1 next to wrk, and part of it on Envoy's core). The figures
//! that matter are the latencies: a global decision adds a network round trip and a
//! Redis script to every request, which throughput on a pinned core does not show.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshward_e2e::bootstrap::meshward_filter;
use meshward_e2e::valkey::Valkey;
use meshward_e2e::Bootstrap;

use crate::bench::ScenarioSpec;
use crate::run::{cargo, root, step};

const RULES: &str = r#"[{"name":"bench","key":[{"type":"clientAddress"}],"limit":{"algorithm":"tokenBucket","requests":1000000000,"per":"1s","burst":1000000000}}]"#;

/// The same policy the rate-limit service serves for domain `bench/limits`.
const POLICY: &str = r#"apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: limits, namespace: bench}
spec:
  scope: global
  config:
    rules:
      - name: bench
        key: [{type: clientAddress}]
        limit: {algorithm: tokenBucket, requests: 1000000000, per: 1s, burst: 1000000000}
"#;

/// Valkey and the release control-plane binary (rate-limit service + idempotency store).
pub struct Services {
    _valkey: Valkey,
    child: Child,
    rls_port: u16,
    store_port: u16,
    http_addr: String,
}

impl Services {
    pub fn start() -> Result<Services, String> {
        step(
            "build the control plane (release)",
            cargo().args(["build", "--release", "-p", "meshward-control-plane"]),
        )?;
        println!("starting Valkey and the control plane (rate-limit service, idempotency store)");
        let valkey = Valkey::start()?;
        let policies = root().join("target/bench/global-policies");
        std::fs::create_dir_all(&policies).map_err(|e| e.to_string())?;
        std::fs::write(policies.join("limits.yaml"), POLICY).map_err(|e| e.to_string())?;
        let binary = root().join("target/release/meshward-control-plane");
        let mut child = Command::new(&binary)
            .arg("--policy-dir")
            .arg(&policies)
            .args(["--xds-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--redis-url", &valkey.url(), "--redis-timeout", "50ms"])
            .args(["--rls-addr", "127.0.0.1:0", "--store-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("stdout not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut rls, mut store, mut http) = (None, None, None);
        while rls.is_none() || store.is_none() || http.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                return Err("the control plane exited before printing its addresses".into());
            };
            let port = |addr: &str| {
                addr.trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
            };
            if let Some(addr) = line.strip_prefix("rls ") {
                rls = port(addr);
            } else if let Some(addr) = line.strip_prefix("store ") {
                store = port(addr);
            } else if let Some(addr) = line.strip_prefix("http ") {
                http = Some(addr.trim().to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Ok(Services {
            _valkey: valkey,
            child,
            rls_port: rls.unwrap_or_default(),
            store_port: store.unwrap_or_default(),
            http_addr: http.unwrap_or_default(),
        })
    }

    fn ports(&self) -> Result<(u16, u16), String> {
        Ok((self.rls_port, self.store_port))
    }

    /// The services' own view, for the report: Redis errors should be 0.
    pub fn check(&self) -> String {
        let metrics = http_get(&self.http_addr, "/metrics").unwrap_or_default();
        let errors: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("meshward_control_plane_redis_errors_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        // `+ 0.0`: an empty f64 sum is -0.
        format!("Redis errors seen by the control plane: {}.", errors + 0.0)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Scenarios: rate limit (direct response) bare / local / global, then idempotency
/// (two hops, the backend a second listener of the same Envoy) bare / embedded / remote
/// store, first executions and replays. "vs native" compares global with local.
pub fn scenarios(
    services: &Services,
    unique: Vec<String>,
    fixed: Vec<String>,
) -> Result<Vec<ScenarioSpec>, String> {
    let (rls_port, store_port) = services.ports()?;
    let local = format!(r#"{{"rules":{RULES}}}"#);
    let global = format!(
        r#"{{"global":{{"domain":"bench/limits","cluster":"meshward-rls","timeout":"100ms"}},"rules":{RULES}}}"#
    );
    let with_services = |bootstrap: Bootstrap| {
        bootstrap
            .grpc_cluster("meshward-rls", rls_port)
            .grpc_cluster("meshward-store", store_port)
    };
    let direct = with_services(Bootstrap::new(1).direct_response());
    let two_hops = |filter| with_services(crate::bench::two_hops(filter));
    let embedded = r#"{"maxEntries":100000,"maxStoredBytes":268435456}"#;
    let remote = r#"{"store":{"type":"remote","cluster":"meshward-store","timeout":"100ms"}}"#;
    Ok(vec![
        ("bare Envoy", direct.clone(), vec![], None),
        (
            "ratelimit, local",
            direct
                .clone()
                .meshward_filter("meshward_ratelimit", &local)?,
            vec![],
            None,
        ),
        (
            "ratelimit, global (RLS)",
            direct.meshward_filter("meshward_ratelimit", &global)?,
            vec![],
            Some(1),
        ),
        ("bare Envoy (2 hops)", two_hops(None), fixed.clone(), None),
        (
            "idempotency, embedded, first",
            two_hops(Some(meshward_filter("meshward_idempotency", embedded)?)),
            unique.clone(),
            None,
        ),
        (
            "idempotency, remote, first",
            two_hops(Some(meshward_filter("meshward_idempotency", remote)?)),
            unique,
            Some(4),
        ),
        (
            "idempotency, embedded, replay",
            two_hops(Some(meshward_filter("meshward_idempotency", embedded)?)),
            fixed.clone(),
            None,
        ),
        (
            "idempotency, remote, replay",
            two_hops(Some(meshward_filter("meshward_idempotency", remote)?)),
            fixed,
            Some(6),
        ),
    ])
}
