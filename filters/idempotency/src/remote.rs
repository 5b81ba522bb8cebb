//! The remote store (`store: {"type": "remote"}`): the control plane's
//! `meshward.idempotency.v1.IdempotencyStore` on Redis/Valkey, shared by every replica
//! of a service (docs/adr/0009-global-state.md).
//!
//! Its messages are written out with prost (the filter builds for wasm32, where the
//! tonic-generated `meshward-proto` crate does not): field numbers and types as in
//! `proto/meshward/idempotency/v1/store.proto`, checked against `meshward-proto` by a
//! native test (tests/store_wire.rs). Enums travel as `int32` (same wire format).
//!
//! The functions here translate between the store's terms ([`Reservation`],
//! [`Finish`], [`Lease`]) and those messages, so the state machine
//! ([`crate::machine::decide`]) decides the same way whether the record lives in shared
//! data or in Redis. Anything the filter cannot read is a [`StoreError`]: the
//! configured `failureMode` applies, never a guess.

use prost::Message;

use crate::fingerprint::Digest128;
use crate::response::StoredResponse;
use crate::store::{Finish, Lease, NotStored, Reservation, Token, TOKEN_LEN};
use meshward_filter_common::matcher::{is_field_value, is_http_token};
use meshward_filter_common::store::StoreError;

/// The gRPC service and its methods, as `dispatch_grpc_call` names them.
pub const SERVICE: &str = "meshward.idempotency.v1.IdempotencyStore";
pub const RESERVE: &str = "Reserve";
pub const COMPLETE: &str = "Complete";
pub const RELEASE: &str = "Release";

/// `ReserveResponse.Outcome`
pub const OUTCOME_NEW: i32 = 1;
pub const OUTCOME_IN_FLIGHT: i32 = 2;
pub const OUTCOME_COMPLETED: i32 = 3;
pub const OUTCOME_MISMATCH: i32 = 4;

/// `CompleteResponse.Result`
pub const RESULT_STORED: i32 = 1;
pub const RESULT_NOT_STORED: i32 = 2;
pub const RESULT_LEASE_LOST: i32 = 3;

/// `meshward.idempotency.v1.Header`
#[derive(Clone, PartialEq, Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `meshward.idempotency.v1.StoredResponse`
#[derive(Clone, PartialEq, Message)]
pub struct WireResponse {
    #[prost(uint32, tag = "1")]
    pub status: u32,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<Header>,
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
}

/// `meshward.idempotency.v1.ReserveRequest`
#[derive(Clone, PartialEq, Message)]
pub struct ReserveRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub scope_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub fingerprint: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub lock_ttl_ms: u64,
}

/// `meshward.idempotency.v1.ReserveResponse`
#[derive(Clone, PartialEq, Message)]
pub struct ReserveResponse {
    #[prost(int32, tag = "1")]
    pub outcome: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub token: Vec<u8>,
    #[prost(oneof = "Completed", tags = "3, 4")]
    pub completed: Option<Completed>,
}

/// `ReserveResponse.completed`
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Completed {
    #[prost(message, tag = "3")]
    Response(WireResponse),
    /// A `NotStoredReason` ([`NotStored::code`]).
    #[prost(int32, tag = "4")]
    NotStored(i32),
}

/// `meshward.idempotency.v1.CompleteRequest`
#[derive(Clone, PartialEq, Message)]
pub struct CompleteRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub scope_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub token: Vec<u8>,
    #[prost(oneof = "Outcome", tags = "3, 4")]
    pub outcome: Option<Outcome>,
    #[prost(uint64, tag = "5")]
    pub ttl_ms: u64,
}

/// `CompleteRequest.outcome`
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Outcome {
    #[prost(message, tag = "3")]
    Response(WireResponse),
    /// A `NotStoredReason` ([`NotStored::code`]).
    #[prost(int32, tag = "4")]
    NotStored(i32),
}

/// `meshward.idempotency.v1.CompleteResponse`
#[derive(Clone, PartialEq, Message)]
pub struct CompleteResponse {
    #[prost(int32, tag = "1")]
    pub result: i32,
}

/// `meshward.idempotency.v1.ReleaseRequest`
#[derive(Clone, PartialEq, Message)]
pub struct ReleaseRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub scope_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub token: Vec<u8>,
}

/// `meshward.idempotency.v1.ReleaseResponse`
#[derive(Clone, PartialEq, Message)]
pub struct ReleaseResponse {
    #[prost(bool, tag = "1")]
    pub released: bool,
}

/// Nanoseconds → whole milliseconds, rounded up, at least 1 (a lock or TTL shorter than
/// asked would be unsafe; 0 means "unset" on the wire).
pub fn millis(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000).max(1)
}

fn malformed(what: &str) -> StoreError {
    StoreError::Unavailable(format!("the idempotency store sent {what}"))
}

impl From<&StoredResponse> for WireResponse {
    fn from(stored: &StoredResponse) -> Self {
        Self {
            status: u32::from(stored.status),
            headers: stored
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            body: stored.body.clone(),
        }
    }
}

