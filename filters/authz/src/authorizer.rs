//! The request pipeline, host-agnostic: find the token, verify it (or take the
//! verification from the cache), then walk the rules (see [`crate::rules`]) to a
//! decision with the headers to add. Keys come from the caller, which owns fetching:
//! when keys are missing or a `kid` is unknown, [`Authorizer::authenticate`] says so
//! and the caller decides whether to fetch and call again.

use std::rc::Rc;

use meshward_filter_common::request::RequestHead;

use crate::cache::VerifiedCache;
use crate::claims::{self, ClaimError, ClaimPolicy};
use crate::config::{CompiledConfig, FailureMode, KeySource, TokenLocation};
use crate::jwks::KeySet;
use crate::outputs::{self, Identity};
use crate::reply::{self, Reply};
use crate::rules::{Requirement, RuleAction};
use crate::token::{self, TokenError};
use crate::verify::{verify_signature, SignatureError};

/// Why a request was refused (metric tag values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Missing,
    Malformed,
    TooLarge,
    Algorithm,
    UnknownKid,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Claims,
    KeysUnavailable,
    MultipleTokens,
    Rule,
}

impl DenyReason {
    pub const ALL: [DenyReason; 14] = [
        DenyReason::Missing,
        DenyReason::Malformed,
        DenyReason::TooLarge,
        DenyReason::Algorithm,
        DenyReason::UnknownKid,
        DenyReason::Signature,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::Issuer,
        DenyReason::Audience,
        DenyReason::Claims,
        DenyReason::KeysUnavailable,
        DenyReason::MultipleTokens,
        DenyReason::Rule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Malformed => "malformed",
            DenyReason::TooLarge => "too_large",
            DenyReason::Algorithm => "algorithm",
            DenyReason::UnknownKid => "unknown_kid",
            DenyReason::Signature => "signature",
            DenyReason::Expired => "expired",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::Issuer => "issuer",
            DenyReason::Audience => "audience",
            DenyReason::Claims => "claims",
            DenyReason::KeysUnavailable => "keys_unavailable",
            DenyReason::MultipleTokens => "multiple_tokens",
            DenyReason::Rule => "rule",
        }
    }

    /// RFC 6750 `error_description` (quoted-string safe, no token content).
    fn description(self) -> &'static str {
        match self {
            DenyReason::Missing => "a bearer token is required",
            DenyReason::Malformed => "the token is malformed",
            DenyReason::TooLarge => "the token is too large",
            DenyReason::Algorithm => "the token's signing algorithm is not accepted",
            DenyReason::UnknownKid => "the token's signing key is unknown",
            DenyReason::Signature => "the token's signature is invalid",
            DenyReason::Expired => "the token has expired",
            DenyReason::NotYetValid => "the token is not valid yet",
            DenyReason::Issuer => "the token's issuer is not accepted",
            DenyReason::Audience => "the token's audience is not accepted",
            DenyReason::Claims => "the token lacks a required claim",
            DenyReason::KeysUnavailable => "the signing keys are unavailable",
            DenyReason::MultipleTokens => "the request carries more than one token",
            DenyReason::Rule => "the request is not allowed",
        }
    }
}

/// The outcome of looking for and checking a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Authentication {
    Missing,
    Verified(Rc<Identity>),
    Invalid {
        provider: usize,
        reason: DenyReason,
    },
    /// The provider's keys could not be loaded (the failure mode decides).
    KeysUnavailable {
        provider: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    pub outcome: Authentication,
    /// The header the token came from, when the provider strips it.
    pub strip_header: Option<String>,
    pub cache_hit: bool,
}

