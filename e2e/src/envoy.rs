//! A real Envoy process per test: per-test bootstrap and temp folder, kernel-chosen
//! ports (admin address read from `--admin-address-path`, listener ports from
//! `/listeners`), a dynamic base id so tests run in parallel, readiness via `/ready`,
//! its log printed when the test fails, killed on drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Request, Response};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// `-l`; wasm plugin logs use the `wasm` component.
    pub log_level: String,
    /// `--cpuset-threads`-free CPU pinning for benchmarks: prefix the command with
    /// `taskset -c <cpus>`.
    pub pin_cpus: Option<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            concurrency: 2,
            log_level: "info".into(),
            pin_cpus: None,
        }
    }
}

pub struct Envoy {
    child: Child,
    admin_port: u16,
    dir: PathBuf,
    log_path: PathBuf,
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

fn temp_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "meshward-envoy-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

impl Envoy {
    pub fn start(bootstrap: &crate::Bootstrap, options: &EnvoyOptions) -> Result<Envoy, String> {
        Self::start_config(&bootstrap.to_json(), options)
    }

    /// Starts Envoy with a full bootstrap; fails with Envoy's log when it exits or is
    /// not ready in time.
    pub fn start_config(
        config: &serde_json::Value,
        options: &EnvoyOptions,
    ) -> Result<Envoy, String> {
        let text = serde_json::to_vec_pretty(config).map_err(|e| e.to_string())?;
        Self::start_file(&text, "envoy.json", options)
    }

    /// Starts Envoy with a YAML bootstrap (such as the examples/ files).
    pub fn start_yaml(yaml: &str, options: &EnvoyOptions) -> Result<Envoy, String> {
        Self::start_file(yaml.as_bytes(), "envoy.yaml", options)
    }

    fn start_file(
        contents: &[u8],
        file_name: &str,
        options: &EnvoyOptions,
    ) -> Result<Envoy, String> {
        let envoy = crate::paths::envoy_binary()?;
        let dir = temp_dir()?;
        let config_path = dir.join(file_name);
        let log_path = dir.join("envoy.log");
        let admin_path = dir.join("admin.address");
        std::fs::write(&config_path, contents)
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let mut command = match &options.pin_cpus {
            Some(cpus) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", cpus]).arg(&envoy);
                taskset
            }
            None => Command::new(&envoy),
        };
        command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["-l", &options.log_level])
            .arg("--log-path")
            .arg(&log_path)
            // Flush logs (and access logs) often, so a failing test shows them.
            .args(["--file-flush-interval-msec", "100"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--use-dynamic-base-id")
            .arg("--base-id-path")
            .arg(dir.join("base-id"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", envoy.display()))?;
        let mut envoy = Envoy {
            child,
            admin_port: 0,
            dir,
            log_path,
        };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &PathBuf) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "Envoy exited ({status}) before it was ready. Its log:\n{}",
                    self.log()
                ));
            }
            // Re-read the address file until /ready answers: a half-written file must
            // not pin a wrong port.
            let port = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|text| text.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
                .unwrap_or(0);
            if port != 0
                && Request::get("/ready")
                    .send(port)
                    .is_ok_and(|r| r.status == 200)
            {
                self.admin_port = port;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "Envoy was not ready after {READY_TIMEOUT:?}. Its log:\n{}",
            self.log()
        ))
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The bound port of the `ingress` listener.
    pub fn port(&self) -> u16 {
        self.listener_port("ingress").unwrap_or(0)
    }

    pub fn listener_port(&self, name: &str) -> Result<u16, String> {
        let listeners = self.admin_get("/listeners?format=json")?.json()?;
        listeners
            .get("listener_statuses")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .find(|l| l.get("name").and_then(|n| n.as_str()) == Some(name))
            .and_then(|l| l.pointer("/local_address/socket_address/port_value"))
            .and_then(|p| p.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("listener {name:?} not found in /listeners"))
    }

    pub fn admin_get(&self, path: &str) -> Result<Response, String> {
        Request::get(path).send(self.admin_port)
    }

    /// Counters and gauges from `/stats?format=json`.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>, String> {
        crate::stats::parse_json_stats(&self.admin_get("/stats?format=json")?.body_text())
    }

    /// A counter's value, 0 when it does not exist (yet).
    pub fn counter(&self, name: &str) -> u64 {
        self.stats()
            .ok()
            .and_then(|s| s.get(name).copied())
            .unwrap_or(0)
    }

    pub fn prometheus(&self) -> Result<String, String> {
        Ok(self.admin_get("/stats/prometheus")?.body_text())
    }

    /// Bytes allocated by Envoy's heap (from `/memory`).
    pub fn allocated_bytes(&self) -> Result<u64, String> {
        let memory = self.admin_get("/memory")?.json()?;
        memory
            .get("allocated")
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| v.as_u64())
            })
            .ok_or_else(|| format!("no `allocated` in /memory: {memory}"))
    }

    /// CPU time Envoy has used so far (user + system, all threads), in seconds, from
    /// /proc/<pid>/stat (clock ticks of 10 ms).
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map_err(|e| format!("read /proc stat: {e}"))?;
        // Fields after the command name (which may hold spaces) start after ") ".
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
            _ => Err(format!("unexpected /proc stat: {stat}")),
        }
    }

    /// Envoy's resident set size (`VmRSS` of /proc/<pid>/status), for benchmarks.
    pub fn rss_bytes(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("read /proc status: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .ok_or_else(|| "no VmRSS in /proc status".to_string())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Polls `condition` every 50 ms for up to `timeout`; true when it held.
    pub fn eventually(&self, timeout: Duration, mut condition: impl FnMut(&Envoy) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        condition(self)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Let the last log lines reach the file before the process goes.
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("---- Envoy log (last {} lines) ----", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("---- end of Envoy log; kept in {} ----", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