impl WireResponse {
    /// `None` for a status that is not an HTTP status, or a header field Envoy could
    /// not send (a name that is not a lowercase RFC 9110 token, a value with control
    /// characters): a record the filter did not write that way is not replayed.
    pub fn into_stored(self) -> Option<StoredResponse> {
        let status = u16::try_from(self.status)
            .ok()
            .filter(|s| (100..=999).contains(s))?;
        let sendable = |h: &Header| {
            is_http_token(&h.name)
                && !h.name.bytes().any(|b| b.is_ascii_uppercase())
                && is_field_value(&h.value)
        };
        if !self.headers.iter().all(sendable) {
            return None;
        }
        Some(StoredResponse {
            status,
            headers: self
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: self.body,
        })
    }
}

/// The `Reserve` call for `scope` with this request's `fingerprint`.
pub fn reserve_request(scope: &Digest128, fingerprint: &Digest128, lock_nanos: u64) -> Vec<u8> {
    ReserveRequest {
        scope_key: scope.to_vec(),
        fingerprint: fingerprint.to_vec(),
        lock_ttl_ms: millis(lock_nanos),
    }
    .encode_to_vec()
}

/// A `ReserveResponse` (of a call that ended `OK`) as the store's [`Reservation`].
pub fn reservation(message: &[u8]) -> Result<Reservation, StoreError> {
    let reply = ReserveResponse::decode(message)
        .map_err(|e| malformed(&format!("an unreadable ReserveResponse ({e})")))?;
    match reply.outcome {
        OUTCOME_NEW => {
            let token: Token = reply.token.as_slice().try_into().map_err(|_| {
                malformed(&format!(
                    "a token of {} bytes, expected {TOKEN_LEN}",
                    reply.token.len()
                ))
            })?;
            Ok(Reservation::Execute {
                lease: Lease::Token(token),
                evicted: false,
            })
        }
        OUTCOME_IN_FLIGHT => Ok(Reservation::InFlight),
        OUTCOME_MISMATCH => Ok(Reservation::Mismatch),
        OUTCOME_COMPLETED => match reply.completed {
            Some(Completed::Response(response)) => response
                .into_stored()
                .map(Reservation::Completed)
                .ok_or_else(|| {
                    malformed("a stored response with an invalid status or header field")
                }),
            Some(Completed::NotStored(code)) => u8::try_from(code)
                .ok()
                .and_then(NotStored::from_code)
                .map(Reservation::CompletedNotStored)
                .ok_or_else(|| malformed(&format!("an unknown not-stored reason {code}"))),
            None => Err(malformed("COMPLETED without a response or a reason")),
        },
        other => Err(malformed(&format!("an unknown outcome {other}"))),
    }
}

/// The `Complete` call for the record `scope` owned by `token`.
pub fn complete_request(
    scope: &Digest128,
    token: &Token,
    outcome: Result<&StoredResponse, NotStored>,
    ttl_nanos: u64,
) -> Vec<u8> {
    CompleteRequest {
        scope_key: scope.to_vec(),
        token: token.to_vec(),
        outcome: Some(match outcome {
            Ok(response) => Outcome::Response(response.into()),
            Err(reason) => Outcome::NotStored(i32::from(reason.code())),
        }),
        ttl_ms: millis(ttl_nanos),
    }
    .encode_to_vec()
}

/// A `CompleteResponse` as the store's [`Finish`]; `sent` is what the call recorded.
pub fn finish(message: &[u8], sent: Result<(), NotStored>) -> Result<Finish, StoreError> {
    let reply = CompleteResponse::decode(message)
        .map_err(|e| malformed(&format!("an unreadable CompleteResponse ({e})")))?;
    match (reply.result, sent) {
        (RESULT_STORED, Ok(())) => Ok(Finish::Stored),
        (RESULT_NOT_STORED, Err(reason)) => Ok(Finish::NotStored(reason)),
        (RESULT_LEASE_LOST, _) => Ok(Finish::LeaseLost),
        (other, _) => Err(malformed(&format!(
            "result {other} to a Complete that {}",
            if sent.is_ok() {
                "stored a response"
            } else {
                "recorded no response"
            }
        ))),
    }
}

/// The `Release` call for the record `scope` owned by `token`.
pub fn release_request(scope: &Digest128, token: &Token) -> Vec<u8> {
    ReleaseRequest {
        scope_key: scope.to_vec(),
        token: token.to_vec(),
    }
    .encode_to_vec()
}

