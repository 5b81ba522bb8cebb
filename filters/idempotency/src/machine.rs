//! The idempotency state machine as pure functions: which requests take part, what a
//! reservation means for the client, and what happens to an upstream response. The
//! adapter only moves bytes between Envoy and these functions.

use crate::config::{CompiledConfig, FailureMode, KeyRequirement};
use crate::fingerprint::{scope, Digest128};
use crate::key::{parse_key, KeyError};
use crate::response::{is_replayed, StoredResponse};
use crate::store::{Lease, NotStored, Reservation};
use meshward_filter_common::problem::{Problem, CONTENT_TYPE};
use meshward_filter_common::request::RequestHead;
use meshward_filter_common::store::StoreError;

const PROBLEM_BASE: &str = "https://meshward.io/problems/";

/// A reply the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn problem(status: u16, kind: &str, title: &str, detail: String) -> Self {
        let problem = Problem {
            type_uri: format!("{PROBLEM_BASE}{kind}"),
            title: title.into(),
            status,
            detail,
        };
        Self {
            status,
            headers: vec![("content-type".into(), CONTENT_TYPE.into())],
            body: problem.to_json().into_bytes(),
        }
    }

    fn replay(stored: StoredResponse) -> Self {
        let mut headers = stored.headers;
        headers.push(("idempotent-replayed".into(), "true".into()));
        Self {
            status: stored.status,
            headers,
            body: stored.body,
        }
    }
}

/// What the filter does with a request, decided from its headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestPlan {
    /// Not for this filter (method, route, optional key absent).
    Skip,
    /// Refused before anything is stored (bad or missing key).
    Reject(Reply),
    /// Takes part: fingerprint the body, then reserve `scope`.
    Check { scope: Digest128 },
}

pub fn plan_request(config: &CompiledConfig, request: &RequestHead) -> RequestPlan {
    let Some(method) = request.method() else {
        return RequestPlan::Skip;
    };
    if !config.methods.iter().any(|m| m == method) {
        return RequestPlan::Skip;
    }
    let (route, requirement) = if config.routes.is_empty() {
        ("", KeyRequirement::Optional)
    } else {
        match config
            .routes
            .iter()
            .find(|route| route.matcher.matches(request))
        {
            Some(route) => (route.name.as_str(), route.key),
            None => return RequestPlan::Skip,
        }
    };
    let key = match parse_key(
        request.header_values(&config.header),
        config.lenient,
        config.max_key_length,
    ) {
        Ok(key) => key,
        Err(KeyError::Missing) if requirement == KeyRequirement::Optional => {
            return RequestPlan::Skip
        }
        Err(err) => {
            let (kind, title) = match err {
                KeyError::Missing => ("idempotency-key-missing", "Idempotency-Key Missing"),
                _ => ("idempotency-key-invalid", "Invalid Idempotency-Key"),
            };
            return RequestPlan::Reject(Reply::problem(
                400,
                kind,
                title,
                err.detail("Idempotency-Key"),
            ));
        }
    };
    let mut identity: Vec<&str> = config
        .identity_headers
        .iter()
        .map(|h| request.header(h).unwrap_or(""))
        .collect();
    if config.identity_client_address {
        identity.push(request.source_ip().unwrap_or(""));
    }
    // The host keeps listeners and services that share a VM (and so a table) apart.
    let host = request.host().unwrap_or("").to_ascii_lowercase();
    identity.push(&host);
    RequestPlan::Check {
        scope: scope(&identity, method, route, &key),
    }
}

/// The 413 for a body over `maxBodyBytes` (`oversizedBody: reject`).
pub fn body_too_large(config: &CompiledConfig) -> Reply {
    Reply::problem(
        413,
        "idempotency-body-too-large",
        "Request Body Too Large",
        format!(
            "requests with an Idempotency-Key may carry at most {} bytes of body",
            config.max_body_bytes
        ),
    )
}

/// What the client gets, given the store's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Execute upstream exactly once under this lease.
    Forward {
        lease: Lease,
        evicted: bool,
    },
    Replay(Reply),
    Conflict(Reply),
    Mismatch(Reply),
    /// The store could not decide; `failureMode` chose.
    Unavailable {
        reply: Option<Reply>,
        error: String,
    },
}

