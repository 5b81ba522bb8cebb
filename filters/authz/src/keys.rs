//! Freshness of a remote JWKS, per provider and per VM: when to fetch on tick (first
//! load, refresh before the cache duration ends, retry after a failure), whether a
//! request that names an unknown `kid` may trigger a re-fetch (at most once per
//! interval), and the last good key set, which is kept through failed fetches.
//! Times are host nanoseconds. The adapter performs the fetches.

use std::rc::Rc;

use crate::config::RemoteJwks;
use crate::jwks::KeySet;

const STALE_GRACE_NANOS: u64 = 1_000_000_000;

/// What a request that needs keys should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedKeys {
    /// A fetch is under way: wait for it (bounded by the fetch timeout).
    Wait,
    /// Start a fetch and wait for it.
    Fetch,
    /// Do not fetch now: answer with what is known.
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct RemoteKeys {
    policy: RemoteJwks,
    keys: Option<Rc<KeySet>>,
    fetched_at: u64,
    /// When the fetch under way started. A fetch whose callback never comes (its
    /// requesting stream went away and Envoy cancelled it) stops counting after
    /// the timeout plus a second, so one lost callback cannot stall a provider.
    in_flight_since: Option<u64>,
    last_attempt: Option<u64>,
    last_attempt_failed: bool,
    last_unknown_kid_fetch: Option<u64>,
}

impl RemoteKeys {
    pub fn new(policy: RemoteJwks) -> Self {
        Self {
            policy,
            keys: None,
            fetched_at: 0,
            in_flight_since: None,
            last_attempt: None,
            last_attempt_failed: false,
            last_unknown_kid_fetch: None,
        }
    }

    pub fn policy(&self) -> &RemoteJwks {
        &self.policy
    }

    /// The last good key set, however old (a failed refresh keeps it).
    pub fn keys(&self) -> Option<Rc<KeySet>> {
        self.keys.clone()
    }

    pub fn in_flight(&self, now: u64) -> bool {
        self.in_flight_since.is_some_and(|since| {
            now < since
                .saturating_add(self.policy.timeout_nanos)
                .saturating_add(STALE_GRACE_NANOS)
        })
    }

    fn retry_allowed(&self, now: u64) -> bool {
        match self.last_attempt {
            Some(at) if self.last_attempt_failed => {
                now >= at.saturating_add(self.policy.retry_nanos)
            }
            _ => true,
        }
    }

    /// Whether the tick should start a fetch: nothing loaded yet, or the set is in the
    /// last tenth of its cache duration (refreshing ahead so requests never wait), with
    /// failed attempts retried every `retryInterval`.
    pub fn fetch_due_on_tick(&self, now: u64) -> bool {
        if self.in_flight(now) || !self.retry_allowed(now) {
            return false;
        }
        match self.keys {
            None => true,
            Some(_) => {
                let refresh_at = self
                    .fetched_at
                    .saturating_add(self.policy.cache_nanos - self.policy.cache_nanos / 10);
                now >= refresh_at
            }
        }
    }

    /// A request has a token for this provider but no keys are loaded yet.
    pub fn on_missing_keys(&self, now: u64) -> NeedKeys {
        if self.in_flight(now) {
            NeedKeys::Wait
        } else if self.retry_allowed(now) {
            NeedKeys::Fetch
        } else {
            NeedKeys::GiveUp
        }
    }

    /// A request's token names a `kid` the loaded set lacks (a rotation, or garbage):
    /// re-fetch at most once per `unknownKidRefetchInterval`.
    pub fn on_unknown_kid(&self, now: u64) -> NeedKeys {
        if self.in_flight(now) {
            return NeedKeys::Wait;
        }
        let recently = self
            .last_unknown_kid_fetch
            .is_some_and(|at| now < at.saturating_add(self.policy.unknown_kid_nanos));
        if recently || !self.retry_allowed(now) {
            NeedKeys::GiveUp
        } else {
            NeedKeys::Fetch
        }
    }

    pub fn begin_fetch(&mut self, now: u64, for_unknown_kid: bool) {
        self.in_flight_since = Some(now);
        self.last_attempt = Some(now);
        if for_unknown_kid {
            self.last_unknown_kid_fetch = Some(now);
        }
    }

    /// Records a fetch result. On failure the previous set stays in force. `Ok(true)`
    /// when the new set may have dropped a key the previous one had: tokens verified
    /// with it must not be served from the cache any longer.
    pub fn complete_fetch(
        &mut self,
        now: u64,
        result: Result<KeySet, String>,
    ) -> Result<bool, String> {
        self.in_flight_since = None;
        match result {
            Ok(keys) => {
                let revoked = self
                    .keys
                    .as_ref()
                    .is_some_and(|old| keys_dropped(old, &keys));
                self.keys = Some(Rc::new(keys));
                self.fetched_at = now;
                self.last_attempt_failed = false;
                Ok(revoked)
            }
            Err(err) => {
                self.last_attempt_failed = true;
                Err(err)
            }
        }
    }

    /// The dispatch itself failed (no such cluster yet…): nothing is in flight. Before
    /// the first load succeeds, try again a second later rather than after the full
    /// `retryInterval` (a cluster from CDS may just not be warm yet).
    pub fn abort_fetch(&mut self, now: u64) {
        self.in_flight_since = None;
        self.last_attempt_failed = true;
        if self.keys.is_none() {
            let soon = now
                .saturating_add(STALE_GRACE_NANOS.min(self.policy.retry_nanos))
                .saturating_sub(self.policy.retry_nanos);
            self.last_attempt = Some(soon);
        }
    }
}