/// A `ReleaseResponse`: whether the record was deleted (false: the lock had already
/// expired and someone else may own the key; nothing to do).
pub fn released(message: &[u8]) -> Result<bool, StoreError> {
    ReleaseResponse::decode(message)
        .map(|reply| reply.released)
        .map_err(|e| malformed(&format!("an unreadable ReleaseResponse ({e})")))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn stored() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: vec![0, 255, b'{', b'}'],
        }
    }

    fn reply(outcome: i32, token: &[u8], completed: Option<Completed>) -> Vec<u8> {
        ReserveResponse {
            outcome,
            token: token.to_vec(),
            completed,
        }
        .encode_to_vec()
    }

    /// A completed record whose stored 200 response has one header field.
    fn completed_with_header(name: &str, value: &str) -> Vec<u8> {
        let response = WireResponse {
            status: 200,
            headers: vec![Header {
                name: name.into(),
                value: value.into(),
            }],
            body: vec![],
        };
        reply(OUTCOME_COMPLETED, &[], Some(Completed::Response(response)))
    }

    #[test]
    fn every_outcome_becomes_the_reservation_the_local_store_would_give() {
        assert_eq!(
            reservation(&reply(OUTCOME_NEW, &[7; 16], None)),
            Ok(Reservation::Execute {
                lease: Lease::Token([7; 16]),
                evicted: false
            })
        );
        assert_eq!(
            reservation(&reply(OUTCOME_IN_FLIGHT, &[], None)),
            Ok(Reservation::InFlight)
        );
        assert_eq!(
            reservation(&reply(OUTCOME_MISMATCH, &[], None)),
            Ok(Reservation::Mismatch)
        );
        assert_eq!(
            reservation(&reply(
                OUTCOME_COMPLETED,
                &[],
                Some(Completed::Response((&stored()).into()))
            )),
            Ok(Reservation::Completed(stored()))
        );
        assert_eq!(
            reservation(&reply(
                OUTCOME_COMPLETED,
                &[],
                Some(Completed::NotStored(i32::from(
                    NotStored::Incomplete.code()
                )))
            )),
            Ok(Reservation::CompletedNotStored(NotStored::Incomplete))
        );
    }

    #[test]
    fn anything_unreadable_is_a_store_error() {
        for bad in [
            reply(0, &[], None),
            reply(99, &[], None),
            reply(OUTCOME_NEW, &[1; 8], None),
            reply(OUTCOME_COMPLETED, &[], None),
            reply(OUTCOME_COMPLETED, &[], Some(Completed::NotStored(0))),
            reply(OUTCOME_COMPLETED, &[], Some(Completed::NotStored(300))),
            reply(
                OUTCOME_COMPLETED,
                &[],
                Some(Completed::Response(WireResponse {
                    status: 70_000,
                    headers: vec![],
                    body: vec![],
                })),
            ),
            // Header fields Envoy could not send: never replayed.
            completed_with_header("x-evil", "a\r\nset-cookie: stolen"),
            completed_with_header(":status", "500"),
            completed_with_header("Content-Type", "text/plain"),
            vec![0xff, 0xff, 0xff],
        ] {
            assert!(
                matches!(reservation(&bad), Err(StoreError::Unavailable(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn complete_and_release_calls_carry_scope_token_and_outcome() {
        let scope = [1u8; 16];
        let token = [2u8; 16];
        let call = CompleteRequest::decode(
            complete_request(&scope, &token, Ok(&stored()), 1_500_000).as_slice(),
        )
        .unwrap();
        assert_eq!(call.scope_key, scope);
        assert_eq!(call.token, token);
        assert_eq!(call.ttl_ms, 2, "rounded up");
        assert_eq!(
            call.outcome
                .and_then(|o| match o {
                    Outcome::Response(r) => r.into_stored(),
                    Outcome::NotStored(_) => None,
                })
                .unwrap(),
            stored()
        );
        let not_stored = CompleteRequest::decode(
            complete_request(&scope, &token, Err(NotStored::TooLarge), 0).as_slice(),
        )
        .unwrap();
        assert_eq!(not_stored.outcome, Some(Outcome::NotStored(1)));
        assert_eq!(not_stored.ttl_ms, 1, "never 0");
        let release = ReleaseRequest::decode(release_request(&scope, &token).as_slice()).unwrap();
        assert_eq!(
            (release.scope_key, release.token),
            (scope.to_vec(), token.to_vec())
        );
    }

    #[test]
    fn answers_to_complete_and_release() {
        let answer = |result| CompleteResponse { result }.encode_to_vec();
        assert_eq!(finish(&answer(RESULT_STORED), Ok(())), Ok(Finish::Stored));
        assert_eq!(
            finish(&answer(RESULT_NOT_STORED), Err(NotStored::Streaming)),
            Ok(Finish::NotStored(NotStored::Streaming))
        );
        assert_eq!(
            finish(&answer(RESULT_LEASE_LOST), Ok(())),
            Ok(Finish::LeaseLost)
        );
        assert!(finish(&answer(RESULT_NOT_STORED), Ok(())).is_err());
        assert!(finish(&answer(0), Ok(())).is_err());
        assert_eq!(
            released(&ReleaseResponse { released: true }.encode_to_vec()),
            Ok(true)
        );
        assert_eq!(released(&[]), Ok(false), "proto3 default");
    }
}
