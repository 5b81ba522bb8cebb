//! Runtime-tuning agents inside a test (docs/adr/0007): the Rust agent
//! (`meshward-tuning-agent`, on its own runtime thread, speaking ADS + gRPC reports to
//! the control plane's xDS port) and the Go agent's probe
//! (`agents/go/cmd/meshward-tuning-probe`, a process speaking the HTTP API, driven by
//! stdin commands and observed through its JSON-line stdout). Both are stopped on drop;
//! on a failing test the probe's output is printed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use meshward_tuning_agent::{Agent, Event, Reporter, RuntimeTuning};
use serde_json::Value;

use crate::paths::workspace_root;

pub const MIB: u64 = 1024 * 1024;

/// Waits on `receiver` until an item satisfies `predicate` (earlier ones are consumed);
/// the error says what was awaited and what arrived instead.
fn await_item<T: std::fmt::Debug>(
    receiver: &Receiver<T>,
    what: &str,
    within: Duration,
    predicate: impl Fn(&T) -> bool,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(item) if predicate(&item) => return Ok(item),
            Ok(item) => seen.push(format!("{item:?}")),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "{what}: not within {within:?}; meanwhile: {seen:#?}"
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "{what}: the sender stopped; before that: {seen:#?}"
                ))
            }
        }
    }
}

