//! The idempotency store's answers (protobuf bytes as received from the control plane's
//! `IdempotencyStore`, or whatever answers in its place), decoded with prost and mapped
//! to the decisions the embedded store would give.
//!
//! Input: the answer bytes, read as a `ReserveResponse`, a `CompleteResponse` (to a call
//! that stored a response, and to one that recorded a reason) and a `ReleaseResponse`.
//! Properties: nothing panics; a reservation to execute carries a 16-byte token; a
//! completed record to replay has an HTTP status and only header fields Envoy can send
//! (lowercase RFC 9110 token names, values without control characters but HTAB); the
//! answer re-encoded decodes to the same reservation; `Stored` answers only a call that
//! stored, `NotStored` only one that recorded that very reason.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::matcher::{is_field_value, is_http_token};
use meshward_idempotency::remote::{finish, released, reservation, ReserveResponse};
use meshward_idempotency::store::{Finish, Lease, NotStored, Reservation};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let reserved = reservation(data);
    match &reserved {
        Ok(Reservation::Execute { lease, evicted }) => {
            assert!(matches!(lease, Lease::Token(token) if token.len() == 16));
            assert!(!evicted, "the remote store never reports evictions");
        }
        Ok(Reservation::Completed(stored)) => {
            assert!((100..=999).contains(&stored.status), "{}", stored.status);
            for (name, value) in &stored.headers {
                assert!(is_http_token(name), "{name:?}");
                assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
                assert!(is_field_value(value), "{value:?}");
            }
        }
        Ok(Reservation::Full) => panic!("the remote store never answers Full"),
        Ok(_) | Err(_) => {}
    }
    if let Ok(decoded) = ReserveResponse::decode(data) {
        assert_eq!(reservation(&decoded.encode_to_vec()), reserved);
    } else {
        assert!(reserved.is_err());
    }

    match finish(data, Ok(())) {
        Ok(Finish::NotStored(reason)) => panic!("NotStored({reason:?}) to a call that stored"),
        Ok(Finish::Stored | Finish::LeaseLost) | Err(_) => {}
    }
    match finish(data, Err(NotStored::TooLarge)) {
        Ok(Finish::Stored) => panic!("Stored to a call that recorded a reason"),
        Ok(Finish::NotStored(reason)) => assert_eq!(reason, NotStored::TooLarge),
        Ok(Finish::LeaseLost) | Err(_) => {}
    }
    let _ = released(data);
});
