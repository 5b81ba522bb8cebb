//! The `ShouldRateLimit` call for one request: one descriptor per rule whose match holds
//! and whose key can be built, entries named as documented (docs/adr/0009) so any RLS
//! implementation can be configured for them.

use super::messages::{Entry, RateLimitDescriptor, RateLimitRequest};
use crate::config::{CompiledConfig, GlobalConfig};
use crate::key::{self, KeyPart, ResolvedKey};
use meshward_filter_common::digest::digest_parts;
use meshward_filter_common::request::RequestHead;

/// A rule that applies to the request, in descriptor order.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index into `CompiledConfig::rules`.
    pub rule: usize,
    pub key: ResolvedKey,
}

/// The rules that apply and the call to make; `None` when no rule applies.
pub fn plan(
    config: &CompiledConfig,
    global: &GlobalConfig,
    request: &RequestHead,
) -> Option<(Vec<Planned>, RateLimitRequest)> {
    let mut planned = Vec::new();
    let mut descriptors = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        if !rule.matcher.matches(request) {
            continue;
        }
        let Some(values) = key::values(&rule.key, request) else {
            continue;
        };
        let mut entries = Vec::with_capacity(values.len() + 1);
        entries.push(Entry {
            key: "rule".into(),
            value: rule.name.clone(),
        });
        for (part, value) in rule.key.iter().zip(&values) {
            entries.push(Entry {
                key: entry_key(part),
                value: entry_value(value),
            });
        }
        descriptors.push(RateLimitDescriptor { entries });
        planned.push(Planned {
            rule: index,
            key: key::resolved(&values),
        });
    }
    if planned.is_empty() {
        return None;
    }
    let request = RateLimitRequest {
        domain: global.domain.clone(),
        descriptors,
        hits_addend: 1,
    };
    Some((planned, request))
}

/// Services bound entry values (Meshward's at 256 bytes, refusing the whole request);
/// a client must not be able to switch a limit off with one long header, so a longer
/// value travels as its digest — still one distinct bucket per distinct value.
pub const MAX_ENTRY_VALUE: usize = 256;

pub fn entry_value(value: &str) -> String {
    if value.len() <= MAX_ENTRY_VALUE {
        return value.to_owned();
    }
    let digest = digest_parts([value.as_bytes()]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The descriptor entry key of a key part.
pub fn entry_key(part: &KeyPart) -> String {
    match part {
        KeyPart::ConnectionAddress | KeyPart::ForwardedFor { .. } => "remote_address".into(),
        KeyPart::Header { name, .. } => format!("header.{name}"),
        KeyPart::Path => "path".into(),
        KeyPart::Method => "method".into(),
        KeyPart::QueryParameter { name, .. } => format!("query.{name}"),
        KeyPart::Cookie { name, .. } => format!("cookie.{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::parse;

    #[test]
    fn one_descriptor_per_applicable_rule_with_named_entries() {
        let config = parse(
            br#"{"global":{"domain":"shop/orders"},"rules":[
              {"name":"per-user","key":[{"type":"header","name":"x-user"},{"type":"clientAddress"},{"type":"path"}],
               "limit":{"algorithm":"tokenBucket","requests":5,"per":"1s"}},
              {"name":"login","match":{"path":{"exact":"/login"}},"limit":{"algorithm":"gcra","requests":1,"per":"1s"}},
              {"name":"needs-tenant","key":[{"type":"queryParameter","name":"tenant"}],"limit":{"algorithm":"gcra","requests":1,"per":"1s"}}
            ]}"#,
        )
        .unwrap();
        let global = config.global.clone().unwrap();
        let request = RequestHead::new(
            vec![
                (":path".into(), "/api?x=1".into()),
                (":method".into(), "GET".into()),
                ("x-user".into(), "alice".into()),
            ],
            Some("192.0.2.7:5555".into()),
        );
        let (planned, call) = plan(&config, &global, &request).unwrap();
        assert_eq!(call.domain, "shop/orders");
        assert_eq!(call.hits_addend, 1);
        assert_eq!(
            planned.len(),
            1,
            "login does not match, needs-tenant has no key"
        );
        let entries: Vec<(&str, &str)> = call.descriptors[0]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            entries,
            [
                ("rule", "per-user"),
                ("header.x-user", "alice"),
                ("remote_address", "192.0.2.7"),
                ("path", "/api")
            ]
        );
        let nothing = RequestHead::new(vec![(":path".into(), "/x".into())], None);
        // `per-user` lacks its header, `login` does not match, `needs-tenant` has no key.
        assert!(plan(&config, &global, &nothing).is_none());
    }

    #[test]
    fn long_values_travel_as_their_digest() {
        let short = "a".repeat(MAX_ENTRY_VALUE);
        assert_eq!(entry_value(&short), short);
        let long = "a".repeat(MAX_ENTRY_VALUE + 1);
        let other = format!("{}b", "a".repeat(MAX_ENTRY_VALUE));
        assert!(entry_value(&long).starts_with("sha256:"));
        assert!(entry_value(&long).len() <= MAX_ENTRY_VALUE);
        assert_ne!(
            entry_value(&long),
            entry_value(&other),
            "distinct values, distinct buckets"
        );
    }
}
