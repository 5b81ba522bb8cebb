//! The `meshward-control-plane` binary as an operator runs it: it reports its bound
//! addresses, serves an ADS stream, and on SIGTERM closes the stream and exits 0 within
//! a few seconds; bad flags exit 2 with the usage.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const BINARY: &str = env!("CARGO_BIN_EXE_meshward-control-plane");
const TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

#[test]
fn bad_flags_exit_2_with_the_usage() {
    let out = Command::new(BINARY).arg("--policy-dri").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown option --policy-dri"), "{stderr}");
    assert!(
        stderr.contains("usage: meshward-control-plane --policy-dir DIR"),
        "{stderr}"
    );
}

#[test]
fn sigterm_closes_the_streams_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BINARY)
        .args(["--policy-dir"])
        .arg(dir.path())
        .args(["--xds-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let xds = lines.next().unwrap().unwrap();
    let xds = xds
        .strip_prefix("xds ")
        .expect("first line: xds ADDR")
        .to_owned();
    let http = lines.next().unwrap().unwrap();
    assert!(http.starts_with("http 127.0.0.1:"), "{http}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(DiscoveryRequest {
            node: Some(Node {
                id: "proxy-1".into(),
                cluster: "orders".into(),
                ..Default::default()
            }),
            type_url: TYPE_URL.into(),
            resource_names: vec!["meshward.ratelimit".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.resources.len(), 1, "the pass-through config");

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // The server ends the stream (Envoy would reconnect elsewhere or later).
        let end = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("the stream ends within 5 s");
        assert!(!matches!(end, Ok(Some(_))), "no further response: {end:?}");
        drop(tx);
    });
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
