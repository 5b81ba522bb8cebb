//! A deliberately small HTTP/1.1 client: one request per connection, optional source
//! address (so tests can be different clients: 127.0.0.2, 127.0.0.3, ...), bounded by
//! timeouts. Enough to observe exactly what Envoy sends back.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Headers sent byte for byte (for values that are not UTF-8).
    pub raw_headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub source_ip: Option<IpAddr>,
    /// When set, the body is sent chunked and followed by these trailers.
    pub trailers: Option<Vec<(String, String)>>,
}

impl Request {
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            raw_headers: Vec::new(),
            trailers: None,
            body: Vec::new(),
            source_ip: None,
        }
    }

    pub fn post(path: &str, body: &[u8]) -> Self {
        Self {
            method: "POST".into(),
            body: body.to_vec(),
            ..Self::get(path)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn raw_header(mut self, name: &str, value: &[u8]) -> Self {
        self.raw_headers.push((name.into(), value.to_vec()));
        self
    }

    /// Sends the body chunked (`transfer-encoding: chunked`) followed by trailers.
    pub fn trailers(mut self, trailers: &[(&str, &str)]) -> Self {
        self.trailers = Some(
            trailers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    pub fn from_ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.parse().ok();
        self
    }

    /// The request as sent on the wire: head, raw headers, blank line, body.
    fn wire_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: meshward.test\r\nconnection: close\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.trailers.is_some() {
            head.push_str("transfer-encoding: chunked\r\n");
        } else if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")
        {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        let mut bytes = head.into_bytes();
        for (name, value) in &self.raw_headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        match &self.trailers {
            None => bytes.extend_from_slice(&self.body),
            Some(trailers) => {
                if !self.body.is_empty() {
                    bytes.extend_from_slice(format!("{:x}\r\n", self.body.len()).as_bytes());
                    bytes.extend_from_slice(&self.body);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                bytes.extend_from_slice(b"\r\n");
            }
        }
        bytes
    }

    /// Sends the request, waits `wait`, then closes the connection without reading:
    /// a client that gives up.
    pub fn send_and_abandon(&self, port: u16, wait: Duration) -> Result<(), String> {
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = connect(target, self.source_ip)?;
        stream
            .write_all(&self.wire_bytes())
            .map_err(|e| format!("write: {e}"))?;
        std::thread::sleep(wait);
        drop(stream);
        Ok(())
    }

    /// Sends the request to `127.0.0.1:port`.
    pub fn send(&self, port: u16) -> Result<Response, String> {
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = connect(target, self.source_ip)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(&self.wire_bytes())
            .map_err(|e| format!("write: {e}"))?;
        // Read until the message is complete by its own framing rather than until the
        // connection closes: Envoy delays closing after a local reply (its
        // `delayed_close_timeout`, 1 s), which would cost every refused request a second.
        let mut raw = Vec::new();
        let mut buffer = [0u8; 16 * 1024];
        let head_only = self.method.eq_ignore_ascii_case("HEAD");
        while !message_complete(&raw, head_only) {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(buffer.get(..n).unwrap_or_default()),
                Err(e) => return Err(format!("read from port {port}: {e}")),
            }
        }
        Response::parse(&raw)
    }
}

fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&target, TIMEOUT)
            .map_err(|e| format!("connect {target}: {e}"));
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    socket
        .connect_timeout(&target.into(), TIMEOUT)
        .map_err(|e| format!("connect {target} from {source}: {e}"))?;
    Ok(socket.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {}", self.body_text()))
    }

    fn parse(raw: &[u8]) -> Result<Self, String> {
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .ok_or_else(|| format!("incomplete response: {:?}", String::from_utf8_lossy(raw)))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let rest = &raw[split + 4..];
        let chunked = headers.iter().any(|(name, value)| {
            name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked")
        });
        let body = if chunked {
            dechunk(rest)?
        } else {
            rest.to_vec()
        };
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

/// Whether `raw` holds a whole response: headers, then the body its
/// `content-length` or chunked framing announces (none for HEAD, 1xx, 204 and 304).
/// Without either, the body runs to the end of the connection.
fn message_complete(raw: &[u8], head_only: bool) -> bool {
    let Some(split) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if head_only || status.starts_with('1') || status == "204" || status == "304" {
        return true;
    }
    let body = &raw[split + 4..];
    let field = |name: &str| {
        head.split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| value.trim().to_owned())
    };
    if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // The last chunk, then optional trailers, then an empty line.
        return body.ends_with(b"\r\n\r\n") && dechunk(body).is_ok();
    }
    match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(length) => body.len() >= length,
        None => false,
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = Response::parse(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\ncontent-length: 2\r\n\r\nhi",
        )
        .unwrap();
        assert_eq!(plain.status, 429);
        assert_eq!(plain.header("retry-after"), Some("3"));
        assert_eq!(plain.body, b"hi");
        let chunked = Response::parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(chunked.body, b"abcde");
        assert!(Response::parse(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn a_message_is_complete_by_its_framing() {
        assert!(!message_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n",
            false
        ));
        assert!(!message_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab",
            false
        ));
        assert!(message_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            false
        ));
        assert!(message_complete(b"HTTP/1.1 204 No Content\r\n\r\n", false));
        assert!(message_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
            true
        ));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n";
        assert!(!message_complete(chunked, false));
        assert!(message_complete(
            &[&chunked[..], b"0\r\n\r\n"].concat(),
            false
        ));
        assert!(!message_complete(
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            false
        ));
    }
}