/// What [`Authorizer::authenticate`] needs before it can finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysNeeded {
    /// The provider's remote keys have not been loaded.
    NotLoaded { provider: usize },
    /// The token names a `kid` the loaded set lacks.
    UnknownKid { provider: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthStep {
    Done(Authenticated),
    NeedKeys(KeysNeeded),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Reply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Set for denials (metric tag).
    pub reason: Option<DenyReason>,
    /// The rule that decided (`None`: the default action, or authentication alone).
    pub rule: Option<usize>,
    /// Shadow rules that applied, with what they would have done (`true` = allow).
    pub shadow: Vec<(usize, bool)>,
    /// Headers to set when allowed (identity headers).
    pub set_headers: Vec<(String, String)>,
    /// Headers to remove when allowed (the token, when stripped).
    pub remove_headers: Vec<String>,
    /// Allowed only because keys were unavailable and `failureMode` is `allow`.
    pub failed_open: bool,
}

/// Looks up a provider's keys: inline ones from the config, remote ones from the
/// caller's cache (`None` when not loaded).
pub trait KeyLookup {
    fn remote_keys(&self, provider: usize) -> Option<Rc<KeySet>>;
}

pub struct Authorizer {
    pub config: CompiledConfig,
}

impl Authorizer {
    pub fn new(config: CompiledConfig) -> Self {
        Self { config }
    }

    /// Finds and checks the token. `may_need_keys: false` is the second call after the
    /// caller could not (or need not) fetch: unknown `kid` and missing keys then become
    /// final answers.
    pub fn authenticate(
        &self,
        request: &RequestHead,
        keys: &dyn KeyLookup,
        cache: &mut VerifiedCache<Rc<Identity>>,
        now_secs: u64,
        may_need_keys: bool,
    ) -> AuthStep {
        let (raw, location, first_provider) = match self.find_token(request) {
            Ok(Some(found)) => found,
            Ok(None) => return done(Authentication::Missing, None, false),
            Err(blamed) => {
                return done(
                    Authentication::Invalid {
                        provider: blamed,
                        reason: DenyReason::MultipleTokens,
                    },
                    None,
                    false,
                )
            }
        };
        let strip_header = |provider: usize| match location {
            TokenLocation::Header { name, .. }
                if self
                    .config
                    .providers
                    .get(provider)
                    .is_some_and(|p| p.strip_token) =>
            {
                Some(name.clone())
            }
            _ => None,
        };
        let invalid = |provider: usize, reason: DenyReason| {
            done(
                Authentication::Invalid { provider, reason },
                strip_header(provider),
                false,
            )
        };
        // A token verified before is found without decoding it again (most requests).
        let place = self
            .config
            .providers
            .get(first_provider)
            .and_then(|p| p.locations.iter().position(|l| std::ptr::eq(l, location)))
            .unwrap_or(usize::MAX);
        let cache_key = VerifiedCache::<Rc<Identity>>::key(first_provider, place, raw);
        if let Some(identity) = cache.get(&cache_key, now_secs) {
            let provider = identity.provider;
            return done(
                Authentication::Verified(identity),
                strip_header(provider),
                true,
            );
        }
        let token = match token::parse(raw, self.config.max_token_bytes) {
            Ok(token) => token,
            Err(err) => return invalid(first_provider, token_reason(&err)),
        };
        // The unverified `iss` only picks the provider; that provider then checks it.
        let provider_index = token::issuer(&token).and_then(|iss| {
            self.config
                .providers
                .iter()
                .position(|p| p.issuer == iss && p.locations.iter().any(|l| l == location))
        });
        let Some(provider_index) = provider_index else {
            return invalid(first_provider, DenyReason::Issuer);
        };
        let Some(provider) = self.config.providers.get(provider_index) else {
            return invalid(first_provider, DenyReason::Issuer);
        };

        let key_set = match &provider.keys {
            KeySource::Inline(set) => Some(KeyRef::Inline(set)),
            KeySource::Remote(_) => keys.remote_keys(provider_index).map(KeyRef::Remote),
        };
        let Some(key_set) = key_set else {
            if may_need_keys {
                return AuthStep::NeedKeys(KeysNeeded::NotLoaded {
                    provider: provider_index,
                });
            }
            return done(
                Authentication::KeysUnavailable {
                    provider: provider_index,
                },
                strip_header(provider_index),
                false,
            );
        };
        match verify_signature(&token, key_set.get(), &provider.algorithms) {
            Ok(()) => {}
            Err(SignatureError::UnknownKid)
                if may_need_keys && matches!(provider.keys, KeySource::Remote(_)) =>
            {
                return AuthStep::NeedKeys(KeysNeeded::UnknownKid {
                    provider: provider_index,
                });
            }
            Err(err) => return invalid(provider_index, signature_reason(err)),
        }
        if now_secs == 0 {
            // The host clock failed: time claims cannot be checked, so nothing is valid.
            return done(
                Authentication::KeysUnavailable {
                    provider: provider_index,
                },
                strip_header(provider_index),
                false,
            );
        }
        let policy = ClaimPolicy {
            issuer: &provider.issuer,
            audiences: &provider.audiences,
            skew_secs: provider.skew_secs,
            required: &provider.required_claims,
        };
        let exp = match claims::validate(&token.payload, &policy, now_secs) {
            Ok(exp) => exp,
            Err(err) => return invalid(provider_index, claim_reason(&err)),
        };
        let identity = Rc::new(Identity {
            provider: provider_index,
            principal: outputs::principal(&token.payload),
            payload_segment: token.payload_segment.to_owned(),
            claims: token.payload,
        });
        let max_age_end = now_secs.saturating_add(self.config.cache_max_age_secs);
        let expires = exp.map_or(max_age_end, |exp| exp.min(max_age_end));
        // A token inside the clock skew past its `exp` is valid now but never cached.
        if expires > now_secs {
            cache.insert(cache_key, identity.clone(), expires);
        }
        done(
            Authentication::Verified(identity),
            strip_header(provider_index),
            false,
        )
    }

    /// The request's token with its location and the index of the first provider that
    /// looks there (blamed when the token is unusable). RFC 6750 §2: a request carrying
    /// more than one distinct token (two headers, a header and a query parameter, a
    /// repeated parameter...) is refused, `Err` naming the provider to blame: a backend
    /// reading another copy than the one checked must never see an unchecked token.
    fn find_token<'r>(
        &'r self,
        request: &'r RequestHead,
    ) -> Result<Option<(&'r str, &'r TokenLocation, usize)>, usize> {
        let mut found: Option<(&'r str, &'r TokenLocation, usize)> = None;
        for (index, provider) in self.config.providers.iter().enumerate() {
            for location in &provider.locations {
                for token in extract_all(request, location) {
                    match found {
                        None => found = Some((token, location, index)),
                        Some((first, _, _)) if first == token => {}
                        Some((_, _, blamed)) => return Err(blamed),
                    }
                }
            }
        }
        Ok(found)
    }

    /// Walks the rules (see [`crate::rules`]) for an authenticated request.
    pub fn decide(&self, request: &RequestHead, authenticated: &Authenticated) -> Decision {
        let outcome = &authenticated.outcome;
        let mut shadow = Vec::new();
        // `failureMode: allow` and the token's provider has no keys: a rule that would
        // accept that provider and checks no claims lets the request through without
        // identity. Everything else is evaluated as for an anonymous request — the
        // provider was chosen by the token's unverified `iss`, so it must not unlock
        // more than an outage forces.
        let fails_open = |providers: &[usize]| match outcome {
            Authentication::KeysUnavailable { provider } => {
                self.config.failure_mode == FailureMode::Allow
                    && (providers.is_empty() || providers.contains(provider))
            }
            _ => false,
        };
        let verified = match outcome {
            Authentication::Verified(identity) => Some(identity.as_ref()),
            _ => None,
        };
        for (index, rule) in self.config.rules.iter().enumerate() {
            if !rule.matcher.matches(request) {
                continue;
            }
            let identity = match &rule.requirement {
                Requirement::Anonymous => verified,
                Requirement::Authenticated { providers } => {
                    let accepted = verified
                        .filter(|id| providers.is_empty() || providers.contains(&id.provider));
                    if accepted.is_none() {
                        if rule.action == RuleAction::Deny {
                            continue;
                        }
                        if fails_open(providers) {
                            if !rule.claims.is_empty() {
                                continue; // claims cannot be checked: the rule cannot apply
                            }
                            if rule.shadow {
                                shadow.push((index, true));
                                continue;
                            }
                            return self.fail_open(Some(index), authenticated, shadow);
                        }
                        if rule.shadow {
                            shadow.push((index, false));
                            continue;
                        }
                        return self.unauthenticated(outcome, Some(index), shadow);
                    }
                    accepted
                }
            };
            let claims_hold = rule.claims.is_empty()
                || identity.is_some_and(|id| rule.claims.iter().all(|c| c.holds(&id.claims)));
            if !claims_hold {
                continue;
            }
            if rule.shadow {
                shadow.push((index, rule.action == RuleAction::Allow));
                continue;
            }
            return match rule.action {
                RuleAction::Allow => self.allow(Some(index), identity, authenticated, shadow),
                RuleAction::Deny => deny(Some(index), reply::forbidden(), DenyReason::Rule, shadow),
            };
        }
        if self.config.rules.is_empty() {
            // No rules: every request needs a valid token from any provider.
            return match verified {
                Some(identity) => self.allow(None, Some(identity), authenticated, shadow),
                None if fails_open(&[]) => self.fail_open(None, authenticated, shadow),
                None => self.unauthenticated(outcome, None, shadow),
            };
        }
        match self.config.default_action {
            RuleAction::Allow => self.allow(None, verified, authenticated, shadow),
            RuleAction::Deny => match outcome {
                Authentication::Invalid { .. } => self.unauthenticated(outcome, None, shadow),
                Authentication::KeysUnavailable { .. } if !fails_open(&[]) => {
                    self.unauthenticated(outcome, None, shadow)
                }
                _ => deny(None, reply::forbidden(), DenyReason::Rule, shadow),
            },
        }
    }

    /// Allowed without identity because keys are unavailable (`failureMode: allow`).
    fn fail_open(
        &self,
        rule: Option<usize>,
        authenticated: &Authenticated,
        shadow: Vec<(usize, bool)>,
    ) -> Decision {
        let mut decision = self.allow(rule, None, authenticated, shadow);
        decision.failed_open = true;
        decision
    }

    /// When a provider's next key fetch may be tried: its `retryInterval`, rounded up.
    fn retry_after_secs(&self, provider: usize) -> u64 {
        match self.config.providers.get(provider).map(|p| &p.keys) {
            Some(KeySource::Remote(remote)) => remote.retry_nanos.div_ceil(1_000_000_000),
            _ => 1,
        }
    }

    fn allow(
        &self,
        rule: Option<usize>,
        identity: Option<&Identity>,
        authenticated: &Authenticated,
        shadow: Vec<(usize, bool)>,
    ) -> Decision {
        let set_headers = identity
            .and_then(|id| {
                self.config
                    .providers
                    .get(id.provider)
                    .map(|p| outputs::identity_headers(p, id, &self.config.principal_header))
            })
            .unwrap_or_default();
        Decision {
            verdict: Verdict::Allow,
            reason: None,
            rule,
            shadow,
            set_headers,
            remove_headers: authenticated.strip_header.iter().cloned().collect(),
            failed_open: false,
        }
    }

    /// 401 (or 503 when keys are unavailable) for a rule that needed a token.
    fn unauthenticated(
        &self,
        outcome: &Authentication,
        rule: Option<usize>,
        shadow: Vec<(usize, bool)>,
    ) -> Decision {
        let realm = &self.config.realm;
        match outcome {
            Authentication::Invalid {
                reason: DenyReason::MultipleTokens,
                ..
            } => deny(
                rule,
                reply::invalid_request(realm, DenyReason::MultipleTokens.description()),
                DenyReason::MultipleTokens,
                shadow,
            ),
            Authentication::Invalid { reason, .. } => deny(
                rule,
                reply::unauthorized(realm, Some(reason.description())),
                *reason,
                shadow,
            ),
            Authentication::KeysUnavailable { provider } => deny(
                rule,
                reply::keys_unavailable(self.retry_after_secs(*provider)),
                DenyReason::KeysUnavailable,
                shadow,
            ),
            // A verified token from a provider this rule does not accept.
            Authentication::Verified(_) => deny(
                rule,
                reply::unauthorized(realm, Some(DenyReason::Issuer.description())),
                DenyReason::Issuer,
                shadow,
            ),
            Authentication::Missing => deny(
                rule,
                reply::unauthorized(realm, None),
                DenyReason::Missing,
                shadow,
            ),
        }
    }
}

