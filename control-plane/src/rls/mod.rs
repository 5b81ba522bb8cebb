//! Meshward's rate-limit service (docs/adr/0009): Envoy's
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, deciding the rules of
//! `scope: global` rate-limit policies with counters in Redis/Valkey.
//!
//! - The request's `domain` names the policy (`<namespace>/<name>`, see
//!   [`global_domain`]); each descriptor's `rule` entry names its rule, whose `limit`
//!   applies. Unknown domain or rule: `OK`, nothing counted (`unknown` in the metrics).
//! - One counter per (domain, rule, entries): `mw:rl:{<domain>|<rule>|<hex16>}` where
//!   hex16 is the first 8 bytes of SHA-256 over the entries (the hash tag keeps a
//!   counter on one Cluster slot). One atomic Lua script per algorithm ([`scripts`]).
//! - Descriptors are decided independently (concurrently, one script each); the
//!   answer is `OVER_LIMIT` if any is. As in envoyproxy/ratelimit, an admitted
//!   descriptor's hit stays counted when another one of the request is over its limit.
//! - `hits_addend` (the descriptor's, else the request's; 0 means 1) is charged at once.
//! - Bounds: at most 64 descriptors, 16 entries each, keys of at most 256 bytes; more
//!   is `INVALID_ARGUMENT`. A value over 256 bytes is not refused (one long header
//!   would otherwise switch off every global limit of the request): it enters the
//!   counter key as its SHA-256 ([`counter_key`]). Redis failing or not answering within its
//!   timeout is `UNAVAILABLE`: the filter's `failureMode`/`fallback` decide.

pub mod kubernetes;
pub mod limit;
pub mod scripts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::metrics::{CodeLabels, RlsMetrics};
use crate::policy::compile::global_domain;
use crate::policy::model::{Kind, Policy, Scope};
use crate::redis::Redis;
use crate::xds::world::World;
use limit::Limit;

pub const MAX_DESCRIPTORS: usize = 64;
pub const MAX_ENTRIES: usize = 16;
pub const MAX_ENTRY_BYTES: usize = 256;
/// A request's hits beyond this are refused as invalid (a bucket holds at most 10⁹).
const MAX_HITS: u64 = 1_000_000_000;

/// The service; clones share the policy index.
#[derive(Clone)]
pub struct Rls {
    world: Arc<World>,
    redis: Redis,
    metrics: RlsMetrics,
    index: Arc<Mutex<Option<IndexFor>>>,
}

/// An index and the policies it was built from.
type IndexFor = (Arc<Vec<Policy>>, Arc<Index>);

/// domain → rule name → limit (rules whose limit does not parse are absent: the filter
/// refuses such a configuration anyway).
type Index = HashMap<String, HashMap<String, Limit>>;

impl Rls {
    /// `redis` should record into `world.metrics.redis` ([`Redis::with_metrics`]).
    pub fn new(world: Arc<World>, redis: Redis) -> Rls {
        Rls {
            metrics: world.metrics.rls.clone(),
            world,
            redis,
            index: Arc::default(),
        }
    }

    pub fn server(self) -> RateLimitServiceServer<Rls> {
        RateLimitServiceServer::new(self)
    }

    /// The index for the policies in force, rebuilt when they change.
    fn index(&self) -> Arc<Index> {
        let policies = self.world.policies();
        let mut cached = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((built_from, index)) = cached.as_ref() {
            if Arc::ptr_eq(built_from, &policies) {
                return index.clone();
            }
        }
        let index = Arc::new(build_index(&policies));
        *cached = Some((policies, index.clone()));
        index
    }

    fn count(&self, code: &str, n: usize) {
        self.metrics
            .decisions
            .get_or_create(&CodeLabels { code: code.into() })
            .inc_by(n as u64);
    }