/// The Rust agent, run by the library on a thread of its own.
pub struct RustAgent {
    applied: Receiver<RuntimeTuning>,
    events: Receiver<Event>,
    reporter: Reporter,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RustAgent {
    /// Connects to `127.0.0.1:xds_port` as `node_id` of `namespace/workload` with
    /// `labels` and the given memory limit, reporting every 200 ms.
    pub fn start(
        xds_port: u16,
        node_id: &str,
        namespace: &str,
        workload: &str,
        labels: &[(&str, &str)],
        memory_limit_bytes: u64,
    ) -> Result<Self, String> {
        let (applied_tx, applied) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        // The hook must be Sync; a std Sender is (Rust ≥ 1.72).
        let agent = Agent::builder(format!("http://127.0.0.1:{xds_port}"))
            .node(node_id, namespace, workload, labels.iter().copied())
            .pod(format!("{node_id}-pod"), "app")
            .memory_limit(memory_limit_bytes)
            .report_interval(Duration::from_millis(200))
            .rpc_timeout(Duration::from_secs(2))
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .on_event(move |event| {
                let _ = events_tx.send(event.clone());
            })
            .build()
            .map_err(|e| e.to_string())?;
        let reporter = agent.reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let thread = std::thread::Builder::new()
            .name(format!("agent-{node_id}"))
            .spawn(move || {
                runtime.block_on(agent.run(
                    move |tuning| {
                        let _ = applied_tx.send(tuning.clone());
                    },
                    async {
                        let _ = stopped.await;
                    },
                ));
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            applied,
            events,
            reporter,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// The next document handed to the callback that satisfies `predicate`.
    pub fn await_applied(
        &self,
        what: &str,
        within: Duration,
        predicate: impl Fn(&RuntimeTuning) -> bool,
    ) -> Result<RuntimeTuning, String> {
        await_item(&self.applied, what, within, predicate)
    }

    /// Documents applied so far and not yet awaited.
    pub fn applied_since(&self) -> Vec<RuntimeTuning> {
        self.applied.try_iter().collect()
    }

    /// The next agent event that satisfies `predicate`.
    pub fn await_event(
        &self,
        what: &str,
        within: Duration,
        predicate: impl Fn(&Event) -> bool,
    ) -> Result<Event, String> {
        await_item(&self.events, what, within, predicate)
    }
}

impl Drop for RustAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the Go probe is: `MESHWARD_TUNING_PROBE`, else `target/go/meshward-tuning-probe`
/// (built by `cargo xtask test`).
pub fn probe_path() -> PathBuf {
    std::env::var_os("MESHWARD_TUNING_PROBE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/go/meshward-tuning-probe"))
}

fn go_on_path() -> bool {
    Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The newest modification time of the files under `dir`.
fn newest_under(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// The Go probe binary, built with `go build` when Go is installed and the binary is
/// missing or older than the sources. `Ok(None)`: it cannot be had (no Go, no binary)
/// and the caller skips the Go part — loudly, with the returned reason printed by
/// [`skip_go`]. A failing build is an error, not a skip.
pub fn go_probe() -> Result<Option<PathBuf>, String> {
    let binary = probe_path();
    if std::env::var_os("MESHWARD_TUNING_PROBE").is_some() {
        return if binary.is_file() {
            Ok(Some(binary))
        } else {
            Err(format!(
                "MESHWARD_TUNING_PROBE={} does not exist",
                binary.display()
            ))
        };
    }
    let module = workspace_root().join("agents/go");
    let sources = module.join("cmd/meshward-tuning-probe");
    let built_at = binary.metadata().and_then(|m| m.modified()).ok();
    let fresh = match (built_at, newest_under(&module)) {
        (Some(built), Some(source)) => built >= source,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if fresh {
        return Ok(Some(binary));
    }
    if !go_on_path() || !sources.is_dir() {
        if built_at.is_some() {
            eprintln!(
                "WARNING: {} is older than agents/go and Go is not available to rebuild it",
                binary.display()
            );
            return Ok(Some(binary));
        }
        return Ok(None);
    }
    // Several test processes may build at once: each into its own file, then an atomic
    // rename, so no process ever runs a half-written binary.
    let dir = binary
        .parent()
        .ok_or_else(|| format!("{} has no parent", binary.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let partial = dir.join(format!(".meshward-tuning-probe.{}", std::process::id()));
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg("./cmd/meshward-tuning-probe")
        .current_dir(&module)
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "go build ./cmd/meshward-tuning-probe (in agents/go) failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&partial, &binary)
        .map_err(|e| format!("rename {} → {}: {e}", partial.display(), binary.display()))?;
    Ok(Some(binary))
}

/// Prints the loud skip notice for the Go part of a test. Written to the stderr handle
/// directly rather than with `eprintln!`, which the test harness captures (and shows only
/// for failing tests). nextest still captures each test's stderr: run it with
/// `--no-capture` or `--success-output immediate` to see it there; `cargo xtask test`
/// repeats its own Go skip banner at the end of the run.
pub fn skip_go(test: &str) {
    let reason = if go_on_path() {
        "agents/go/cmd/meshward-tuning-probe (the Go sources) is missing"
    } else {
        "Go is not installed; install golang-go (or run `cargo xtask test` where Go is)"
    };
    let banner = format!(
        "\n******************************************************************\n\
         SKIPPED: Go agent e2e in {test} — {} missing; {reason}\n\
         ******************************************************************\n",
        probe_path().display()
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
}

/// The Go probe: a Go process using the stdlib-only Go agent over HTTP.
pub struct GoProbe {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    /// Everything the probe printed (stdout and stderr), for failure reports.
    output: Arc<Mutex<Vec<String>>>,
}

impl GoProbe {
    /// Starts the probe against the control plane's HTTP port, reporting every 200 ms
    /// and long-polling 2 s at a time. GOGC/GOMEMLIMIT are cleared from its environment
    /// so "the process's own setting" is Go's default (100, no limit).
    pub fn start(
        binary: &Path,
        http_port: u16,
        node_id: &str,
        namespace: &str,
        workload: &str,
        labels: &[(&str, &str)],
        memory_limit_bytes: u64,
    ) -> Result<Self, String> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut child = Command::new(binary)
            .arg("--control-plane")
            .arg(format!("http://127.0.0.1:{http_port}"))
            .args([
                "--node-id",
                node_id,
                "--namespace",
                namespace,
                "--workload",
                workload,
            ])
            .args(["--labels", &labels.join(",")])
            .args(["--memory-limit-bytes", &memory_limit_bytes.to_string()])
            .args(["--report-interval", "200ms", "--poll-wait", "2s"])
            .env_remove("GOGC")
            .env_remove("GOMEMLIMIT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (events_tx, events) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(mut output) = output.lock() {
                        output.push(format!("stdout: {line}"));
                    }
                    // Lines that are not JSON are kept in the output only.
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        let _ = events_tx.send(event);
                    }
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut output) = output.lock() {
                        output.push(format!("stderr: {line}"));
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            events,
            output,
        })
    }

    /// Sends a stdin command (`grow N`, `shrink`, `quit`).
    pub fn command(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("the probe's stdin is closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("probe stdin {line:?}: {e}"))
    }

    /// The next JSON event that satisfies `predicate` (earlier ones are consumed).
    pub fn await_event(
        &self,
        what: &str,
        within: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        await_item(&self.events, what, within, predicate)
    }

    /// The next event, whatever it is; an error at `deadline` or when the probe exited.
    pub fn next_event(&self, deadline: Instant) -> Result<Value, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.events.recv_timeout(left).map_err(|e| match e {
            RecvTimeoutError::Timeout => "no event before the deadline".to_owned(),
            RecvTimeoutError::Disconnected => "the probe exited".to_owned(),
        })
    }

    /// The next `{"event":"applied"}` that satisfies `predicate` (earlier events are
    /// consumed).
    pub fn await_applied(
        &self,
        what: &str,
        within: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        await_item(&self.events, what, within, |event| {
            event["event"] == "applied" && predicate(event)
        })
    }

    /// What the probe printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for GoProbe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- Go probe output ----\n{}\n---- end ----",
                self.output()
            );
        }
    }
}
