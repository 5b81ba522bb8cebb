//! The idempotency store (docs/adr/0009): `meshward.idempotency.v1.IdempotencyStore`
//! (proto/meshward/idempotency/v1/store.proto) on Redis/Valkey, shared by every replica
//! of a service whose idempotency filter runs with `store: remote`.
//!
//! One record per scope: the string key `mw:idem:{<scope_key hex>}` (the hash tag keeps
//! it on one Cluster slot), whose value is one of
//!
//! | state | value | expires |
//! | --- | --- | --- |
//! | in flight | `I:<fingerprint hex>:<token hex>` | `lock_ttl_ms` after `Reserve` |
//! | completed | `C:<fingerprint hex>:<StoredResponse, protobuf>` | `ttl_ms` after `Complete` |
//! | completed, not stored | `N:<fingerprint hex>:<NotStoredReason number>` | `ttl_ms` after `Complete` |
//!
//! - `Reserve`: `SET key <in flight> NX PX lock_ttl_ms`. Set: `NEW` with a fresh
//!   random token. Not set: `GET` the record and answer `MISMATCH` (another
//!   fingerprint), `IN_FLIGHT`, or `COMPLETED` (+ response or reason). A record that
//!   vanished between the two commands (expired, released) is reserved again (three
//!   tries, then `IN_FLIGHT`: someone else is busy with the key right now).
//! - `Complete`/`Release`: one Lua script each ([`scripts`]), atomic: only the token of
//!   the in-flight record may turn it into a completed one (`SET … PX ttl_ms`) or delete
//!   it. Any other token — its lock expired and maybe someone else owns the key now —
//!   changes nothing (`LEASE_LOST`, `released: false`). So two replicas never both
//!   execute a key, and a late completion never overwrites a newer owner's record.
//! - Bounds: scope key and fingerprint 1–64 bytes, token 16 bytes, lock 1 ms–24 h, TTL
//!   1 ms–30 days, response body ≤ `max_response_bytes` (1 MiB by default), ≤ 100
//!   headers and 64 KiB of header bytes, a status 100–999: anything else is
//!   `INVALID_ARGUMENT` (the filter then keeps its lock until it expires; its
//!   `maxResponseBytes` should not exceed the store's).
//! - Redis failing or not answering within `--redis-timeout`: `UNAVAILABLE`; the
//!   filter's `failureMode` decides. Nothing is guessed.

pub mod scripts;

use meshward_proto::idempotency::v1::complete_request::Outcome;
use meshward_proto::idempotency::v1::idempotency_store_server::{
    IdempotencyStore, IdempotencyStoreServer,
};
use meshward_proto::idempotency::v1::reserve_response::{Completed, Outcome as ReserveOutcome};
use meshward_proto::idempotency::v1::{
    complete_response, CompleteRequest, CompleteResponse, NotStoredReason, ReleaseRequest,
    ReleaseResponse, ReserveRequest, ReserveResponse, StoredResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::metrics::{OutcomeLabels, StoreMetrics};
use crate::redis::Redis;

/// Default for `--store-max-response-bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
pub const MAX_KEY_BYTES: usize = 64;
pub const TOKEN_BYTES: usize = 16;
pub const MAX_LOCK_TTL_MS: u64 = 24 * 3600 * 1000;
pub const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// `Reserve` attempts when the record vanishes between `SET NX` and `GET`.
const RESERVE_ATTEMPTS: usize = 3;

/// The service; clones share the Redis connection and the metrics.
#[derive(Clone)]
pub struct Store {
    redis: Redis,
    metrics: StoreMetrics,
    max_response_bytes: usize,
}

/// A record as read back from Redis.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    InFlight {
        fingerprint: Vec<u8>,
    },
    Completed {
        fingerprint: Vec<u8>,
        response: StoredResponse,
    },
    NotStored {
        fingerprint: Vec<u8>,
        reason: i32,
    },
}

impl Store {
    /// `redis` should record into `world.metrics.redis` ([`Redis::with_metrics`]);
    /// `metrics` is normally `world.metrics.store`.
    pub fn new(redis: Redis, metrics: StoreMetrics, max_response_bytes: usize) -> Store {
        Store {
            redis,
            metrics,
            max_response_bytes,
        }
    }

