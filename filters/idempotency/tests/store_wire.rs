//! The filter's hand-written store messages (`remote.rs`) against the control plane's
//! generated ones (`meshward-proto`, from proto/meshward/idempotency/v1/store.proto):
//! every message encoded by one side decodes on the other with every field intact, in
//! both directions.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use meshward_idempotency::remote::{self, Completed, Outcome};
use meshward_proto::idempotency::v1 as proto;
use prost::Message;

/// Encodes with one side, decodes with the other, and back: nothing lost either way.
fn round_trip<
    F: Message + Default + PartialEq + std::fmt::Debug,
    P: Message + Default + PartialEq + std::fmt::Debug,
>(
    filter: &F,
    control_plane: &P,
) {
    assert_eq!(
        &P::decode(filter.encode_to_vec().as_slice()).unwrap(),
        control_plane,
        "filter → control plane"
    );
    assert_eq!(
        &F::decode(control_plane.encode_to_vec().as_slice()).unwrap(),
        filter,
        "control plane → filter"
    );
    assert_eq!(
        filter.encode_to_vec(),
        control_plane.encode_to_vec(),
        "byte-identical encodings"
    );
}

fn filter_response() -> remote::WireResponse {
    remote::WireResponse {
        status: 201,
        headers: vec![
            remote::Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            remote::Header {
                name: "location".into(),
                value: "/orders/7".into(),
            },
        ],
        body: vec![0, 159, 146, 150, b'{', b'}'],
    }
}

fn proto_response() -> proto::StoredResponse {
    proto::StoredResponse {
        status: 201,
        headers: vec![
            proto::Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            proto::Header {
                name: "location".into(),
                value: "/orders/7".into(),
            },
        ],
        body: vec![0, 159, 146, 150, b'{', b'}'],
    }
}

#[test]
fn the_service_name_matches() {
    assert_eq!(
        remote::SERVICE,
        proto::idempotency_store_server::SERVICE_NAME
    );
    assert_eq!(
        [remote::RESERVE, remote::COMPLETE, remote::RELEASE],
        ["Reserve", "Complete", "Release"],
        "the rpc names of store.proto"
    );
}

#[test]
fn header_and_stored_response() {
    round_trip(
        &remote::Header {
            name: "etag".into(),
            value: "\"v1\"".into(),
        },
        &proto::Header {
            name: "etag".into(),
            value: "\"v1\"".into(),
        },
    );
    round_trip(&filter_response(), &proto_response());
    round_trip(
        &remote::WireResponse::default(),
        &proto::StoredResponse::default(),
    );
}

#[test]
fn reserve_request() {
    let scope = [3u8; 16];
    let fingerprint = [4u8; 16];
    let bytes = remote::reserve_request(&scope, &fingerprint, 30_000_000_000);
    let decoded = proto::ReserveRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        decoded,
        proto::ReserveRequest {
            scope_key: scope.to_vec(),
            fingerprint: fingerprint.to_vec(),
            lock_ttl_ms: 30_000,
        }
    );
    round_trip(
        &remote::ReserveRequest::decode(bytes.as_slice()).unwrap(),
        &decoded,
    );
}

#[test]
fn reserve_response_every_outcome() {
    use proto::reserve_response::{Completed as P, Outcome as O};
    let cases = [
        (
            remote::ReserveResponse {
                outcome: remote::OUTCOME_NEW,
                token: vec![9; 16],
                completed: None,
            },
            proto::ReserveResponse {
                outcome: O::New as i32,
                token: vec![9; 16],
                completed: None,
            },
        ),
        (
            remote::ReserveResponse {
                outcome: remote::OUTCOME_IN_FLIGHT,
                token: vec![],
                completed: None,
            },
            proto::ReserveResponse {
                outcome: O::InFlight as i32,
                token: vec![],
                completed: None,
            },
        ),
        (
            remote::ReserveResponse {
                outcome: remote::OUTCOME_MISMATCH,
                token: vec![],
                completed: None,
            },
            proto::ReserveResponse {
                outcome: O::Mismatch as i32,
                token: vec![],
                completed: None,
            },
        ),
        (
            remote::ReserveResponse {
                outcome: remote::OUTCOME_COMPLETED,
                token: vec![],
                completed: Some(Completed::Response(filter_response())),
            },
            proto::ReserveResponse {
                outcome: O::Completed as i32,
                token: vec![],
                completed: Some(P::Response(proto_response())),
            },
        ),
        (
            remote::ReserveResponse {
                outcome: remote::OUTCOME_COMPLETED,
                token: vec![],
                completed: Some(Completed::NotStored(
                    proto::NotStoredReason::Incomplete as i32,
                )),
            },
            proto::ReserveResponse {
                outcome: O::Completed as i32,
                token: vec![],
                completed: Some(P::NotStored(proto::NotStoredReason::Incomplete as i32)),
            },
        ),
    ];
    for (filter, control_plane) in &cases {
        round_trip(filter, control_plane);
    }
}

#[test]
fn not_stored_reasons_have_the_same_numbers() {
    use meshward_idempotency::store::NotStored;
    for (reason, wire) in [
        (NotStored::TooLarge, proto::NotStoredReason::TooLarge),
        (NotStored::Streaming, proto::NotStoredReason::Streaming),
        (NotStored::StoreFull, proto::NotStoredReason::StoreFull),
        (NotStored::Incomplete, proto::NotStoredReason::Incomplete),
        (NotStored::StoreFailed, proto::NotStoredReason::StoreFailed),
    ] {
        assert_eq!(i32::from(reason.code()), wire as i32, "{reason:?}");
    }
}

#[test]
fn complete_request_with_a_response_and_without() {
    use proto::complete_request::Outcome as P;
    round_trip(
        &remote::CompleteRequest {
            scope_key: vec![1; 16],
            token: vec![2; 16],
            outcome: Some(Outcome::Response(filter_response())),
            ttl_ms: 86_400_000,
        },
        &proto::CompleteRequest {
            scope_key: vec![1; 16],
            token: vec![2; 16],
            outcome: Some(P::Response(proto_response())),
            ttl_ms: 86_400_000,
        },
    );
    round_trip(
        &remote::CompleteRequest {
            scope_key: vec![1; 16],
            token: vec![2; 16],
            outcome: Some(Outcome::NotStored(proto::NotStoredReason::TooLarge as i32)),
            ttl_ms: 1,
        },
        &proto::CompleteRequest {
            scope_key: vec![1; 16],
            token: vec![2; 16],
            outcome: Some(P::NotStored(proto::NotStoredReason::TooLarge as i32)),
            ttl_ms: 1,
        },
    );
}

#[test]
fn complete_response_every_result() {
    use proto::complete_response::Result as R;
    for (filter, control_plane) in [
        (remote::RESULT_STORED, R::Stored),
        (remote::RESULT_NOT_STORED, R::NotStored),
        (remote::RESULT_LEASE_LOST, R::LeaseLost),
    ] {
        round_trip(
            &remote::CompleteResponse { result: filter },
            &proto::CompleteResponse {
                result: control_plane as i32,
            },
        );
    }
}

#[test]
fn release_request_and_response() {
    round_trip(
        &remote::ReleaseRequest {
            scope_key: vec![5; 16],
            token: vec![6; 16],
        },
        &proto::ReleaseRequest {
            scope_key: vec![5; 16],
            token: vec![6; 16],
        },
    );
    for released in [true, false] {
        round_trip(
            &remote::ReleaseResponse { released },
            &proto::ReleaseResponse { released },
        );
    }
}
