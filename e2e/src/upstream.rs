//! Upstream test servers that record every request they receive (method, path,
//! headers, body), so tests assert on what reached the application, not only on what
//! came back. Also the demo's echo server. Thread per connection, HTTP/1.1 keep-alive,
//! bodies by content-length or chunked: small, and predictable under load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A connection idle this long is closed (Envoy reconnects as needed).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A JSON echo of the request (what the upstream answers).
    pub fn to_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

/// What an upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with a JSON echo of the request.
    pub fn echo(request: &RecordedRequest) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-upstream".into(), "meshward-echo".into()),
            ],
            body: serde_json::to_vec_pretty(&request.to_json()).unwrap_or_default(),
        }
    }
}

impl Reply {
    /// Closes the connection without answering (an upstream reset).
    pub fn reset() -> Self {
        Self {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// See `serve_connection`: a reply header that makes the test upstream die mid-body.
pub const TRUNCATE_HEADER: &str = "x-test-truncate-at";

/// Decides the reply for each recorded request (runs on the connection's thread).
pub type Handler = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

pub struct RecordingUpstream {
    address: SocketAddr,
    recorded: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RecordingUpstream {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> Result<Self, String> {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(address: &str) -> Result<Self, String> {
        Self::start_with(address, Arc::new(Reply::echo))
    }

    /// Starts with a custom reply for each request (e.g. an app that calls onwards).
    pub fn start_with(address: &str, handler: Handler) -> Result<Self, String> {
        let listener =
            TcpListener::bind(address).map_err(|e| format!("upstream bind {address}: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (recorded, stop) = (recorded.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (recorded, stop, handler) =
                        (recorded.clone(), stop.clone(), handler.clone());
                    std::thread::spawn(move || {
                        serve_connection(stream, &recorded, &stop, &handler)
                    });
                }
            })
        };
        Ok(Self {
            address,
            recorded,
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn hits(&self) -> usize {
        self.recorded.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Blocks until the process is interrupted (used by `meshward-echo`).
    pub fn wait(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the acceptor sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    recorded: &Mutex<Vec<RecordedRequest>>,
    stop: &AtomicBool,
    handler: &Handler,
) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::SeqCst) {
        let Some((request, keep_alive)) = read_request(&mut reader) else {
            return;
        };
        if let Ok(mut all) = recorded.lock() {
            all.push(request.clone());
        }
        let reply = handler(&request);
        if reply.status == 0 {
            return;
        }
        // A reply carrying `x-test-truncate-at: N` announces its full length but sends
        // only N body bytes, then closes: an upstream that dies mid-response.
        let truncate_at: Option<usize> = reply
            .headers
            .iter()
            .find(|(name, _)| name == TRUNCATE_HEADER)
            .and_then(|(_, value)| value.parse().ok());
        let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
        if !keep_alive {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let body = match truncate_at {
            Some(n) => reply.body.get(..n).unwrap_or(&reply.body),
            None => &reply.body,
        };
        if truncate_at.is_some() {
            let _ = writer
                .write_all(head.as_bytes())
                .and_then(|_| writer.write_all(body));
            return;
        }
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(body))
            .is_err()
            || !keep_alive
        {
            return;
        }
    }
}

/// Reads one request; None on EOF, timeout or a malformed request.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// One line, bytes converted lossily (header values may carry obs-text bytes).
fn read_line(reader: &mut BufReader<TcpStream>) -> Option<(String, usize)> {
    let mut bytes = Vec::new();
    let read = reader.read_until(b'\n', &mut bytes).ok()?;
    Some((String::from_utf8_lossy(&bytes).into_owned(), read))
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(RecordedRequest, bool)> {
    let (request_line, read) = read_line(reader)?;
    if read == 0 {
        return None;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path, version) = (
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    );
    let mut headers = Vec::new();
    let mut head_bytes = request_line.len();
    loop {
        let (line, read) = read_line(reader)?;
        head_bytes += read;
        if head_bytes > MAX_HEAD_BYTES {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if length > MAX_BODY_BYTES {
            return None;
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let keep_alive = !close && version != "HTTP/1.0";
    Some((
        RecordedRequest {
            method,
            path,
            headers,
            body,
        },
        keep_alive,
    ))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).ok()?;
                if line.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return None;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Request;

    #[test]
    fn records_and_echoes_requests() {
        let upstream = RecordingUpstream::start().unwrap();
        let response = Request::post("/echo?x=1", b"hello")
            .header("x-test", "yes")
            .send(upstream.port())
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json().unwrap()["body"], "hello");
        let recorded = upstream.requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].method, "POST");
        assert_eq!(recorded[0].path, "/echo?x=1");
        assert_eq!(recorded[0].header("x-test"), Some("yes"));
        assert_eq!(recorded[0].body, b"hello");
    }
}
