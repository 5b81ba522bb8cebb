//! Remote wasm modules and Envoy's code cache (docs/adr/0006).
//!
//! With remote modules the resources set `nack_on_code_cache_miss`: Envoy NACKs a
//! configuration whose module (keyed by its sha256) is not in its code cache yet and
//! downloads it in the background. (Without it Envoy downloads only while a listener
//! warms; a configuration arriving later is ACKed and its plugin never loads.) Such a
//! NACK is no rejection: the stream keeps the version out of its rejected set and sends
//! it again after [`FIRST_DELAY`], doubling up to [`MAX_DELAY`], until the proxy ACKs;
//! a version still NACKed after [`MAX_ATTEMPTS`] re-sends is rejected after all. A
//! re-send is the same version and configuration in slightly different bytes
//! ([`super::resources::resend`]): Envoy would take the very same bytes for unchanged,
//! ACK them and never apply them.
//!
//! Envoy 1.40 words a code-cache miss exactly like a configuration the plugin refused:
//! `Unable to create Wasm plugin meshward_ratelimit`, both (captured with real Envoy;
//! its `Failed to load Wasm code (fetching) from …` is a trace log only, older Envoys
//! threw it). The message says which plugin could not be created, not why. What says
//! why is whether the proxy has the module: once it ACKed a resource running a module,
//! that module is in its cache (Envoy drops an entry 24 h after its last use at the
//! earliest), so a NACK naming that plugin is the configuration's fault. A stream knows
//! only what it saw ACKed — a reconnected stream or a restarted control plane starts from
//! nothing — so a refused configuration whose module the stream never saw loaded shows
//! as rejected only once the re-sends run out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::resources::Built;

/// The first re-send after a code-cache miss: also how long a listener that stopped
/// warming on that NACK serves its `default_config` before the first retry, so short —
/// but not shorter: a re-send while the download still runs makes Envoy (1.40) start
/// another download (its code cache falls through on "in progress").
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between re-sends.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Re-sends per version before a NACK counts as a rejection (≈ 81 s in all: room for
/// one timed-out download — 30 s, the resource's `http_uri.timeout` — plus Envoy's 10 s
/// negative caching of a failed one, and another download).
pub const MAX_ATTEMPTS: u32 = 20;
/// How long an ACKed module is taken to be in the proxy's cache (Envoy: 24 h after its
/// last use, and an ACK is a use).
const LOADED_TTL: Duration = Duration::from_secs(23 * 3600);
/// Versions waiting for a re-send, per stream and type (older ones are forgotten).
const MAX_TRACKED: usize = 64;

/// What a NACK message says about a wasm plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Explicitly a module still being fetched (older Envoys threw this text).
    Fetching,
    /// The plugin (named, or `""`) could not be created: a code-cache miss or a
    /// configuration the plugin refused — the text does not tell.
    PluginNotCreated(String),
}

/// Reads Envoy's NACK message (case-insensitively, wrapped in any prefix; the innermost
/// plugin name when Envoy nests the text).
pub fn failure(message: &str) -> Option<Failure> {
    let lower = message.to_ascii_lowercase();
    const FETCHING: [&str; 2] = [
        "failed to load wasm code (fetching)",
        "failed to load (in progress)",
    ];
    if FETCHING.iter().any(|text| lower.contains(text)) {
        return Some(Failure::Fetching);
    }
    const NOT_CREATED: [&str; 2] = [
        "unable to create wasm plugin",
        "unable to create wasm http filter",
    ];
    let (at, text) = NOT_CREATED
        .iter()
        .filter_map(|text| lower.rfind(text).map(|at| (at, text)))
        .max_by_key(|(at, _)| *at)?;
    // ASCII lower-casing keeps byte offsets.
    let name: String = message[at + text.len()..]
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    Some(Failure::PluginNotCreated(name))
}

/// What to do about a NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The proxy is fetching the module: send the same version again after `delay`
    /// (`attempt` of [`MAX_ATTEMPTS`]).
    Fetching { attempt: u32, delay: Duration },
    /// Rejected: never sent again on this stream. `gave_up`: after that many re-sends
    /// for a missing module.
    Rejected { gave_up: Option<u32> },
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    attempt: u32,
    not_before: Instant,
    /// Not re-sent yet since the last NACK.
    due: bool,
}