    pub fn server(self) -> IdempotencyStoreServer<Store> {
        let limit = message_limit(self.max_response_bytes);
        IdempotencyStoreServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    fn count_reservation(&self, outcome: &str) {
        self.metrics
            .reservations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    fn count_completion(&self, outcome: &str) {
        self.metrics
            .completions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// What `Reserve` answers.
    pub async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveResponse, Status> {
        let result = self.try_reserve(request).await;
        self.count_reservation(match &result {
            Ok(reply) => match ReserveOutcome::try_from(reply.outcome) {
                Ok(ReserveOutcome::New) => "new",
                Ok(ReserveOutcome::InFlight) => "in_flight",
                Ok(ReserveOutcome::Completed) => "completed",
                Ok(ReserveOutcome::Mismatch) => "mismatch",
                _ => "error",
            },
            Err(status) if status.code() == tonic::Code::InvalidArgument => "invalid",
            Err(_) => "error",
        });
        result
    }

    async fn try_reserve(&self, request: &ReserveRequest) -> Result<ReserveResponse, Status> {
        check_key("scope_key", &request.scope_key)?;
        check_key("fingerprint", &request.fingerprint)?;
        if !(1..=MAX_LOCK_TTL_MS).contains(&request.lock_ttl_ms) {
            return Err(Status::invalid_argument(format!(
                "lock_ttl_ms: expected 1 to {MAX_LOCK_TTL_MS}"
            )));
        }
        let key = record_key(&request.scope_key);
        let token = new_token()?;
        let in_flight = in_flight_value(&request.fingerprint, &token);
        for _ in 0..RESERVE_ATTEMPTS {
            let set: Option<String> = self
                .redis
                .query(
                    "store_reserve",
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&in_flight)
                        .arg("NX")
                        .arg("PX")
                        .arg(request.lock_ttl_ms),
                )
                .await?;
            if set.is_some() {
                return Ok(ReserveResponse {
                    outcome: ReserveOutcome::New as i32,
                    token: token.to_vec(),
                    completed: None,
                });
            }
            let value: Option<Vec<u8>> = self
                .redis
                .query("store_get", redis::cmd("GET").arg(&key))
                .await?;
            let Some(value) = value else {
                continue; // expired or released in between: try to reserve again
            };
            let record = parse_record(&value)
                .ok_or_else(|| Status::internal(format!("{key}: not an idempotency record")))?;
            return Ok(answer(record, &request.fingerprint));
        }
        Ok(ReserveResponse {
            outcome: ReserveOutcome::InFlight as i32,
            ..Default::default()
        })
    }

    /// What `Complete` answers.
    pub async fn complete(&self, request: &CompleteRequest) -> Result<CompleteResponse, Status> {
        let result = self.try_complete(request).await;
        self.count_completion(match &result {
            Ok(reply) => match complete_response::Result::try_from(reply.result) {
                Ok(complete_response::Result::Stored) => "stored",
                Ok(complete_response::Result::NotStored) => "not_stored",
                Ok(complete_response::Result::LeaseLost) => "lease_lost",
                _ => "error",
            },
            Err(status) if status.code() == tonic::Code::InvalidArgument => "invalid",
            Err(_) => "error",
        });
        result
    }

    async fn try_complete(&self, request: &CompleteRequest) -> Result<CompleteResponse, Status> {
        check_key("scope_key", &request.scope_key)?;
        check_token(&request.token)?;
        if !(1..=MAX_TTL_MS).contains(&request.ttl_ms) {
            return Err(Status::invalid_argument(format!(
                "ttl_ms: expected 1 to {MAX_TTL_MS}"
            )));
        }
        let (state, payload, stored) = match &request.outcome {
            Some(Outcome::Response(response)) => {
                self.check_response(response)?;
                ("C", response.encode_to_vec(), true)
            }
            Some(Outcome::NotStored(reason)) => {
                check_reason(*reason)?;
                ("N", reason.to_string().into_bytes(), false)
            }
            None => {
                return Err(Status::invalid_argument(
                    "outcome: a response or a not_stored reason is required",
                ))
            }
        };
        let mut invocation = scripts::COMPLETE.key(record_key(&request.scope_key));
        invocation
            .arg(hex(&request.token))
            .arg(state)
            .arg(payload)
            .arg(request.ttl_ms);
        let done: i64 = self.redis.invoke("store_complete", &invocation).await?;
        let result = match (done, stored) {
            (1, true) => complete_response::Result::Stored,
            (1, false) => complete_response::Result::NotStored,
            _ => complete_response::Result::LeaseLost,
        };
        Ok(CompleteResponse {
            result: result as i32,
        })
    }

    /// What `Release` answers.
    pub async fn release(&self, request: &ReleaseRequest) -> Result<ReleaseResponse, Status> {
        let result = self.try_release(request).await;
        self.count_completion(match &result {
            Ok(reply) if reply.released => "released",
            Ok(_) => "lease_lost",
            Err(status) if status.code() == tonic::Code::InvalidArgument => "invalid",
            Err(_) => "error",
        });
        result
    }

    async fn try_release(&self, request: &ReleaseRequest) -> Result<ReleaseResponse, Status> {
        check_key("scope_key", &request.scope_key)?;
        check_token(&request.token)?;
        let mut invocation = scripts::RELEASE.key(record_key(&request.scope_key));
        invocation.arg(hex(&request.token));
        let done: i64 = self.redis.invoke("store_release", &invocation).await?;
        Ok(ReleaseResponse {
            released: done == 1,
        })
    }

    fn check_response(&self, response: &StoredResponse) -> Result<(), Status> {
        if !(100..=999).contains(&response.status) {
            return Err(Status::invalid_argument(format!(
                "response.status {}: expected 100 to 999",
                response.status
            )));
        }
        if response.body.len() > self.max_response_bytes {
            return Err(Status::invalid_argument(format!(
                "response.body: {} bytes, at most {} (--store-max-response-bytes)",
                response.body.len(),
                self.max_response_bytes
            )));
        }
        if response.headers.len() > MAX_HEADERS {
            return Err(Status::invalid_argument(format!(
                "response.headers: {}, at most {MAX_HEADERS}",
                response.headers.len()
            )));
        }
        let header_bytes: usize = response
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return Err(Status::invalid_argument(format!(
                "response.headers: {header_bytes} bytes, at most {MAX_HEADER_BYTES}"
            )));
        }
        Ok(())
    }
}

/// The gRPC message limit for a body limit: the body, the headers, framing.
fn message_limit(max_response_bytes: usize) -> usize {
    max_response_bytes
        .saturating_add(MAX_HEADER_BYTES)
        .saturating_add(MAX_HEADERS * 8)
        .saturating_add(1024)
}

#[tonic::async_trait]
impl IdempotencyStore for Store {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        Store::reserve(self, request.get_ref())
            .await
            .map(Response::new)
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        Store::complete(self, request.get_ref())
            .await
            .map(Response::new)
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        Store::release(self, request.get_ref())
            .await
            .map(Response::new)
    }
}

