//! The sidecar the manifests describe, run for real on this machine: the EnvoyFilters'
//! filters and the bootstrap override's clusters pointed at 127.0.0.1. Without a control
//! plane each filter falls back as its `meshward.io/failure-mode` says; with the control
//! plane binary started with the Deployment's own flags, the sidecar downloads the four
//! modules and enforces the example RateLimitPolicy. And the Deployment's flags parse.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshward_control_plane::policy::model::Kind;
use serde_json::{json, Value};

use crate::mesh::{mesh, sidecar_bootstrap, Mesh};
use crate::objects::rendered;
use crate::support::{
    documents, envoy_binary, free_port, get, root, sidecar_node_with, str_at, wasm_module, Process,
    Reply, WAIT,
};

const BINARY: &str = env!("CARGO_BIN_EXE_meshward-control-plane");

/// The echo pod's sidecar on this machine: `inbound` and `outbound` filters, the
/// bootstrap override's clusters pointed at 127.0.0.1 — STATIC, since nothing here may
/// resolve cluster DNS names (`ports`: xDS, HTTP). Returns Envoy and its inbound port.
fn start_sidecar(
    mesh: &Mesh,
    dir: &Path,
    ports: (u16, u16),
    inbound: Vec<Value>,
    outbound: Vec<Value>,
) -> (Process, u16) {
    let xds_cluster = inbound
        .first()
        .and_then(|f| f.pointer("/config_discovery/config_source/api_config_source/grpc_services/0/envoy_grpc/cluster_name"))
        .cloned();
    let mut bootstrap = sidecar_bootstrap(mesh, inbound, outbound);
    for cluster in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
    {
        let port = if Some(&cluster["name"]) == xds_cluster.as_ref() {
            ports.0
        } else {
            ports.1
        };
        cluster["type"] = json!("STATIC");
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"] = json!({"address": "127.0.0.1", "port_value": port});
    }
    bootstrap["admin"] =
        json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}});
    let config = dir.join("sidecar.json");
    std::fs::write(&config, bootstrap.to_string()).unwrap();
    let log = dir.join("envoy.log");
    let admin_file = dir.join("admin.address");
    let mut envoy = Process::spawn(
        Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "info"])
            .arg("--log-path")
            .arg(&log)
            .arg("--admin-address-path")
            .arg(&admin_file),
        log,
    );
    let port = envoy.listener_port(&admin_file);
    (envoy, port)
}

/// The first answer of a listener, which refuses connections while it warms.
fn first_reply(envoy: &Process, port: u16) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        match get(port, "/") {
            Ok(reply) => return reply,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", envoy.log()),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn two_free_ports() -> (u16, u16) {
    let first = free_port();
    loop {
        let second = free_port();
        if second != first {
            return (first, second);
        }
    }
}

/// With the control plane unreachable, each filter's `default_config` applies once the
/// initial fetch times out (shortened from the manifests' 20 s; the rest is as rendered):
/// the base fails closed (authz: 503 problem+json), the authz-fail-open overlay lets
/// traffic through.
#[test]
fn without_a_control_plane_each_filter_fails_as_documented() {
    let mesh = mesh();
    for (rendering, status) in [
        ("istio-manifests", 503),
        ("istio-manifests/overlays/authz-fail-open", 200),
    ] {
        let (mut inbound, mut outbound) = crate::mesh::chains(&rendered(rendering));
        for filter in inbound.iter_mut().chain(outbound.iter_mut()) {
            filter["config_discovery"]["config_source"]["initial_fetch_timeout"] = json!("1s");
        }
        let dir = tempfile::tempdir().unwrap();
        let (envoy, port) = start_sidecar(&mesh, dir.path(), two_free_ports(), inbound, outbound);
        let reply = first_reply(&envoy, port);
        assert_eq!(
            reply.status,
            status,
            "{rendering}: {reply:?}\n{}",
            envoy.log()
        );
        if status == 503 {
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json")
            );
            assert!(reply.body.contains("fail-closed"), "{}", reply.body);
        }
        assert!(reply.header("ratelimit-policy").is_none(), "{reply:?}");
    }
}

