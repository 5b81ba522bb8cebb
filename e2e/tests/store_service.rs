//! The control plane's idempotency store (docs/adr/0009) against a real Valkey, called
//! over gRPC as the filter calls it: reserve → in flight → completed (byte-for-byte
//! replay) and mismatch in every state, "completed, not stored", release, expired locks
//! (a late owner cannot overwrite the new owner's record), exactly one NEW among
//! concurrent reservations from two connections, the size bounds, record TTLs, Valkey
//! stopped (UNAVAILABLE within the timeout) and restarted (reconnects by itself), and a
//! one-node Redis Cluster.

use std::time::{Duration, Instant};

use meshward_control_plane::server::{
    start_store, StoreOptions, StoreRunning, StoreServiceOptions,
};
use meshward_e2e::valkey::Valkey;
use meshward_proto::idempotency::v1::complete_request::Outcome;
use meshward_proto::idempotency::v1::idempotency_store_client::IdempotencyStoreClient;
use meshward_proto::idempotency::v1::reserve_response::{Completed, Outcome as Reserved};
use meshward_proto::idempotency::v1::{
    complete_response, CompleteRequest, Header, NotStoredReason, ReleaseRequest, ReserveRequest,
    ReserveResponse, StoredResponse,
};
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_millis(50);
const MAX_BODY: usize = 1000;

