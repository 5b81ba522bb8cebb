//! The rate-limit service as an operator runs it: `meshward-control-plane rls ...` alone,
//! and the full control plane with `--redis-url`. Both print `rls ADDR`; with Redis
//! unreachable the service still starts and answers `UNAVAILABLE` within
//! `--redis-timeout` for known rules (`OK` for unknown domains: nothing to enforce).
//! Against a real Valkey: e2e/tests/rls_service.rs.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

const BINARY: &str = env!("CARGO_BIN_EXE_meshward-control-plane");
/// Nothing listens on port 1.
const NO_REDIS: &str = "redis://127.0.0.1:1";

const POLICY: &str = r#"
apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders-limit, namespace: shop}
spec:
  scope: global
  config:
    rules:
      - {name: r, limit: {algorithm: tokenBucket, requests: 10, per: 1s}}
"#;

struct Process {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(BINARY)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Process { child, lines }
    }

    /// The next stdout line, `<label> ADDR` → ADDR.
    fn address(&mut self, label: &str) -> String {
        let line = self.lines.next().unwrap().unwrap();
        line.strip_prefix(&format!("{label} "))
            .unwrap_or_else(|| panic!("expected `{label} ADDR`, got {line:?}"))
            .to_owned()
    }

    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(domain: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "rule".into(),
                value: "r".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

/// Unknown domain → OK; the policy's domain → UNAVAILABLE within the timeout + margin.
fn check_answers(rls: &str, timeout: Duration) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = RateLimitServiceClient::connect(format!("http://{rls}"))
            .await
            .unwrap();
        let unknown = client
            .should_rate_limit(request("shop/unknown"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unknown.overall_code, Code::Ok as i32);
        for _ in 0..3 {
            let start = Instant::now();
            let status = client
                .should_rate_limit(request("shop/orders-limit"))
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(
                start.elapsed() < timeout + Duration::from_millis(200),
                "{:?}",
                start.elapsed()
            );
        }
    });
}

#[test]
fn the_rls_subcommand_serves_the_rate_limit_service_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("limits.yaml"), POLICY).unwrap();
    let policy_dir = dir.path().to_str().unwrap();
    let mut process = Process::start(&[
        "rls",
        "--policy-dir",
        policy_dir,
        "--redis-url",
        NO_REDIS,
        "--redis-timeout",
        "100ms",
        "--rls-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let rls = process.address("rls");
    let http = process.address("http");
    check_answers(&rls, Duration::from_millis(100));
    // The metrics say why.
    let metrics = http_get(&http, "/metrics");
    assert!(
        metrics.contains(r#"meshward_control_plane_redis_errors_total{op="rls_token_bucket"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshward_control_plane_rls_decisions_total{code="error"} 3"#),
        "{metrics}"
    );
    process.terminate();
}

#[test]
fn the_full_control_plane_serves_rls_when_given_a_redis_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("limits.yaml"), POLICY).unwrap();
    let mut process = Process::start(&[
        "--policy-dir",
        dir.path().to_str().unwrap(),
        "--xds-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--rls-addr",
        "127.0.0.1:0",
        "--redis-url",
        NO_REDIS,
    ]);
    process.address("xds");
    process.address("http");
    let rls = process.address("rls");
    check_answers(&rls, Duration::from_millis(50));
    process.terminate();
}

#[test]
fn rls_flags_are_checked() {
    for (args, message) in [
        (
            &["rls", "--policy-dir", "/tmp"][..],
            "rls: --redis-url is required",
        ),
        (
            &["rls", "--redis-url", NO_REDIS][..],
            "rls: --policy-dir or --kubernetes is required",
        ),
        (
            &[
                "rls",
                "--policy-dir",
                "/tmp",
                "--redis-url",
                NO_REDIS,
                "--xds-addr",
                "x",
            ][..],
            "rls: unknown option --xds-addr",
        ),
        (
            &["--policy-dir", "/tmp", "--redis-url", "http://nope"][..],
            "--redis-url http://nope",
        ),
    ] {
        let out = Command::new(BINARY).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// A plain HTTP/1.1 GET (the body).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response)
}