/// The sidecar as it starts in the cluster, with the control plane up: started with the
/// Deployment's own flags (minus the API server: the example policy comes from a file,
/// through the same checks) and the addresses rewritten to this machine. Envoy fetches
/// the four modules through the module cluster and enforces the example RateLimitPolicy.
#[test]
fn with_the_control_plane_the_sidecar_enforces_the_example_policy() {
    let wasm_dir = root().join("target/meshward-wasm");
    wasm_module(Kind::RateLimit.module());
    let mesh = mesh();
    let dir = tempfile::tempdir().unwrap();
    let (xds_port, http_port) = two_free_ports();

    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let example = root().join("istio-manifests/examples/ratelimitpolicy.yaml");
    std::fs::copy(&example, policies.join("ratelimitpolicy.yaml")).unwrap();
    let args = local_args(&mesh.args, &policies, xds_port, http_port, &wasm_dir);
    let control = Process::spawn(
        Command::new(BINARY).args(&args).stdout(Stdio::piped()),
        dir.path().join("control-plane.log"),
    )
    .wait_listening();
    let (envoy, port) = start_sidecar(
        &mesh,
        dir.path(),
        (xds_port, http_port),
        mesh.inbound.clone(),
        mesh.outbound.clone(),
    );

    // The example is in force once a response names its rule (`onAllowed` fields).
    // Until then the listener warms, or serves the defaults while Envoy fetches a module
    // the control plane sends again (a configuration naming a module not yet downloaded
    // is refused at first).
    let example_doc = &documents(&example)[0];
    let rule = &example_doc["spec"]["config"]["rules"][0];
    let rule_name = str_at(rule, "/name");
    let limit = rule["limit"]["requests"].as_u64().unwrap();
    let names_rule = |reply: &Reply| {
        reply
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains(&format!("\"{rule_name}\"")))
    };
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let reply = first_reply(&envoy, port);
        if names_rule(&reply) {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "the example is not in force: {reply:?}\n--- envoy\n{}\n--- control plane\n{}",
            envoy.log(),
            control.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut replies = vec![first];
    replies.extend((0..limit + 4).map(|_| get(port, "/").unwrap()));
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let logs = || {
        format!(
            "--- envoy\n{}\n--- control plane\n{}",
            envoy.log(),
            control.log()
        )
    };
    assert!(
        replies[0]
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains(&format!("\"{rule_name}\""))),
        "the example is not in force: {:?}\n{}",
        replies[0],
        logs()
    );
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .unwrap_or_else(|| panic!("no 429: {statuses:?}\n{}", logs()));
    // The token bucket refills continuously (1 request per 6 s), hence the +1.
    assert!(
        (limit..=limit + 1).contains(&(first_429 as u64)),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    for reply in replies.iter().filter(|r| r.status == 429) {
        for header in ["retry-after", "ratelimit", "ratelimit-policy"] {
            assert!(
                reply.header(header).is_some(),
                "429 without {header}: {reply:?}"
            );
        }
    }

    // The control plane recorded this proxy's ACK (what the Programmed condition reads).
    // All four filters: each got its configuration (pass-through where no policy
    // selects the workload) and ACKed it — each once Envoy has downloaded its module and
    // the control plane sent it again, so not necessarily all by now.
    let node_id = str_at(&sidecar_node_with(&mesh.labels), "/id").to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let status: Value = serde_json::from_str(&get(http_port, "/status").unwrap().body).unwrap();
        let acked = |kind: &Kind| {
            let resource = &status["proxies"][&node_id]["resources"][kind.resource_name()];
            resource["ackedVersion"].is_string()
                && resource["ackedVersion"] == resource["pushedVersion"]
        };
        if Kind::FILTERS.iter().all(acked) {
            break;
        }
        assert!(Instant::now() < deadline, "not all ACKed: {status:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(envoy);
}

/// The Deployment's exact flags parse: run with them (the downward-API variables
/// expanded, as the kubelet does), the binary gets past its flags and stops only for
/// want of a cluster — bad flags would exit 2 with the usage.
#[test]
fn the_deployments_flags_are_the_binarys() {
    let mesh = mesh();
    let dir = tempfile::tempdir().unwrap();
    // Paths of the image and the pod (/wasm, the ConfigMap volume) are local ones here,
    // and the addresses loopback ones; every flag stays.
    wasm_module(Kind::RateLimit.module());
    let local: BTreeMap<&str, String> = [
        ("--policy-dir", dir.path().display().to_string()),
        (
            "--wasm-dir",
            root().join("target/meshward-wasm").display().to_string(),
        ),
        ("--xds-addr", "127.0.0.1:0".to_owned()),
        ("--http-addr", "127.0.0.1:0".to_owned()),
    ]
    .into();
    let mut args: Vec<String> = Vec::new();
    for arg in &mesh.args {
        let previous = args.last().map(String::as_str).unwrap_or_default();
        args.push(match local.get(previous) {
            Some(value) => value.clone(),
            None => arg.replace("$(POD_NAMESPACE)", "meshward-system"),
        });
    }
    let out = Command::new(BINARY)
        .args(&args)
        // No cluster: neither in-cluster variables nor a kubeconfig.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env("HOME", dir.path())
        .env("POD_NAME", "meshward-control-plane-0")
        .env("POD_NAMESPACE", "meshward-system")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "flags refused: {stderr}");
    assert!(!stderr.contains("usage:"), "{stderr}");
    assert!(
        stderr.contains("Kubernetes mode: no cluster access"),
        "{stderr}"
    );
}