fn check_key(field: &str, bytes: &[u8]) -> Result<(), Status> {
    if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes, expected 1 to {MAX_KEY_BYTES}",
            bytes.len()
        )));
    }
    Ok(())
}

fn check_token(token: &[u8]) -> Result<(), Status> {
    if token.len() != TOKEN_BYTES {
        return Err(Status::invalid_argument(format!(
            "token: {} bytes, expected {TOKEN_BYTES} (as Reserve handed it out)",
            token.len()
        )));
    }
    Ok(())
}

fn check_reason(reason: i32) -> Result<(), Status> {
    match NotStoredReason::try_from(reason) {
        Ok(NotStoredReason::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
            "not_stored: {reason} is not a NotStoredReason"
        ))),
        Ok(_) => Ok(()),
    }
}

/// `mw:idem:{<scope_key hex>}`.
pub fn record_key(scope_key: &[u8]) -> String {
    format!("mw:idem:{{{}}}", hex(scope_key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

fn new_token() -> Result<[u8; TOKEN_BYTES], Status> {
    let mut token = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut token)
        .map_err(|e| Status::internal(format!("no randomness for a token: {e}")))?;
    Ok(token)
}

fn in_flight_value(fingerprint: &[u8], token: &[u8]) -> String {
    format!("I:{}:{}", hex(fingerprint), hex(token))
}

/// A record's value (see the module docs) → its state; `None` when it is not one.
fn parse_record(value: &[u8]) -> Option<Record> {
    let (state, rest) = (value.first()?, value.get(1..)?);
    let rest = rest.strip_prefix(b":")?;
    let sep = rest.iter().position(|&b| b == b':')?;
    let fingerprint = unhex(&rest[..sep])?;
    let payload = &rest[sep + 1..];
    match state {
        b'I' => Some(Record::InFlight { fingerprint }),
        b'C' => Some(Record::Completed {
            fingerprint,
            response: StoredResponse::decode(payload).ok()?,
        }),
        b'N' => Some(Record::NotStored {
            fingerprint,
            reason: std::str::from_utf8(payload).ok()?.parse().ok()?,
        }),
        _ => None,
    }
}

/// The answer to a `Reserve` that found `record`.
fn answer(record: Record, fingerprint: &[u8]) -> ReserveResponse {
    let (found, outcome, completed) = match record {
        Record::InFlight { fingerprint } => (fingerprint, ReserveOutcome::InFlight, None),
        Record::Completed {
            fingerprint,
            response,
        } => (
            fingerprint,
            ReserveOutcome::Completed,
            Some(Completed::Response(response)),
        ),
        Record::NotStored {
            fingerprint,
            reason,
        } => (
            fingerprint,
            ReserveOutcome::Completed,
            Some(Completed::NotStored(reason)),
        ),
    };
    if found != fingerprint {
        return ReserveResponse {
            outcome: ReserveOutcome::Mismatch as i32,
            ..Default::default()
        };
    }
    ReserveResponse {
        outcome: outcome as i32,
        token: Vec::new(),
        completed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_proto::idempotency::v1::Header;

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            // Colons and arbitrary bytes in the payload must not confuse the parser.
            body: b"{\"a\":1}\x00\xff:".to_vec(),
        }
    }

    #[test]
    fn keys_carry_the_scope_in_a_hash_tag() {
        assert_eq!(record_key(&[0xab, 0x01]), "mw:idem:{ab01}");
    }

    #[test]
    fn records_parse_back() {
        let fp = vec![1u8, 2, 0xfe];
        assert_eq!(
            parse_record(in_flight_value(&fp, &[9; 16]).as_bytes()),
            Some(Record::InFlight {
                fingerprint: fp.clone()
            })
        );
        let mut completed = format!("C:{}:", hex(&fp)).into_bytes();
        completed.extend(response().encode_to_vec());
        assert_eq!(
            parse_record(&completed),
            Some(Record::Completed {
                fingerprint: fp.clone(),
                response: response()
            })
        );
        assert_eq!(
            parse_record(format!("N:{}:4", hex(&fp)).as_bytes()),
            Some(Record::NotStored {
                fingerprint: fp,
                reason: 4
            })
        );
        for bad in [
            &b""[..],
            b"I",
            b"I:",
            b"I:zz:",
            b"X:01:",
            b"N:01:x",
            b"I:012:",
        ] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_record_answers_for_its_fingerprint_only() {
        let fp = vec![7u8; 16];
        let completed = Record::Completed {
            fingerprint: fp.clone(),
            response: response(),
        };
        let reply = answer(completed.clone(), &fp);
        assert_eq!(reply.outcome, ReserveOutcome::Completed as i32);
        assert_eq!(reply.completed, Some(Completed::Response(response())));
        assert_eq!(
            answer(completed, &[8u8; 16]).outcome,
            ReserveOutcome::Mismatch as i32
        );
        assert_eq!(
            answer(
                Record::InFlight {
                    fingerprint: fp.clone()
                },
                &fp
            )
            .outcome,
            ReserveOutcome::InFlight as i32
        );
        assert_eq!(
            answer(
                Record::NotStored {
                    fingerprint: fp.clone(),
                    reason: 1
                },
                &fp
            )
            .completed,
            Some(Completed::NotStored(1))
        );
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(hex(&bytes).as_bytes()), Some(bytes));
        assert_eq!(unhex(b"0"), None);
        assert_eq!(unhex(b"0g"), None);
    }
}