pub fn decide(config: &CompiledConfig, reservation: Result<Reservation, StoreError>) -> Decision {
    match reservation {
        Ok(Reservation::Execute { lease, evicted }) => Decision::Forward { lease, evicted },
        Ok(Reservation::Completed(stored)) => Decision::Replay(Reply::replay(stored)),
        Ok(Reservation::InFlight) => {
            let mut reply = Reply::problem(
                409,
                "idempotency-request-in-progress",
                "Request In Progress",
                "a request with this Idempotency-Key is being processed; retry later".into(),
            );
            reply.headers.push(("retry-after".into(), "1".into()));
            Decision::Conflict(reply)
        }
        Ok(Reservation::CompletedNotStored(reason)) => Decision::Conflict(Reply::problem(
            409,
            "idempotency-response-not-stored",
            "Response Not Replayable",
            format!(
                "a request with this Idempotency-Key was already executed, but its response cannot be replayed ({}); use a new key only if you mean a new request",
                reason.as_str()
            ),
        )),
        Ok(Reservation::Mismatch) => Decision::Mismatch(Reply::problem(
            422,
            "idempotency-key-reused",
            "Idempotency-Key Reused",
            "this Idempotency-Key was already used with a different request (method, path, query or body)".into(),
        )),
        Ok(Reservation::Full) => unavailable(config, "every record of this key's page is in flight".into()),
        Err(err) => unavailable(config, err.to_string()),
    }
}

fn unavailable(config: &CompiledConfig, error: String) -> Decision {
    let reply = (config.failure_mode == FailureMode::Deny).then(|| {
        let mut reply = Reply::problem(
            503,
            "idempotency-store-unavailable",
            "Idempotency Store Unavailable",
            "the request was not executed because its Idempotency-Key could not be recorded; retry later".into(),
        );
        reply.headers.push(("retry-after".into(), "1".into()));
        reply
    });
    Decision::Unavailable { reply, error }
}

/// What to do with the upstream's response once its headers are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePlan {
    /// Capture headers and body, store at the end.
    Capture,
    /// Give the key back: the request may be retried and executed again.
    Release,
    /// Deliver, and record that it was executed but not stored.
    NotStored(NotStored),
}

/// `via_upstream`: the status came from the upstream (Envoy's `response.code_details`
/// is `via_upstream`), not from Envoy (resets, timeouts, no healthy host).
pub fn plan_response(
    config: &CompiledConfig,
    status: u16,
    via_upstream: bool,
    content_type: Option<&str>,
) -> ResponsePlan {
    if !via_upstream || (status >= 500 && !config.store_5xx) || !(200..600).contains(&status) {
        return ResponsePlan::Release;
    }
    if content_type.is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    }) {
        return ResponsePlan::NotStored(NotStored::Streaming);
    }
    ResponsePlan::Capture
}