fn deny(
    rule: Option<usize>,
    reply: Reply,
    reason: DenyReason,
    shadow: Vec<(usize, bool)>,
) -> Decision {
    Decision {
        verdict: Verdict::Deny(reply),
        reason: Some(reason),
        rule,
        shadow,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        failed_open: false,
    }
}

fn done(outcome: Authentication, strip_header: Option<String>, cache_hit: bool) -> AuthStep {
    AuthStep::Done(Authenticated {
        outcome,
        strip_header,
        cache_hit,
    })
}

enum KeyRef<'a> {
    Inline(&'a KeySet),
    Remote(Rc<KeySet>),
}

impl KeyRef<'_> {
    fn get(&self) -> &KeySet {
        match self {
            KeyRef::Inline(set) => set,
            KeyRef::Remote(set) => set,
        }
    }
}

/// Every token the request carries at `location`: each value of the header (with its
/// prefix, matched case-insensitively), of the query parameter or of the cookie.
pub fn extract_all<'r>(request: &'r RequestHead, location: &'r TokenLocation) -> Vec<&'r str> {
    let tokens: Vec<&str> = match location {
        TokenLocation::Header { name, prefix } => request
            .header_values(name)
            .filter_map(|value| {
                let head = value.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| value.get(prefix.len()..))
                    .flatten()
                    .map(str::trim)
            })
            .collect(),
        TokenLocation::Query(name) => request.query_parameters(name).collect(),
        TokenLocation::Cookie(name) => request.cookies(name).collect(),
    };
    tokens
        .into_iter()
        .filter(|token| !token.is_empty())
        .collect()
}

fn token_reason(err: &TokenError) -> DenyReason {
    match err {
        TokenError::TooLarge { .. } => DenyReason::TooLarge,
        TokenError::Malformed(_) | TokenError::UnsupportedCritical(_) => DenyReason::Malformed,
        TokenError::AlgNone | TokenError::UnsupportedAlgorithm(_) => DenyReason::Algorithm,
    }
}

fn signature_reason(err: SignatureError) -> DenyReason {
    match err {
        SignatureError::UnknownKid => DenyReason::UnknownKid,
        SignatureError::AlgorithmNotAllowed => DenyReason::Algorithm,
        SignatureError::BadSignature => DenyReason::Signature,
    }
}

fn claim_reason(err: &ClaimError) -> DenyReason {
    match err {
        ClaimError::Expired => DenyReason::Expired,
        ClaimError::NotYetValid => DenyReason::NotYetValid,
        ClaimError::Issuer => DenyReason::Issuer,
        ClaimError::Audience => DenyReason::Audience,
        ClaimError::Missing(_) => DenyReason::Claims,
        ClaimError::Malformed(_) => DenyReason::Malformed,
    }
}