    /// Decides a request (what `ShouldRateLimit` answers).
    pub async fn decide(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        if let Err(message) = check_bounds(request) {
            // Per descriptor, as every other outcome (`error` included).
            self.count("invalid", request.descriptors.len().max(1));
            return Err(Status::invalid_argument(message));
        }
        let index = self.index();
        let rules = index.get(&request.domain);
        let default_hits = u64::from(request.hits_addend.max(1));
        let checks = request.descriptors.iter().map(|descriptor| {
            let found = rules.and_then(|rules| {
                let rule = rule_of(descriptor)?;
                Some((rule, rules.get(rule)?))
            });
            let hits = descriptor
                .hits_addend
                .as_ref()
                .map_or(default_hits, |h| h.value.max(1));
            async move {
                let Some((rule, limit)) = found else {
                    return Ok(None);
                };
                let key = counter_key(&request.domain, rule, descriptor);
                let (script, op) = scripts::script(limit.algorithm);
                let mut invocation = script.key(&key);
                for arg in scripts::args(limit, hits) {
                    invocation.arg(arg);
                }
                let (allowed, remaining, micros): (i64, i64, i64) =
                    self.redis.invoke(op, &invocation).await?;
                Ok::<_, crate::redis::RedisError>(Some((
                    rule,
                    *limit,
                    allowed == 1,
                    remaining,
                    micros,
                )))
            }
        });
        let results = futures::future::join_all(checks).await;
        if let Some(error) = results.iter().find_map(|r| r.as_ref().err()) {
            self.count("error", results.len());
            return Err(error.clone().into());
        }
        let mut statuses = Vec::with_capacity(results.len());
        let mut over = false;
        for result in results.into_iter().flatten() {
            let status = match result {
                None => {
                    self.count("unknown", 1);
                    DescriptorStatus {
                        code: Code::Ok as i32,
                        ..Default::default()
                    }
                }
                Some((rule, limit, allowed, remaining, micros)) => {
                    self.count(if allowed { "ok" } else { "over_limit" }, 1);
                    over |= !allowed;
                    DescriptorStatus {
                        code: if allowed { Code::Ok } else { Code::OverLimit } as i32,
                        current_limit: limit.unit().map(|unit| RateLimit {
                            name: rule.to_owned(),
                            requests_per_unit: u32::try_from(limit.requests).unwrap_or(u32::MAX),
                            unit: unit as i32,
                        }),
                        limit_remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                        duration_until_reset: Some(proto_duration(micros)),
                        ..Default::default()
                    }
                }
            };
            statuses.push(status);
        }
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.decide(request.get_ref()).await.map(Response::new)
    }
}

fn build_index(policies: &[Policy]) -> Index {
    let mut index = Index::new();
    for policy in policies
        .iter()
        .filter(|p| p.kind == Kind::RateLimit && p.scope == Scope::Global)
    {
        let rules = index.entry(global_domain(policy)).or_default();
        let Some(list) = policy.config.get("rules").and_then(|r| r.as_array()) else {
            continue;
        };
        for rule in list {
            let Some(name) = rule.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            match rule.get("limit").map(Limit::parse) {
                Some(Ok(limit)) => {
                    rules.insert(name.to_owned(), limit);
                }
                Some(Err(error)) => eprintln!(
                    "meshward-control-plane: rls: {} rule {name}: limit: {error}; not enforced",
                    policy.source
                ),
                None => {}
            }
        }
    }
    index
}