/// Whether `new` lacks a key of `old`. Keys without a `kid` cannot be told apart, so a
/// set that had any counts as changed.
fn keys_dropped(old: &KeySet, new: &KeySet) -> bool {
    old.keys.iter().any(|key| match &key.kid {
        Some(kid) => new.by_kid(kid).is_none(),
        None => true,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn remote() -> RemoteKeys {
        RemoteKeys::new(RemoteJwks {
            cluster: "jwks".into(),
            authority: "issuer".into(),
            path: "/jwks".into(),
            timeout_nanos: 5 * S,
            cache_nanos: 100 * S,
            retry_nanos: 10 * S,
            unknown_kid_nanos: 30 * S,
        })
    }

    #[test]
    fn first_load_then_refresh_in_the_last_tenth_of_the_cache_duration() {
        let mut keys = remote();
        assert!(keys.fetch_due_on_tick(0));
        keys.begin_fetch(0, false);
        assert!(!keys.fetch_due_on_tick(1), "one fetch at a time");
        assert_eq!(keys.on_missing_keys(1), NeedKeys::Wait);
        keys.complete_fetch(S, Ok(KeySet::default())).unwrap();
        assert!(keys.keys().is_some());
        assert!(!keys.fetch_due_on_tick(90 * S));
        assert!(keys.fetch_due_on_tick(91 * S));
    }

    #[test]
    fn a_fetch_whose_callback_never_comes_stops_blocking_after_timeout_and_a_second() {
        let mut keys = remote();
        keys.begin_fetch(0, false);
        assert_eq!(keys.on_missing_keys(5 * S), NeedKeys::Wait);
        assert!(keys.in_flight(6 * S - 1));
        assert!(!keys.in_flight(6 * S));
        assert_eq!(keys.on_missing_keys(6 * S), NeedKeys::Fetch);
    }

    #[test]
    fn failures_keep_the_last_good_set_and_retry_on_the_interval() {
        let mut keys = remote();
        keys.begin_fetch(0, false);
        keys.complete_fetch(0, Ok(KeySet::default())).unwrap();
        keys.begin_fetch(95 * S, false);
        assert!(keys.complete_fetch(95 * S, Err("503".into())).is_err());
        assert!(keys.keys().is_some(), "last good set kept");
        assert!(!keys.fetch_due_on_tick(100 * S));
        assert!(keys.fetch_due_on_tick(105 * S));
    }

    #[test]
    fn a_failed_first_load_gives_up_until_the_retry_interval() {
        let mut keys = remote();
        keys.begin_fetch(0, false);
        keys.complete_fetch(0, Err("down".into())).unwrap_err();
        assert_eq!(keys.on_missing_keys(5 * S), NeedKeys::GiveUp);
        assert_eq!(keys.on_missing_keys(10 * S), NeedKeys::Fetch);
        keys.begin_fetch(10 * S, false);
        keys.abort_fetch(10 * S);
        assert_eq!(keys.on_missing_keys(10 * S + S / 2), NeedKeys::GiveUp);
        assert_eq!(
            keys.on_missing_keys(11 * S),
            NeedKeys::Fetch,
            "first load: retried after a second"
        );
        keys.complete_fetch(12 * S, Ok(KeySet::default())).unwrap();
        keys.begin_fetch(100 * S, false);
        keys.abort_fetch(100 * S);
        assert!(
            !keys.fetch_due_on_tick(101 * S),
            "loaded: the full retryInterval"
        );
        assert!(keys.fetch_due_on_tick(110 * S));
    }

    #[test]
    fn a_refresh_that_drops_a_key_reports_it() {
        let set = |kids: &[&str]| {
            let keys = kids
                .iter()
                .map(|kid| serde_json::json!({"kty": "oct", "kid": kid, "k": "A".repeat(43)}))
                .collect::<Vec<_>>();
            crate::jwks::parse(
                serde_json::json!({"keys": keys}).to_string().as_bytes(),
                crate::jwks::Origin::Inline,
            )
            .unwrap()
            .set
        };
        let mut keys = remote();
        assert_eq!(keys.complete_fetch(0, Ok(set(&["a", "b"]))), Ok(false));
        assert_eq!(keys.complete_fetch(1, Ok(set(&["a", "b", "c"]))), Ok(false));
        assert_eq!(keys.complete_fetch(2, Ok(set(&["b", "c"]))), Ok(true));
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_interval() {
        let mut keys = remote();
        keys.begin_fetch(0, false);
        keys.complete_fetch(0, Ok(KeySet::default())).unwrap();
        assert_eq!(keys.on_unknown_kid(S), NeedKeys::Fetch);
        keys.begin_fetch(S, true);
        assert_eq!(keys.on_unknown_kid(S), NeedKeys::Wait);
        keys.complete_fetch(2 * S, Ok(KeySet::default())).unwrap();
        assert_eq!(keys.on_unknown_kid(3 * S), NeedKeys::GiveUp);
        assert_eq!(keys.on_unknown_kid(31 * S), NeedKeys::Fetch);
    }
}