struct Fixture {
    valkey: Valkey,
    running: Option<StoreRunning>,
    client: IdempotencyStoreClient<Channel>,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_on(Valkey::start().unwrap()).await
    }

    async fn start_on(valkey: Valkey) -> Fixture {
        let running = start_store(StoreServiceOptions {
            redis_url: valkey.url(),
            redis_timeout: TIMEOUT,
            store: StoreOptions {
                addr: "127.0.0.1:0".parse().unwrap(),
                max_response_bytes: MAX_BODY,
            },
            http_addr: None,
        })
        .await
        .unwrap();
        let client = Self::client_for(&running).await;
        Fixture {
            valkey,
            running: Some(running),
            client,
        }
    }

    async fn client_for(running: &StoreRunning) -> IdempotencyStoreClient<Channel> {
        IdempotencyStoreClient::connect(format!("http://{}", running.store_addr))
            .await
            .unwrap()
    }

    fn metrics(&self) -> String {
        self.running.as_ref().unwrap().world.metrics.encode()
    }

    async fn reserve(&self, scope: u8, fingerprint: u8, lock_ms: u64) -> ReserveResponse {
        self.try_reserve(scope, fingerprint, lock_ms).await.unwrap()
    }

    async fn try_reserve(
        &self,
        scope: u8,
        fingerprint: u8,
        lock_ms: u64,
    ) -> Result<ReserveResponse, tonic::Status> {
        self.client
            .clone()
            .reserve(ReserveRequest {
                scope_key: vec![scope; 16],
                fingerprint: vec![fingerprint; 16],
                lock_ttl_ms: lock_ms,
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn complete(
        &self,
        scope: u8,
        token: &[u8],
        outcome: Outcome,
        ttl_ms: u64,
    ) -> Result<complete_response::Result, tonic::Status> {
        self.client
            .clone()
            .complete(CompleteRequest {
                scope_key: vec![scope; 16],
                token: token.to_vec(),
                outcome: Some(outcome),
                ttl_ms,
            })
            .await
            .map(|r| complete_response::Result::try_from(r.into_inner().result).unwrap())
    }

    async fn release(&self, scope: u8, token: &[u8]) -> bool {
        self.client
            .clone()
            .release(ReleaseRequest {
                scope_key: vec![scope; 16],
                token: token.to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .released
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Header {
                name: "location".into(),
                value: "/orders/42".into(),
            },
        ],
        // Bytes that are not UTF-8, and the record's own separator.
        body: b"{\"id\":42}:\x00\xff\xfe".to_vec(),
    }
}

fn outcome(reply: &ReserveResponse) -> Reserved {
    Reserved::try_from(reply.outcome).unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    meshward_e2e::stats::prometheus_value(text, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_in_flight_complete_replay_and_mismatch_in_every_state() {
    let store = Fixture::start().await;
    let first = store.reserve(1, 7, 30_000).await;
    assert_eq!(outcome(&first), Reserved::New);
    assert_eq!(first.token.len(), 16);
    assert_eq!(
        outcome(&store.reserve(1, 7, 30_000).await),
        Reserved::InFlight
    );
    assert_eq!(
        outcome(&store.reserve(1, 8, 30_000).await),
        Reserved::Mismatch,
        "another fingerprint while in flight"
    );
    assert_eq!(
        store
            .complete(1, &first.token, Outcome::Response(response()), 60_000)
            .await
            .unwrap(),
        complete_response::Result::Stored
    );
    for _ in 0..3 {
        let replay = store.reserve(1, 7, 30_000).await;
        assert_eq!(outcome(&replay), Reserved::Completed);
        assert_eq!(
            replay.completed,
            Some(Completed::Response(response())),
            "byte for byte"
        );
        assert!(replay.token.is_empty());
    }
    assert_eq!(
        outcome(&store.reserve(1, 8, 30_000).await),
        Reserved::Mismatch,
        "another fingerprint once completed"
    );
    assert_eq!(
        store
            .complete(1, &first.token, Outcome::Response(response()), 60_000)
            .await
            .unwrap(),
        complete_response::Result::LeaseLost,
        "a record completes once"
    );
    // The record lives for its TTL, under a hash-tagged key.
    let key = format!("mw:idem:{{{}}}", "01".repeat(16));
    let pttl = store
        .valkey
        .command(&["PTTL", &key])
        .unwrap()
        .integer()
        .unwrap();
    assert!((55_000..=60_000).contains(&pttl), "PTTL {pttl}");
    let metrics = store.metrics();
    assert_eq!(
        metric(
            &metrics,
            "meshward_control_plane_store_reservations_total{outcome=\"new\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "meshward_control_plane_store_reservations_total{outcome=\"completed\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "meshward_control_plane_store_reservations_total{outcome=\"mismatch\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "meshward_control_plane_store_completions_total{outcome=\"stored\"}"
        ),
        1.0
    );
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_not_stored_is_remembered_with_its_reason() {
    let store = Fixture::start().await;
    let first = store.reserve(2, 1, 30_000).await;
    assert_eq!(
        store
            .complete(
                2,
                &first.token,
                Outcome::NotStored(NotStoredReason::TooLarge as i32),
                60_000
            )
            .await
            .unwrap(),
        complete_response::Result::NotStored
    );
    let retry = store.reserve(2, 1, 30_000).await;
    assert_eq!(outcome(&retry), Reserved::Completed);
    assert_eq!(
        retry.completed,
        Some(Completed::NotStored(NotStoredReason::TooLarge as i32))
    );
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_gives_the_key_back_to_its_owner_only() {
    let store = Fixture::start().await;
    let first = store.reserve(3, 1, 30_000).await;
    assert!(!store.release(3, &[0; 16]).await, "not the owner's token");
    assert_eq!(
        outcome(&store.reserve(3, 1, 30_000).await),
        Reserved::InFlight
    );
    assert!(store.release(3, &first.token).await);
    assert!(!store.release(3, &first.token).await, "already released");
    let second = store.reserve(3, 1, 30_000).await;
    assert_eq!(outcome(&second), Reserved::New);
    assert_ne!(second.token, first.token);
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_lets_a_new_owner_in_and_the_late_one_changes_nothing() {
    let store = Fixture::start().await;
    let crashed = store.reserve(4, 1, 150).await;
    assert_eq!(outcome(&crashed), Reserved::New);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = store.reserve(4, 1, 30_000).await;
    assert_eq!(outcome(&second), Reserved::New, "the lock expired");
    assert_eq!(
        store
            .complete(4, &crashed.token, Outcome::Response(response()), 60_000)
            .await
            .unwrap(),
        complete_response::Result::LeaseLost
    );
    assert!(!store.release(4, &crashed.token).await);
    assert_eq!(
        outcome(&store.reserve(4, 1, 30_000).await),
        Reserved::InFlight,
        "the new owner's record is untouched"
    );
    let mut replayed = response();
    replayed.body = b"second".to_vec();
    store
        .complete(
            4,
            &second.token,
            Outcome::Response(replayed.clone()),
            60_000,
        )
        .await
        .unwrap();
    assert_eq!(
        store.reserve(4, 1, 30_000).await.completed,
        Some(Completed::Response(replayed))
    );
    assert!(store
        .metrics()
        .contains("meshward_control_plane_store_completions_total{outcome=\"lease_lost\"} 2"));
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_concurrent_reservations_from_two_connections_is_new() {
    let store = Fixture::start().await;
    let other = Fixture::client_for(store.running.as_ref().unwrap()).await;
    let calls = (0..60).map(|i| {
        let mut client = if i % 2 == 0 {
            store.client.clone()
        } else {
            other.clone()
        };
        async move {
            client
                .reserve(ReserveRequest {
                    scope_key: vec![5; 16],
                    fingerprint: vec![1; 16],
                    lock_ttl_ms: 30_000,
                })
                .await
                .unwrap()
                .into_inner()
        }
    });
    let replies = futures_join_all(calls).await;
    let new = replies
        .iter()
        .filter(|r| outcome(r) == Reserved::New)
        .count();
    let in_flight = replies
        .iter()
        .filter(|r| outcome(r) == Reserved::InFlight)
        .count();
    assert_eq!((new, in_flight), (1, 59));
    store.stop().await;
}

/// `futures::future::join_all` without the dependency: spawn each, await in order.
async fn futures_join_all<F>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_out_of_bounds_are_invalid_arguments() {
    let store = Fixture::start().await;
    let invalid = |result: Result<_, tonic::Status>| {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    };
    invalid(store.try_reserve(6, 1, 0).await.map(|_| ()));
    invalid(store.try_reserve(6, 1, 25 * 3600 * 1000).await.map(|_| ()));
    invalid(
        store
            .client
            .clone()
            .reserve(ReserveRequest {
                scope_key: vec![],
                fingerprint: vec![1],
                lock_ttl_ms: 10,
            })
            .await
            .map(|_| ()),
    );
    let first = store.reserve(6, 1, 30_000).await;
    let mut big = response();
    big.body = vec![b'x'; MAX_BODY + 1];
    invalid(
        store
            .complete(6, &first.token, Outcome::Response(big), 60_000)
            .await
            .map(|_| ()),
    );
    let mut bad_status = response();
    bad_status.status = 42;
    invalid(
        store
            .complete(6, &first.token, Outcome::Response(bad_status), 60_000)
            .await
            .map(|_| ()),
    );
    invalid(
        store
            .complete(6, &[1; 8], Outcome::Response(response()), 60_000)
            .await
            .map(|_| ()),
    );
    invalid(
        store
            .complete(6, &first.token, Outcome::NotStored(0), 60_000)
            .await
            .map(|_| ()),
    );
    invalid(
        store
            .complete(6, &first.token, Outcome::Response(response()), 0)
            .await
            .map(|_| ()),
    );
    // Nothing above touched the record.
    assert_eq!(
        outcome(&store.reserve(6, 1, 30_000).await),
        Reserved::InFlight
    );
    let mut fits = response();
    fits.body = vec![b'x'; MAX_BODY];
    assert_eq!(
        store
            .complete(6, &first.token, Outcome::Response(fits), 60_000)
            .await
            .unwrap(),
        complete_response::Result::Stored
    );
    assert!(store
        .metrics()
        .contains("meshward_control_plane_store_reservations_total{outcome=\"invalid\"} 3"));
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valkey_down_is_unavailable_within_the_timeout_and_a_restart_heals() {
    let mut store = Fixture::start().await;
    let before = store.reserve(7, 1, 30_000).await;
    assert_eq!(outcome(&before), Reserved::New);
    store.valkey.stop().unwrap();
    for scope in 8..13 {
        let start = Instant::now();
        let status = store.try_reserve(scope, 1, 30_000).await.unwrap_err();
        let took = start.elapsed();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            took < TIMEOUT + Duration::from_millis(100),
            "answered after {took:?}"
        );
    }
    let metrics = store.metrics();
    assert_eq!(
        metric(
            &metrics,
            "meshward_control_plane_store_reservations_total{outcome=\"error\"}"
        ),
        5.0
    );
    assert!(
        metric(
            &metrics,
            "meshward_control_plane_redis_errors_total{op=\"store_reserve\"}"
        ) >= 5.0,
        "{metrics}"
    );
    store.valkey.restart().unwrap();
    // Redis reconnects in the background; allow it a moment, nothing else.
    let deadline = Instant::now() + Duration::from_secs(10);
    let healed = loop {
        match store.try_reserve(8, 1, 30_000).await {
            Ok(reply) => break reply,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("not healed: {status:?}"),
        }
    };
    assert_eq!(
        outcome(&healed),
        Reserved::New,
        "an empty Valkey after the restart"
    );
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_redis_cluster_serves_the_same() {
    let store = Fixture::start_on(Valkey::start_cluster().unwrap()).await;
    let first = store.reserve(9, 1, 30_000).await;
    assert_eq!(outcome(&first), Reserved::New);
    assert_eq!(
        outcome(&store.reserve(9, 1, 30_000).await),
        Reserved::InFlight
    );
    store
        .complete(9, &first.token, Outcome::Response(response()), 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.reserve(9, 1, 30_000).await.completed,
        Some(Completed::Response(response()))
    );
    let other = store.reserve(10, 1, 30_000).await;
    assert!(store.release(10, &other.token).await);
    store.stop().await;
}