/// The Deployment's args for a control plane on this machine: the policy source is the
/// directory (no API server here); addresses, the module URL and the wasm folder are
/// local; every other flag (notably --module-cluster) stays as deployed.
pub fn local_args(
    deployed: &[String],
    policies: &Path,
    xds_port: u16,
    http_port: u16,
    wasm_dir: &Path,
) -> Vec<String> {
    let mut args = Vec::new();
    let mut it = deployed.iter().peekable();
    while let Some(flag) = it.next() {
        let local = match flag.as_str() {
            // The API-server source and its options: not here.
            "--kubernetes" => continue,
            "--namespace" | "--identity" | "--peer-selector" | "--lease-duration" => {
                it.next();
                continue;
            }
            "--policy-dir" => Some(policies.display().to_string()),
            "--xds-addr" => Some(format!("127.0.0.1:{xds_port}")),
            "--http-addr" => Some(format!("127.0.0.1:{http_port}")),
            "--module-base-url" => Some(format!("http://127.0.0.1:{http_port}")),
            "--wasm-dir" => Some(wasm_dir.display().to_string()),
            _ => None,
        };
        args.push(flag.clone());
        match local {
            Some(value) => {
                it.next();
                args.push(value);
            }
            None => {
                if let Some(value) = it.next_if(|v| !v.starts_with("--")) {
                    args.push(value.clone());
                }
            }
        }
    }
    args
}

// ---------------------------------------------------------------------------------
// The pass-through module of the fail-open default_config

/// The module documented in the fail-open EnvoyFilters, encoded here section by section
/// so the manifests' base64 can be checked against its documented meaning:
/// `(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
///  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))`.
/// Every section is under 128 bytes, so each length is one LEB128 byte.
pub fn pass_through_module() -> Vec<u8> {
    const I32: u8 = 0x7f;
    fn section(id: u8, items: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![id, body.len() as u8 + 1, items];
        out.extend_from_slice(body);
        out
    }
    fn export(name: &str, kind: u8, index: u8) -> Vec<u8> {
        let mut out = vec![name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&[kind, index]);
        out
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = () -> (), 1 = (i32) -> i32.
    module.extend(section(1, 2, &[0x60, 0, 0, 0x60, 1, I32, 1, I32]));
    // Functions 0 and 1 of those types.
    module.extend(section(3, 2, &[0, 1]));
    // One memory of at least one page.
    module.extend(section(5, 1, &[0, 1]));
    let exports = [
        export("memory", 2, 0),
        export("proxy_abi_version_0_2_1", 0, 0),
        export("proxy_on_memory_allocate", 0, 1),
    ]
    .concat();
    module.extend(section(7, 3, &exports));
    // Bodies: no locals; `end` / `i32.const 0; end`.
    module.extend(section(10, 2, &[2, 0, 0x0b, 4, 0, 0x41, 0, 0x0b]));
    module
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_base64_encoder_of_this_file_is_standard() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"\0asm\x01"), "AGFzbQE=");
}
