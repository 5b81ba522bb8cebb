//! A stored upstream response and the rules for what of it is kept and replayed.

/// Status, the headers that may be replayed, and the body, byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Replayed unless configured otherwise. Hop-by-hop fields, `content-length` and
/// `transfer-encoding` (recomputed), `date` (regenerated) and `set-cookie` (a session
/// must not be handed out twice) are never on this list.
pub const DEFAULT_REPLAY_HEADERS: [&str; 8] = [
    "content-type",
    "content-encoding",
    "content-language",
    "location",
    "etag",
    "last-modified",
    "cache-control",
    "vary",
];

const NEVER_REPLAYED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "date",
    "server",
    "idempotent-replayed",
];

/// Whether a response header is kept for replay.
pub fn is_replayed(name: &str, allowed: &[String], allow_set_cookie: bool) -> bool {
    let name = name.to_ascii_lowercase();
    if name.starts_with(':') || NEVER_REPLAYED.contains(&name.as_str()) {
        return false;
    }
    if name == "set-cookie" {
        return allow_set_cookie;
    }
    allowed.contains(&name)
}

impl StoredResponse {
    /// Length-prefixed binary encoding (u32 little-endian lengths).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(&self.status.to_le_bytes());
        put_len(&mut out, self.headers.len());
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader { bytes, at: 0 };
        let status = u16::from_le_bytes([reader.byte()?, reader.byte()?]);
        let count = reader.len()?;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = String::from_utf8(reader.bytes()?.to_vec()).ok()?;
            let value = String::from_utf8(reader.bytes()?.to_vec()).ok()?;
            headers.push((name, value));
        }
        let body = reader.bytes()?.to_vec();
        (reader.at == bytes.len()).then_some(Self {
            status,
            headers,
            body,
        })
    }

    /// Bytes this response occupies when stored.
    pub fn size_hint(&self) -> usize {
        6 + self
            .headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>()
            + 4
            + self.body.len()
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = self.bytes.get(self.at).copied()?;
        self.at += 1;
        Some(byte)
    }

    fn len(&mut self) -> Option<usize> {
        let raw = self.bytes.get(self.at..self.at.checked_add(4)?)?;
        self.at += 4;
        usize::try_from(u32::from_le_bytes([
            *raw.first()?,
            *raw.get(1)?,
            *raw.get(2)?,
            *raw.get(3)?,
        ]))
        .ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.len()?;
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn round_trips_byte_for_byte() {
        let response = StoredResponse {
            status: 201,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("location".into(), "/orders/7".into()),
            ],
            body: vec![0, 159, 146, 150, b'{', b'}'],
        };
        let encoded = response.encode();
        assert_eq!(encoded.len(), response.size_hint());
        assert_eq!(StoredResponse::decode(&encoded), Some(response));
    }

    #[test]
    fn truncated_or_trailing_bytes_do_not_decode() {
        let encoded = StoredResponse {
            status: 200,
            headers: vec![],
            body: b"ok".to_vec(),
        }
        .encode();
        for cut in 0..encoded.len() {
            assert_eq!(
                StoredResponse::decode(&encoded[..cut]),
                None,
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(StoredResponse::decode(&longer), None);
        assert_eq!(StoredResponse::decode(&[0xff; 64]), None);
    }

    #[test]
    fn replay_rules() {
        let allowed: Vec<String> = DEFAULT_REPLAY_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(is_replayed("Content-Type", &allowed, false));
        assert!(is_replayed("location", &allowed, false));
        for dropped in [
            "connection",
            "transfer-encoding",
            "content-length",
            "date",
            ":status",
            "x-internal",
        ] {
            assert!(!is_replayed(dropped, &allowed, false), "{dropped}");
        }
        assert!(!is_replayed("set-cookie", &allowed, false));
        assert!(is_replayed("set-cookie", &allowed, true));
    }
}