/// Per stream and type: the modules the proxy has, and the versions waiting to be sent
/// again.
#[derive(Debug, Default)]
pub struct CodeCache {
    /// sha256 → when the proxy last ACKed a resource running it.
    loaded: HashMap<String, Instant>,
    /// (name, version) → its re-sends.
    retries: HashMap<(String, String), Retry>,
}

fn key(built: &Built) -> (String, String) {
    (built.name.clone(), built.version.clone())
}

/// The message recorded for a rejection; says so when it came after re-sends for a
/// module that never arrived.
pub fn surfaced(message: &str, gave_up: Option<u32>) -> String {
    match gave_up {
        Some(attempts) => format!(
            "{message} (still rejected after {attempts} re-sends: the module was not fetched, or the configuration is refused)"
        ),
        None => message.to_owned(),
    }
}

/// The wait before re-send `attempt` (1-based).
pub fn delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

impl CodeCache {
    /// The proxy applied these: their modules are in its cache.
    pub fn on_ack(&mut self, acked: &[Built], now: Instant) {
        for built in acked {
            self.retries.remove(&key(built));
            if let Some(code) = &built.code {
                self.loaded.insert(code.sha256.clone(), now);
            }
        }
    }

    /// The proxy rejected `culprit` (the one changed resource of the response, or the one
    /// whose plugin the message names) with `message`.
    pub fn on_nack(&mut self, message: &str, culprit: &Built, now: Instant) -> Verdict {
        let key = key(culprit);
        let fetching = culprit
            .code
            .as_ref()
            .is_some_and(|code| match failure(message) {
                Some(Failure::Fetching) => true,
                Some(Failure::PluginNotCreated(name)) => {
                    (name.is_empty() || name == code.plugin) && !self.has(&code.sha256, now)
                }
                None => false,
            });
        if !fetching {
            self.retries.remove(&key);
            return Verdict::Rejected { gave_up: None };
        }
        let attempt = self.retries.get(&key).map_or(0, |r| r.attempt) + 1;
        if attempt > MAX_ATTEMPTS {
            self.retries.remove(&key);
            return Verdict::Rejected {
                gave_up: Some(MAX_ATTEMPTS),
            };
        }
        if self.retries.len() >= MAX_TRACKED && !self.retries.contains_key(&key) {
            let oldest = self
                .retries
                .iter()
                .min_by_key(|(_, r)| r.not_before)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.retries.remove(&oldest);
            }
        }
        let delay = delay(attempt);
        self.retries.insert(
            key,
            Retry {
                attempt,
                not_before: now + delay,
                due: true,
            },
        );
        Verdict::Fetching { attempt, delay }
    }

    /// Whether the proxy is known to have the module with this sha256.
    pub fn has(&self, sha256: &str, now: Instant) -> bool {
        self.loaded
            .get(sha256)
            .is_some_and(|at| now.saturating_duration_since(*at) < LOADED_TTL)
    }

    /// Whether `built` waits for its re-send time (not to be sent yet).
    pub fn held(&self, built: &Built, now: Instant) -> bool {
        self.retries
            .get(&key(built))
            .is_some_and(|r| r.due && r.not_before > now)
    }

    /// The re-send attempt of `built` (its version was NACKed for a code-cache miss and
    /// not ACKed since): it must go out as [`super::resources::resend`].
    pub fn attempt(&self, built: &Built) -> Option<u32> {
        self.retries.get(&key(built)).map(|r| r.attempt)
    }

    /// `built` goes out: `true` when that is a re-send after a code-cache miss (once per
    /// NACK).
    pub fn resending(&mut self, built: &Built) -> bool {
        match self.retries.get_mut(&key(built)) {
            Some(retry) if retry.due => {
                retry.due = false;
                true
            }
            _ => false,
        }
    }

    /// When the next held version becomes due.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.retries
            .values()
            .filter(|r| r.due && r.not_before > now)
            .map(|r| r.not_before)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resources::RemoteCode;
    use envoy_types::pb::google::protobuf::Any;

    fn built(version: &str, sha256: Option<&str>) -> Built {
        Built {
            name: "meshward.ratelimit".into(),
            version: version.into(),
            any: Any::default(),
            code: sha256.map(|sha256| RemoteCode {
                plugin: "meshward_ratelimit".into(),
                sha256: sha256.into(),
            }),
        }
    }

    #[test]
    fn envoy_messages_are_read() {
        let named = |n: &str| Some(Failure::PluginNotCreated(n.into()));
        // Envoy 1.40, cache miss and refused configuration alike.
        assert_eq!(
            failure("Unable to create Wasm plugin meshward_ratelimit"),
            named("meshward_ratelimit")
        );
        // Nested, prefixed, other cases and older forms.
        assert_eq!(
            failure("Unable to create Wasm plugin: Unable to create Wasm plugin meshward_authz"),
            named("meshward_authz")
        );
        assert_eq!(
            failure("meshward.ratelimit: unable to create WASM plugin meshward_ratelimit\n"),
            named("meshward_ratelimit")
        );
        assert_eq!(failure("Unable to create Wasm HTTP filter "), named(""));
        assert_eq!(
            failure("Failed to load WASM code (fetching) from http://cp/modules/a.wasm"),
            Some(Failure::Fetching)
        );
        assert_eq!(
            failure("createWasm: failed to load (in progress) from http://x"),
            Some(Failure::Fetching)
        );
        assert_eq!(failure("Proto constraint validation failed"), None);
        assert_eq!(failure(""), None);
    }

    #[test]
    fn a_miss_is_retried_with_backoff_until_the_attempts_run_out() {
        let mut cache = CodeCache::default();
        let now = Instant::now();
        let v1 = built("v1", Some("aa"));
        let message = "Unable to create Wasm plugin meshward_ratelimit";
        let mut delays = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match cache.on_nack(message, &v1, now) {
                Verdict::Fetching { attempt: a, delay } => {
                    assert_eq!(a, attempt);
                    delays.push(delay.as_millis());
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
            assert!(cache.held(&v1, now));
            assert_eq!(cache.next_wake(now), Some(now + delay(attempt)));
            assert!(!cache.held(&v1, now + delay(attempt)));
            assert!(cache.resending(&v1));
            assert!(!cache.resending(&v1), "counted once per NACK");
            assert_eq!(cache.next_wake(now), None);
        }
        assert_eq!(&delays[..7], &[200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(
            cache.on_nack(message, &v1, now),
            Verdict::Rejected {
                gave_up: Some(MAX_ATTEMPTS)
            }
        );
    }

    #[test]
    fn a_module_the_proxy_acked_is_cached_so_its_nack_is_a_rejection() {
        let mut cache = CodeCache::default();
        let now = Instant::now();
        let message = "Unable to create Wasm plugin meshward_ratelimit";
        cache.on_ack(&[built("v1", Some("aa"))], now);
        let rejected = Verdict::Rejected { gave_up: None };
        assert_eq!(
            cache.on_nack(message, &built("v2", Some("aa")), now),
            rejected
        );
        // Another build of the module: a miss.
        assert!(matches!(
            cache.on_nack(message, &built("v3", Some("bb")), now),
            Verdict::Fetching { attempt: 1, .. }
        ));
        // Long unused: Envoy may have dropped it.
        assert!(matches!(
            cache.on_nack(message, &built("v2", Some("aa")), now + LOADED_TTL),
            Verdict::Fetching { attempt: 1, .. }
        ));
        // Local modules, other plugins, other messages: rejections.
        assert_eq!(cache.on_nack(message, &built("v4", None), now), rejected);
        assert_eq!(
            cache.on_nack(
                "Unable to create Wasm plugin meshward_authz",
                &built("v5", Some("cc")),
                now
            ),
            rejected
        );
        assert_eq!(
            cache.on_nack("invalid filter config", &built("v5", Some("cc")), now),
            rejected
        );
        // An ACK ends the retries of that version.
        assert!(cache.held(&built("v3", Some("bb")), now));
        cache.on_ack(&[built("v3", Some("bb")), built("v2", Some("aa"))], now);
        assert!(!cache.held(&built("v3", Some("bb")), now));
        assert_eq!(cache.next_wake(now), None);
    }
}
