//! What the manifest tests share: reading YAML, a local Envoy (validate mode or running),
//! child processes killed on drop, and a plain HTTP/1.1 client.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER: &str = "envoy.filters.http.router";
/// Bound for every wait on Envoy or the control plane.
pub const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// Reading the manifests

pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn yaml_files(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if !skip.contains(&name.as_ref()) {
                files.extend(yaml_files(&path, skip));
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every document of a YAML file (empty ones skipped), as JSON values.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .enumerate()
        .filter_map(|(index, document)| {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} (document {}): {e}", path.display(), index + 1));
            (!value.is_null()).then_some(value)
        })
        .collect()
}

pub fn str_at<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

pub fn one<'v>(documents: &'v [Value], kind: &str, name: &str) -> &'v Value {
    let found: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    found[0]
}

pub fn typed<T: DeserializeOwned>(document: &Value) -> T {
    serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", document["kind"], document["metadata"]["name"]))
}

// ---------------------------------------------------------------------------------
// Envoy and processes

pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHWARD_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy not found at {}; run `cargo xtask setup` first",
        path.display()
    );
    path
}

pub fn wasm_module(module: &str) -> String {
    let path = root()
        .join("target/meshward-wasm")
        .join(format!("{module}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing; run `cargo xtask build-wasm` first",
        path.display()
    );
    path.display().to_string()
}

/// The node an Istio sidecar of the echo workload sends (the keys the control plane
/// reads: NAMESPACE, WORKLOAD_NAME, LABELS).
pub fn sidecar_node_with(labels: &Value) -> Value {
    json!({
        "id": "sidecar~10.244.0.12~echo-5d8f7c9b6d-x2x7k.demo~demo.svc.cluster.local",
        "cluster": "echo.demo",
        "metadata": {"NAMESPACE": "demo", "WORKLOAD_NAME": "echo", "LABELS": labels}
    })
}

pub fn sidecar_node() -> Value {
    sidecar_node_with(&json!({"app": "echo"}))
}

pub fn router() -> Value {
    json!({
        "name": ROUTER,
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    })
}

/// An inbound-like listener answering 200 itself (no upstream needed): the filters
/// before the router decide.
pub fn listener(port: u16, http_filters: Vec<Value>) -> Value {
    listener_named("virtualInbound", "INBOUND", port, http_filters)
}

/// A listener named like an Istio sidecar's, with its traffic direction (what the
/// filters read as `listener_direction`), answering 200 itself.
pub fn listener_named(name: &str, direction: &str, port: u16, http_filters: Vec<Value>) -> Value {
    json!({
        "name": name,
        "traffic_direction": direction,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": HCM,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{
                    "name": "echo",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "hello from echo"}}}]
                }]},
                "http_filters": http_filters
            }
        }]}]
    })
}

/// `envoy --mode validate`: (accepted, Envoy's output).
pub fn validate(envoy: &Path, dir: &Path, name: &str, bootstrap: &Value) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(bootstrap).unwrap()).unwrap();
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", envoy.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A child process of this test, killed (by its own id) when dropped.
pub struct Process {
    child: Child,
    log: PathBuf,
    /// The control plane's stdout, kept open: it writes its addresses there, and a
    /// closed pipe would make that write fail.
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Process {
    pub fn spawn(command: &mut Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Process {
            child,
            log,
            stdout: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The control plane prints `xds ADDR` and `http ADDR` once it listens.
    pub fn wait_listening(mut self) -> Self {
        let mut stdout = BufReader::new(self.child.stdout.take().expect("stdout piped"));
        for expected in ["xds ", "http "] {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert!(
                line.starts_with(expected),
                "control plane did not start: {line:?}\n{}",
                self.log()
            );
        }
        self.stdout = Some(stdout);
        self
    }

    /// The next line the control plane prints after `xds`/`http` (`rls ADDR`,
    /// `store ADDR` with `--redis-url`); call after [`Process::wait_listening`].
    pub fn next_line(&mut self) -> String {
        let stdout = self.stdout.as_mut().expect("wait_listening first");
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Envoy's listener port, read from the admin API once Envoy is ready.
    pub fn listener_port(&mut self, admin_file: &Path) -> u16 {
        let deadline = Instant::now() + WAIT;
        loop {
            let admin = std::fs::read_to_string(admin_file)
                .ok()
                .and_then(|a| a.trim().rsplit(':').next().and_then(|p| p.parse().ok()));
            if let Some(admin) = admin {
                if let Ok(reply) = get(admin, "/listeners?format=json") {
                    let listeners: Value = serde_json::from_str(&reply.body).unwrap_or_default();
                    let port = listeners
                        .pointer("/listener_statuses/0/local_address/socket_address/port_value")
                        .and_then(Value::as_u64);
                    if let Some(port) = port.filter(|p| *p != 0) {
                        return port as u16;
                    }
                }
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("Envoy exited ({exit}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Envoy did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the connection is closed after the reply).
pub fn get(port: u16, path: &str) -> Result<Reply, String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: echo.demo\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write {address}: {e}"))?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut buffer)
            .map_err(|e| format!("read {address}: {e}"))?;
        received.extend_from_slice(&buffer[..n]);
        if let Some(reply) = complete(&String::from_utf8_lossy(&received), n == 0)? {
            return Ok(reply);
        }
    }
}

/// The reply once `text` holds all of it. Envoy keeps a connection open for up to its
/// delayed-close timeout (1 s) after the last reply, so the body's framing, not the
/// close, says when a reply is complete.
pub fn complete(text: &str, closed: bool) -> Result<Option<Reply>, String> {
    let incomplete = |what: &str| {
        if closed {
            Err(format!("connection closed mid-reply ({what}): {text:?}"))
        } else {
            Ok(None)
        }
    };
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return incomplete("head");
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status line: {head:?}"))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers.get("content-length").and_then(|l| l.parse().ok());
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        // Envoy's admin API streams its answers in chunks.
        match dechunk(body) {
            Ok(body) => body,
            Err(_) => return incomplete("chunks"),
        }
    } else if let Some(length) = length {
        match body.get(..length) {
            Some(body) => body.to_owned(),
            None => return incomplete("body"),
        }
    } else if closed {
        body.to_owned()
    } else {
        return Ok(None);
    };
    Ok(Some(Reply {
        status,
        headers,
        body,
    }))
}

pub fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|e| format!("chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).ok_or("truncated chunk")?);
        rest = after.get(size + 2..).ok_or("truncated chunk")?;
    }
}