/// The replayable subset of the upstream's response headers.
pub fn replay_headers(
    config: &CompiledConfig,
    headers: &[(String, String)],
) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| is_replayed(name, &config.replay_headers, config.replay_set_cookie))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::parse;
    use crate::fingerprint::fingerprint;
    use crate::store::{Finish, RecordStore};
    use crate::table::SharedDataRecords;
    use meshward_filter_common::clock::{Clock, FakeClock};
    use meshward_filter_common::store::InMemoryStore;

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut pairs = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
        ];
        pairs.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RequestHead::new(pairs, Some("10.1.2.3:4444".into()))
    }

    fn scope_of(config: &CompiledConfig, request: &RequestHead) -> Digest128 {
        match plan_request(config, request) {
            RequestPlan::Check { scope } => scope,
            other => panic!("expected a check, got {other:?}"),
        }
    }

    /// One Envoy's worth of state: config, store, clock.
    struct World {
        config: CompiledConfig,
        store: InMemoryStore,
        clock: FakeClock,
    }

    impl World {
        fn new(json: &str) -> Self {
            let world = Self {
                config: parse(json.as_bytes()).unwrap(),
                store: InMemoryStore::new(),
                clock: FakeClock::at_seconds(1_700_000_000),
            };
            world.records().prepare().unwrap();
            world
        }

        fn records(&self) -> SharedDataRecords<'_> {
            SharedDataRecords::new(
                &self.store,
                "test",
                self.config.max_entries,
                self.config.max_stored_bytes,
            )
        }

        fn arrive(&self, key: &str, body: &[u8]) -> Decision {
            self.arrive_as(key, body, "alice")
        }

        fn arrive_as(&self, key: &str, body: &[u8], principal: &str) -> Decision {
            let req = request(
                "POST",
                "/orders",
                &[
                    ("idempotency-key", key),
                    ("x-meshward-principal", principal),
                ],
            );
            let scope = scope_of(&self.config, &req);
            let reservation = self.records().reserve(
                &scope,
                &fingerprint("POST", "/orders", body),
                self.clock.now_nanos(),
                self.config.lock_nanos,
            );
            decide(&self.config, reservation)
        }

        fn finish(&self, decision: &Decision, status: u16, body: &[u8]) -> Finish {
            let Decision::Forward { lease, .. } = decision else {
                panic!("not forwarded: {decision:?}")
            };
            let stored = StoredResponse {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_vec(),
            };
            self.records()
                .complete(
                    *lease,
                    Ok(&stored),
                    self.clock.now_nanos(),
                    self.config.ttl_nanos,
                )
                .unwrap()
        }
    }

    #[test]
    fn methods_routes_and_keys_decide_who_takes_part() {
        let config = parse(br#"{"routes":[{"name":"orders","match":{"path":{"prefix":"/orders"}},"key":"required"},{"name":"misc","match":{"path":{"prefix":"/misc"}}}]}"#).unwrap();
        assert_eq!(
            plan_request(
                &config,
                &request("GET", "/orders", &[("idempotency-key", "\"k\"")])
            ),
            RequestPlan::Skip,
            "GET never"
        );
        assert_eq!(
            plan_request(
                &config,
                &request("POST", "/elsewhere", &[("idempotency-key", "\"k\"")])
            ),
            RequestPlan::Skip,
            "no route"
        );
        assert_eq!(
            plan_request(&config, &request("POST", "/misc", &[])),
            RequestPlan::Skip,
            "optional and absent"
        );
        let RequestPlan::Reject(missing) = plan_request(&config, &request("POST", "/orders", &[]))
        else {
            panic!()
        };
        assert_eq!(missing.status, 400);
        let RequestPlan::Reject(invalid) = plan_request(
            &config,
            &request("POST", "/orders", &[("idempotency-key", "unquoted")]),
        ) else {
            panic!()
        };
        assert_eq!(invalid.status, 400);
        assert!(String::from_utf8_lossy(&invalid.body).contains("quoted string"));
        assert!(matches!(
            plan_request(
                &config,
                &request("POST", "/orders", &[("idempotency-key", "\"k\"")])
            ),
            RequestPlan::Check { .. }
        ));
    }

    #[test]
    fn scope_separates_callers_methods_and_routes() {
        let config = parse(br#"{"identity":{"clientAddress":true}}"#).unwrap();
        let base = scope_of(
            &config,
            &request(
                "POST",
                "/a",
                &[
                    ("idempotency-key", "\"k\""),
                    ("x-meshward-principal", "alice"),
                ],
            ),
        );
        assert_ne!(
            base,
            scope_of(
                &config,
                &request(
                    "POST",
                    "/a",
                    &[
                        ("idempotency-key", "\"k\""),
                        ("x-meshward-principal", "bob")
                    ]
                )
            )
        );
        assert_ne!(
            base,
            scope_of(
                &config,
                &request(
                    "PATCH",
                    "/a",
                    &[
                        ("idempotency-key", "\"k\""),
                        ("x-meshward-principal", "alice")
                    ]
                )
            )
        );
        assert_ne!(
            base,
            scope_of(
                &config,
                &request(
                    "POST",
                    "/a",
                    &[
                        ("idempotency-key", "\"j\""),
                        ("x-meshward-principal", "alice")
                    ]
                )
            )
        );
        let mut other_host = request(
            "POST",
            "/a",
            &[
                ("idempotency-key", "\"k\""),
                ("x-meshward-principal", "alice"),
            ],
        );
        other_host = RequestHead::new(
            vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/a".into()),
                (":authority".into(), "billing.internal".into()),
                ("idempotency-key".into(), "\"k\"".into()),
                ("x-meshward-principal".into(), "alice".into()),
            ],
            other_host.source_ip().map(str::to_string),
        );
        assert_ne!(
            base,
            scope_of(&config, &other_host),
            "another host is another scope"
        );
    }

    #[test]
    fn first_request_executes_duplicates_conflict_retries_replay() {
        let world = World::new("{}");
        let first = world.arrive("\"k1\"", b"{}");
        assert!(matches!(first, Decision::Forward { evicted: false, .. }));
        let Decision::Conflict(busy) = world.arrive("\"k1\"", b"{}") else {
            panic!("in flight → 409")
        };
        assert_eq!(busy.status, 409);
        assert_eq!(world.finish(&first, 201, b"{\"id\":7}"), Finish::Stored);
        let Decision::Replay(replay) = world.arrive("\"k1\"", b"{}") else {
            panic!("completed → replay")
        };
        assert_eq!(replay.status, 201);
        assert_eq!(replay.body, b"{\"id\":7}");
        assert!(replay
            .headers
            .contains(&("idempotent-replayed".to_string(), "true".to_string())));
    }

    #[test]
    fn a_different_payload_is_a_mismatch_in_every_state_and_changes_nothing() {
        let world = World::new("{}");
        let first = world.arrive("\"k\"", b"{\"a\":1}");
        assert!(
            matches!(world.arrive("\"k\"", b"{\"a\":2}"), Decision::Mismatch(ref r) if r.status == 422),
            "while in flight"
        );
        world.finish(&first, 200, b"done");
        assert!(
            matches!(world.arrive("\"k\"", b"{\"a\":2}"), Decision::Mismatch(_)),
            "after completion"
        );
        assert!(
            matches!(world.arrive("\"k\"", b"{\"a\":1}"), Decision::Replay(ref r) if r.body == b"done"),
            "record unchanged"
        );
    }

    #[test]
    fn two_principals_with_one_key_execute_independently() {
        let world = World::new("{}");
        assert!(matches!(
            world.arrive_as("\"k\"", b"{}", "alice"),
            Decision::Forward { .. }
        ));
        assert!(matches!(
            world.arrive_as("\"k\"", b"{}", "bob"),
            Decision::Forward { .. }
        ));
    }

    #[test]
    fn released_records_execute_again() {
        let world = World::new("{}");
        let Decision::Forward { lease, .. } = world.arrive("\"k\"", b"{}") else {
            panic!()
        };
        world.records().release(lease).unwrap();
        assert!(matches!(
            world.arrive("\"k\"", b"{}"),
            Decision::Forward { .. }
        ));
    }

    #[test]
    fn not_stored_responses_are_not_replayed_and_say_why() {
        let world = World::new("{}");
        let Decision::Forward { lease, .. } = world.arrive("\"k\"", b"{}") else {
            panic!()
        };
        let finish = world
            .records()
            .complete(
                lease,
                Err(NotStored::TooLarge),
                world.clock.now_nanos(),
                world.config.ttl_nanos,
            )
            .unwrap();
        assert_eq!(finish, Finish::NotStored(NotStored::TooLarge));
        let Decision::Conflict(reply) = world.arrive("\"k\"", b"{}") else {
            panic!()
        };
        assert_eq!(reply.status, 409);
        assert!(String::from_utf8_lossy(&reply.body).contains("maxResponseBytes"));
    }

    #[test]
    fn expired_locks_and_records_allow_a_new_execution() {
        let world = World::new(r#"{"lockTimeout":"5s","ttl":"1m"}"#);
        let crashed = world.arrive("\"k\"", b"{}");
        assert!(matches!(crashed, Decision::Forward { .. }));
        world.clock.advance_seconds(6);
        let second = world.arrive("\"k\"", b"{}");
        assert!(
            matches!(second, Decision::Forward { .. }),
            "the crashed request's lock expired"
        );
        assert_eq!(
            world.finish(&crashed, 200, b"late"),
            Finish::LeaseLost,
            "a late completion cannot attach itself"
        );
        assert_eq!(world.finish(&second, 200, b"second"), Finish::Stored);
        assert!(
            matches!(world.arrive("\"k\"", b"{}"), Decision::Replay(ref r) if r.body == b"second")
        );
        world.clock.advance_seconds(61);
        assert!(
            matches!(world.arrive("\"k\"", b"{}"), Decision::Forward { .. }),
            "TTL expired"
        );
    }

    #[test]
    fn store_limits_fail_as_configured() {
        let small = World::new(r#"{"maxStoredBytes":100}"#);
        let first = small.arrive("\"a\"", b"{}");
        assert_eq!(
            small.finish(&first, 200, &[b'x'; 200]),
            Finish::NotStored(NotStored::StoreFull),
            "over maxStoredBytes"
        );
        // Fill the single page with in-flight records (never evicted): no room.
        let world = World::new(r#"{"maxEntries":8}"#);
        for i in 0..8 {
            assert!(matches!(
                world.arrive(&format!("\"k{i}\""), b"{}"),
                Decision::Forward { .. }
            ));
        }
        let Decision::Unavailable {
            reply: Some(reply), ..
        } = world.arrive("\"z\"", b"{}")
        else {
            panic!("deny by default")
        };
        assert_eq!(reply.status, 503);
        let open = World::new(r#"{"maxEntries":8,"failureMode":"allow"}"#);
        for i in 0..8 {
            open.arrive(&format!("\"k{i}\""), b"{}");
        }
        assert!(matches!(
            open.arrive("\"z\"", b"{}"),
            Decision::Unavailable { reply: None, .. }
        ));
    }

    #[test]
    fn completed_records_are_evicted_least_recently_used_and_bytes_are_accounted() {
        let world = World::new(r#"{"maxEntries":8}"#);
        for i in 0..8 {
            let decision = world.arrive(&format!("\"k{i}\""), b"{}");
            world.finish(&decision, 200, &[b'x'; 10]);
        }
        let records = world.records();
        let stored = records.stored_bytes();
        assert!(stored > 80, "{stored}");
        assert!(matches!(
            world.arrive("\"new\"", b"{}"),
            Decision::Forward { evicted: true, .. }
        ));
        assert!(
            records.stored_bytes() < stored,
            "the evicted body was freed"
        );
        assert!(
            matches!(world.arrive("\"k0\"", b"{}"), Decision::Forward { .. }),
            "k0 was the least recently used"
        );
    }

    #[test]
    fn sweep_clears_expired_records_and_frees_their_bodies() {
        let world = World::new(r#"{"ttl":"10s"}"#);
        let decision = world.arrive("\"k\"", b"{}");
        world.finish(&decision, 200, b"body");
        assert!(world.records().stored_bytes() > 0);
        world.clock.advance_seconds(11);
        let records = world.records();
        assert_eq!(
            records
                .sweep(world.clock.now_nanos(), 0, records.pages())
                .unwrap(),
            1
        );
        assert_eq!(records.stored_bytes(), 0);
    }

    #[test]
    fn memory_is_bounded_under_100k_distinct_keys() {
        let world = World::new(r#"{"maxEntries":1000,"maxStoredBytes":50000}"#);
        for i in 0..100_000 {
            let decision = world.arrive(&format!("\"key-{i}\""), b"{}");
            if matches!(decision, Decision::Forward { .. }) {
                world.finish(&decision, 201, b"{\"ok\":true}");
            }
        }
        assert!(
            world.store.key_count() <= 125 + 1000 + 1,
            "pages + one body per entry + byte counter: {}",
            world.store.key_count()
        );
        assert!(world.records().stored_bytes() <= 50_000);
        assert!(
            world.store.byte_count() < 50_000 + 125 * 600 + 1000 * 80,
            "{}",
            world.store.byte_count()
        );
    }

    #[test]
    fn the_remote_stores_answers_decide_as_the_embedded_stores() {
        use crate::remote::{self, Completed, ReserveResponse};
        use crate::store::Lease;
        use prost::Message;
        let config = parse(b"{}").unwrap();
        let stored = StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"id\":7}".to_vec(),
        };
        let answer = |outcome, completed| {
            remote::reservation(
                &ReserveResponse {
                    outcome,
                    token: vec![3; 16],
                    completed,
                }
                .encode_to_vec(),
            )
        };
        let cases = [
            (
                answer(remote::OUTCOME_IN_FLIGHT, None),
                Reservation::InFlight,
            ),
            (
                answer(remote::OUTCOME_MISMATCH, None),
                Reservation::Mismatch,
            ),
            (
                answer(
                    remote::OUTCOME_COMPLETED,
                    Some(Completed::Response((&stored).into())),
                ),
                Reservation::Completed(stored.clone()),
            ),
            (
                answer(
                    remote::OUTCOME_COMPLETED,
                    Some(Completed::NotStored(i32::from(NotStored::Streaming.code()))),
                ),
                Reservation::CompletedNotStored(NotStored::Streaming),
            ),
        ];
        for (remote, local) in cases {
            assert_eq!(decide(&config, remote), decide(&config, Ok(local)));
        }
        assert_eq!(
            decide(&config, answer(remote::OUTCOME_NEW, None)),
            Decision::Forward {
                lease: Lease::Token([3; 16]),
                evicted: false
            }
        );
        // An unreadable answer is the store failing: failureMode (deny by default, here;
        // allow forwards).
        let Decision::Unavailable {
            reply: Some(reply), ..
        } = decide(&config, answer(0, None))
        else {
            panic!("unavailable")
        };
        assert_eq!(reply.status, 503);
        let open = parse(br#"{"failureMode":"allow"}"#).unwrap();
        assert!(matches!(
            decide(&open, answer(7, None)),
            Decision::Unavailable { reply: None, .. }
        ));
    }

    #[test]
    fn an_oversized_body_is_a_413_problem() {
        let config = parse(br#"{"maxBodyBytes":10}"#).unwrap();
        let reply = body_too_large(&config);
        assert_eq!(reply.status, 413);
        assert_eq!(
            reply.headers,
            [(
                "content-type".to_string(),
                "application/problem+json".to_string()
            )]
        );
        let problem: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(problem["status"], 413);
        assert!(problem["detail"].as_str().unwrap().contains("10 bytes"));
    }

    #[test]
    fn responses_are_classified() {
        let config = parse(b"{}").unwrap();
        assert_eq!(
            plan_response(&config, 201, true, Some("application/json")),
            ResponsePlan::Capture
        );
        assert_eq!(
            plan_response(&config, 404, true, None),
            ResponsePlan::Capture,
            "4xx are stored"
        );
        assert_eq!(
            plan_response(&config, 500, true, None),
            ResponsePlan::Release
        );
        assert_eq!(
            plan_response(&config, 503, false, None),
            ResponsePlan::Release,
            "Envoy-generated"
        );
        assert_eq!(
            plan_response(&config, 200, true, Some("text/event-stream")),
            ResponsePlan::NotStored(NotStored::Streaming)
        );
        let store_5xx = parse(br#"{"store5xx":true}"#).unwrap();
        assert_eq!(
            plan_response(&store_5xx, 500, true, None),
            ResponsePlan::Capture
        );
        assert_eq!(
            plan_response(&store_5xx, 504, false, None),
            ResponsePlan::Release,
            "never an Envoy 5xx"
        );
        let headers = vec![
            ("content-type".to_string(), "a".to_string()),
            ("set-cookie".to_string(), "s".to_string()),
            ("date".to_string(), "d".to_string()),
        ];
        assert_eq!(
            replay_headers(&config, &headers),
            [("content-type".to_string(), "a".to_string())]
        );
    }
}
