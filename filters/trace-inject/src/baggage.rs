//! W3C Baggage: `key=value;property, ...`. Values are percent-encoded UTF-8.
//!
//! Invalid list-members are dropped one by one (the rest propagate); the result is kept
//! within the spec's limits, 64 members and 8192 bytes, dropping from the end; an
//! optional allow-list of keys drops the others. Every drop is counted.

use meshward_filter_common::matcher::is_http_token;

pub const MAX_MEMBERS: usize = 64;
pub const MAX_BYTES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: String,
    /// As received: percent-encoded, properties (`;...`) included.
    value_and_properties: String,
    value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<Member>,
    /// Members dropped while parsing and limiting.
    pub dropped: usize,
}

/// `*baggage-octet` with well-formed percent escapes.
fn is_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    let octet = |c: u8| {
        c == 0x21
            || (0x23..=0x2b).contains(&c)
            || (0x2d..=0x3a).contains(&c)
            || (0x3c..=0x5b).contains(&c)
            || (0x5d..=0x7e).contains(&c)
    };
    let mut i = 0;
    while let Some(c) = bytes.get(i).copied() {
        if !octet(c) {
            return false;
        }
        if c == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 2;
        }
        i += 1;
    }
    true
}

fn is_property(property: &str) -> bool {
    match property.split_once('=') {
        Some((key, value)) => {
            is_http_token(key.trim_matches([' ', '\t']))
                && is_value(value.trim_matches([' ', '\t']))
        }
        None => is_http_token(property.trim_matches([' ', '\t'])),
    }
}

fn parse_member(text: &str) -> Option<Member> {
    let mut pieces = text.split(';');
    let (key, value) = pieces.next()?.split_once('=')?;
    let key = key.trim_matches([' ', '\t']);
    let value = value.trim_matches([' ', '\t']);
    if !is_http_token(key) || !is_value(value) {
        return None;
    }
    let mut value_and_properties = value.to_owned();
    for property in pieces {
        if !is_property(property) {
            return None;
        }
        value_and_properties.push(';');
        value_and_properties.push_str(property.trim_matches([' ', '\t']));
    }
    Some(Member {
        key: key.to_owned(),
        value_and_properties,
        value: value.to_owned(),
    })
}

impl Baggage {
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut baggage = Baggage::default();
        for line in lines {
            for text in line.split(',') {
                if text.trim_matches([' ', '\t']).is_empty() {
                    continue;
                }
                match parse_member(text) {
                    Some(member) => baggage.members.push(member),
                    None => baggage.dropped += 1,
                }
            }
        }
        baggage
    }

    /// Keeps only `allowed` keys (when given), then enforces the size limits.
    pub fn restrict(&mut self, allowed: Option<&[String]>) {
        if let Some(allowed) = allowed {
            let before = self.members.len();
            self.members.retain(|member| allowed.contains(&member.key));
            self.dropped += before - self.members.len();
        }
        while self.members.len() > MAX_MEMBERS || self.format().len() > MAX_BYTES {
            if self.members.pop().is_none() {
                break;
            }
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn format(&self) -> String {
        let mut out = String::new();
        for (i, member) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&member.key);
            out.push('=');
            out.push_str(&member.value_and_properties);
        }
        out
    }

    /// The first value for `key`, percent-decoded (invalid UTF-8 replaced).
    pub fn decoded(&self, key: &str) -> Option<String> {
        let member = self.members.iter().find(|member| member.key == key)?;
        Some(percent_decode(&member.value))
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(c) = bytes.get(i).copied() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn parses_members_with_properties_across_lines() {
        let baggage = Baggage::parse([
            "userId=alice, serverNode = DF%2028 ;prop1;p2=v",
            "isProduction=false",
        ]);
        assert_eq!(
            baggage.format(),
            "userId=alice,serverNode=DF%2028;prop1;p2=v,isProduction=false"
        );
        assert_eq!(baggage.decoded("serverNode").as_deref(), Some("DF 28"));
        assert_eq!(baggage.dropped, 0);
    }

    #[test]
    fn invalid_members_are_dropped_individually() {
        let baggage = Baggage::parse([
            "good=1,bad key=2,novalue,quote=\"x\",pct=%zz,semi=1;bad prop,ok=%E2%82%AC",
        ]);
        assert_eq!(baggage.format(), "good=1,ok=%E2%82%AC");
        assert_eq!(baggage.decoded("ok").as_deref(), Some("€"));
        assert_eq!(baggage.dropped, 5);
    }

    #[test]
    fn limits_64_members_and_8192_bytes() {
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let mut baggage = Baggage::parse([many.join(",").as_str()]);
        baggage.restrict(None);
        assert_eq!(baggage.len(), 64);
        assert_eq!(baggage.dropped, 6);
        let big: Vec<String> = (0..10)
            .map(|i| format!("k{i}={}", "x".repeat(1000)))
            .collect();
        let mut baggage = Baggage::parse([big.join(",").as_str()]);
        baggage.restrict(None);
        assert!(baggage.format().len() <= MAX_BYTES);
        assert_eq!(baggage.len(), 8);
    }

    #[test]
    fn allow_list_keeps_only_named_keys() {
        let mut baggage = Baggage::parse(["tenant=acme,secret=x,region=eu"]);
        baggage.restrict(Some(&["tenant".to_string(), "region".to_string()]));
        assert_eq!(baggage.format(), "tenant=acme,region=eu");
        assert_eq!(baggage.dropped, 1);
    }
}
