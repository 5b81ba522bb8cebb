//! W3C `tracestate`: validation, combination of several header lines, and this
//! sidecar's own entry.
//!
//! Grammar (Trace Context Level 2 §3.3): list-members separated by `,` with optional
//! whitespace; empty members are allowed and ignored; at most 32 members; keys are
//! `(lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")` (Level 2 lets a
//! key start with a digit) or multi-tenant
//! `tenant@system` (tenant: `(lcalpha / DIGIT) 0*240(...)`, system:
//! `lcalpha 0*13(...)`); values are 1–256 printable ASCII characters except `,` and `=`,
//! not ending in a space; keys are unique. A header that breaks any rule is discarded
//! whole (the spec allows discarding it; propagating a partly valid list is riskier).

pub const MAX_MEMBERS: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Key,
    Value,
    Duplicate,
    TooManyMembers,
    Member,
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match key.split_once('@') {
        None => {
            bytes
                .first()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && bytes.len() <= 256
                && bytes.iter().all(|c| is_key_char(*c))
        }
        Some((tenant, system)) => {
            let tenant = tenant.as_bytes();
            let system = system.as_bytes();
            tenant
                .first()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && tenant.len() <= 241
                && tenant.iter().all(|c| is_key_char(*c))
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && system.len() <= 14
                && system.iter().all(|c| is_key_char(*c))
        }
    }
}

pub fn is_valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let printable = |c: &u8| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=';
    !bytes.is_empty()
        && bytes.len() <= 256
        && bytes.iter().all(printable)
        && bytes.last() != Some(&b' ')
}

impl TraceState {
    /// Parses every `tracestate` header line, combined in order.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Self, Invalid> {
        let mut members: Vec<(String, String)> = Vec::new();
        for line in lines {
            for member in line.split(',') {
                let member = member.trim_matches([' ', '\t']);
                if member.is_empty() {
                    continue;
                }
                let (key, value) = member.split_once('=').ok_or(Invalid::Member)?;
                if !is_valid_key(key) {
                    return Err(Invalid::Key);
                }
                if !is_valid_value(value) {
                    return Err(Invalid::Value);
                }
                if members.iter().any(|(existing, _)| existing == key) {
                    return Err(Invalid::Duplicate);
                }
                members.push((key.to_owned(), value.to_owned()));
                if members.len() > MAX_MEMBERS {
                    return Err(Invalid::TooManyMembers);
                }
            }
        }
        Ok(Self { members })
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Puts `key=value` first (a participant's updated entry goes to the front),
    /// removing its old position and, when the list would exceed 32, the rightmost.
    pub fn upsert_front(&mut self, key: &str, value: &str) {
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_owned(), value.to_owned()));
        self.members.truncate(MAX_MEMBERS);
    }

    pub fn format(&self) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn combines_lines_in_order_and_skips_empty_members() {
        let state = TraceState::parse([
            "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",
            " , ,\tfoo@bar=1 ,",
        ])
        .unwrap();
        assert_eq!(
            state.format(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,foo@bar=1"
        );
        assert_eq!(TraceState::parse([""]).unwrap().len(), 0);
    }

    #[test]
    fn key_grammar() {
        assert!(is_valid_key("1vendor"), "Level 2: a digit may start a key");
        for good in [
            "a",
            "a1_-*/",
            "0tenant@sys",
            "t@s",
            &"a".repeat(256),
            &format!("{}@{}", "t".repeat(241), "s".repeat(14)),
        ] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "a.b",
            "a b",
            "@s",
            "t@",
            "t@1s",
            "t@s@x",
            &"a".repeat(257),
            &format!("{}@s", "t".repeat(242)),
            &format!("t@{}", "s".repeat(15)),
        ] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn value_grammar() {
        for good in ["x", "a b", "!~", &"v".repeat(256)] {
            assert!(is_valid_value(good), "{good}");
        }
        for bad in [
            "",
            "trailing ",
            "a,b",
            "a=b",
            "tab\t",
            "\u{e9}",
            &"v".repeat(257),
        ] {
            assert!(!is_valid_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_headers_are_rejected_whole() {
        assert_eq!(TraceState::parse(["foo=1,foo=2"]), Err(Invalid::Duplicate));
        assert_eq!(
            TraceState::parse(["foo=1", "foo=2"]),
            Err(Invalid::Duplicate),
            "across lines"
        );
        assert_eq!(TraceState::parse(["foo"]), Err(Invalid::Member));
        assert_eq!(TraceState::parse(["FOO=1"]), Err(Invalid::Key));
        assert_eq!(TraceState::parse(["foo=a,b"]), Err(Invalid::Member));
        assert_eq!(TraceState::parse(["foo="]), Err(Invalid::Value));
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            TraceState::parse([members.join(",").as_str()]),
            Err(Invalid::TooManyMembers)
        );
        assert_eq!(
            TraceState::parse([members[..32].join(",").as_str()])
                .unwrap()
                .len(),
            32
        );
    }

    #[test]
    fn own_entry_moves_to_the_front_and_the_list_stays_within_32() {
        let mut state = TraceState::parse(["a=1,meshward=old,b=2"]).unwrap();
        state.upsert_front("meshward", "new");
        assert_eq!(state.format(), "meshward=new,a=1,b=2");
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let mut full = TraceState::parse([members.join(",").as_str()]).unwrap();
        full.upsert_front("meshward", "x");
        assert_eq!(full.len(), 32);
        assert!(full.format().starts_with("meshward=x,k0=v"));
        assert!(full.get("k31").is_none(), "the rightmost member makes room");
    }
}
