//! A real Prometheus (Debian's `prometheus`) inside a test: its own config and data
//! folder, on a free port of 127.0.0.1, queried through its HTTP API, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Request;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// The Prometheus binary, or what to do about its absence.
pub fn binary() -> Result<PathBuf, String> {
    let found = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .collect::<Vec<_>>()
    });
    found.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "prometheus not found on PATH; install Debian's package: `sudo apt-get install -y prometheus` \
         (`cargo xtask setup` does it when run as root)"
            .to_string()
    })
}

/// Percent-encodes a query parameter value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus with `config` (a prometheus.yml; JSON is YAML) in `dir`, and
    /// waits until it is ready.
    pub fn start(config: &Value, dir: &Path) -> Result<Self, String> {
        let binary = binary()?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let port = crate::paths::free_port()?;
        let log = dir.join("prometheus.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let mut prometheus = Self { child, port, log };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                return Err(format!(
                    "prometheus exited ({status}):\n{}",
                    prometheus.log()
                ));
            }
            if Request::get("/-/ready")
                .send(port)
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                    prometheus.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let response = Request::get(path_and_query).send(self.port)?;
        let body = response.json()?;
        if body["status"] != "success" {
            return Err(format!("{path_and_query}: {body}"));
        }
        Ok(body["data"].clone())
    }

    /// An instant query: each series' labels and value.
    pub fn query(&self, expr: &str) -> Result<Vec<(Value, f64)>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr)))?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .into_iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect())
    }

    /// Values of `label` on the series `selector` matches (Grafana's `label_values`).
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ))?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_promql() {
        assert_eq!(
            super::encode("sum(rate(x{a=~\"b\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D~%22b%22%7D%5B1m%5D%29%29"
        );
    }
}