fn check_bounds(request: &RateLimitRequest) -> Result<(), String> {
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(format!(
            "{} descriptors: at most {MAX_DESCRIPTORS} per request",
            request.descriptors.len()
        ));
    }
    for (i, descriptor) in request.descriptors.iter().enumerate() {
        if descriptor.entries.len() > MAX_ENTRIES {
            return Err(format!(
                "descriptors[{i}]: {} entries: at most {MAX_ENTRIES}",
                descriptor.entries.len()
            ));
        }
        if let Some(entry) = descriptor
            .entries
            .iter()
            .find(|e| e.key.len() > MAX_ENTRY_BYTES)
        {
            return Err(format!(
                "descriptors[{i}]: entry {:?}: keys are at most {MAX_ENTRY_BYTES} bytes",
                truncate(&entry.key, 32)
            ));
        }
        let hits = descriptor
            .hits_addend
            .as_ref()
            .map_or(u64::from(request.hits_addend), |h| h.value);
        if hits > MAX_HITS {
            return Err(format!("descriptors[{i}]: hits_addend at most {MAX_HITS}"));
        }
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The descriptor's `rule` entry.
fn rule_of(descriptor: &RateLimitDescriptor) -> Option<&str> {
    descriptor
        .entries
        .iter()
        .find(|e| e.key == "rule")
        .map(|e| e.value.as_str())
}

/// `mw:rl:{<domain>|<rule>|<hex16>}`: hex16 = SHA-256 over the entries in order, each
/// key and value length-prefixed (so no two entry lists share a digest by concatenation).
/// A value over 256 bytes enters as its own SHA-256, after the length prefix
/// `u32::MAX` that no shorter value has.
pub fn counter_key(domain: &str, rule: &str, descriptor: &RateLimitDescriptor) -> String {
    let mut digest = Sha256::new();
    for entry in &descriptor.entries {
        digest.update((entry.key.len() as u32).to_be_bytes());
        digest.update(entry.key.as_bytes());
        if entry.value.len() > MAX_ENTRY_BYTES {
            digest.update(u32::MAX.to_be_bytes());
            digest.update(Sha256::digest(entry.value.as_bytes()));
        } else {
            digest.update((entry.value.len() as u32).to_be_bytes());
            digest.update(entry.value.as_bytes());
        }
    }
    let hash = digest.finalize();
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("mw:rl:{{{domain}|{rule}|{hex}}}")
}

fn proto_duration(micros: i64) -> ProtoDuration {
    let micros = micros.max(0);
    ProtoDuration {
        seconds: micros / 1_000_000,
        nanos: i32::try_from((micros % 1_000_000) * 1000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use serde_json::json;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_hash_the_entries_under_one_hash_tag() {
        let a = counter_key(
            "shop/l",
            "r",
            &descriptor(&[("rule", "r"), ("remote_address", "10.0.0.1")]),
        );
        assert!(a.starts_with("mw:rl:{shop/l|r|") && a.ends_with('}'), "{a}");
        assert_eq!(a.len(), "mw:rl:{shop/l|r|}".len() + 16);
        let b = counter_key(
            "shop/l",
            "r",
            &descriptor(&[("rule", "r"), ("remote_address", "10.0.0.2")]),
        );
        assert_ne!(a, b);
        // Length prefixes: moving a byte from key to value is another counter.
        assert_ne!(
            counter_key("d", "r", &descriptor(&[("ab", "c")])),
            counter_key("d", "r", &descriptor(&[("a", "bc")]))
        );
    }

    #[test]
    fn bounds() {
        let mut request = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![descriptor(&[("rule", "r")]); MAX_DESCRIPTORS],
            hits_addend: 0,
        };
        assert!(check_bounds(&request).is_ok());
        request.descriptors.push(descriptor(&[("rule", "r")]));
        assert!(check_bounds(&request)
            .unwrap_err()
            .contains("65 descriptors"));
        let entries: Vec<(String, String)> = (0..=MAX_ENTRIES)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        request.descriptors = vec![descriptor(&many)];
        assert!(check_bounds(&request).unwrap_err().contains("17 entries"));
        let long = "é".repeat(129);
        request.descriptors = vec![descriptor(&[(&long, "v")])];
        assert!(check_bounds(&request).unwrap_err().contains("256 bytes"));
        request.descriptors = vec![descriptor(&[(&long[..256], "v")])];
        assert!(check_bounds(&request).is_ok());
        // A long value is hashed, not refused.
        request.descriptors = vec![descriptor(&[("rule", "r"), ("path", &long)])];
        assert!(check_bounds(&request).is_ok());
    }

    #[test]
    fn long_values_enter_the_key_as_their_hash() {
        let key = |value: &str| counter_key("d", "r", &descriptor(&[("path", value)]));
        let long = "x".repeat(MAX_ENTRY_BYTES + 1);
        let other = "y".repeat(MAX_ENTRY_BYTES + 1);
        assert_eq!(key(&long), key(&long.clone()));
        assert_ne!(key(&long), key(&other));
        assert_ne!(key(&long), key(&long[..MAX_ENTRY_BYTES]));
        // Values up to the bound keep their keys.
        let mut digest = Sha256::new();
        for part in ["path", "v"] {
            digest.update((part.len() as u32).to_be_bytes());
            digest.update(part.as_bytes());
        }
        let hex: String = digest.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(key("v"), format!("mw:rl:{{d|r|{hex}}}"));
    }

    #[test]
    fn the_index_holds_global_policies_only_by_domain() {
        let policy = |name: &str, scope| Policy {
            kind: Kind::RateLimit,
            namespace: "shop".into(),
            name: name.into(),
            selector: Default::default(),
            scope,
            config: json!({"global": {"domain": "ignored"}, "rules": [
                {"name": "a", "limit": {"algorithm": "tokenBucket", "requests": 5, "per": "1s"}},
                {"name": "bad", "limit": {"algorithm": "tokenBucket", "requests": 0, "per": "1s"}}
            ]}),
            source: format!("{name}.yaml"),
        };
        let index = build_index(&[
            policy("global", Scope::Global),
            policy("local", Scope::PerReplica),
        ]);
        assert_eq!(index.len(), 1);
        let rules = &index["shop/global"];
        assert_eq!(rules["a"].requests, 5);
        assert!(!rules.contains_key("bad"));
    }

    #[test]
    fn durations_convert() {
        assert_eq!(
            proto_duration(1_500_001),
            ProtoDuration {
                seconds: 1,
                nanos: 500_001_000
            }
        );
        assert_eq!(proto_duration(-5), ProtoDuration::default());
    }
}
