//! The authz configuration loader, and what a loaded configuration decides.
//!
//! Input: the JSON configuration on the first line; optionally a JSON claims object on
//! the second, which becomes an HS256 token signed with the fixture secret (kid `hs`,
//! see src/lib.rs: a configuration holding the fixture key set verifies it). Remote key
//! sets are served the fixture set.
//!
//! Properties of a configuration that loads: providers (unless every rule is anonymous),
//! unique metric-safe names, issuers, rules naming existing providers; `realm` safe in a
//! quoted string; a positive token size limit; every header it writes owned (stripped
//! from requests first), sorted and unique, never a pseudo-header nor where a token is
//! read from. Then, for requests without a token, with a
//! garbage token, with each fixture token and with the claims token (header, query
//! parameter or cookie): only a token that verifies yields an identity, from a provider
//! of its issuer; an allowed request gets only owned headers, with safe values, each set
//! once, and identity headers only with an identity; a denial is 400, 401, 403 or 503
//! and sets nothing; failing open is an allowance; a repeated request decides the same
//! (from the cache when the token was verified).

#![no_main]

use std::rc::Rc;

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use meshward_authz::authorizer::{
    AuthStep, Authentication, Authorizer, Decision, KeyLookup, Verdict,
};
use meshward_authz::base64url;
use meshward_authz::cache::VerifiedCache;
use meshward_authz::config::{self, CompiledConfig, KeySource, TokenLocation};
use meshward_authz::jwks::{self, KeySet, Origin};
use meshward_authz::outputs::Identity;
use meshward_authz::rules::Requirement;
use meshward_authz_fuzz::{HMAC_SECRET, JWKS, TOKENS};
use meshward_filter_common::config_error::is_metric_segment;
use meshward_filter_common::request::RequestHead;

const NOW: u64 = 1_800_000_000;

thread_local! {
    static REMOTE: Rc<KeySet> = Rc::new(
        jwks::parse(JWKS.as_bytes(), Origin::Remote).expect("the fixture set loads").set,
    );
}

struct Fixture;

impl KeyLookup for Fixture {
    fn remote_keys(&self, _provider: usize) -> Option<Rc<KeySet>> {
        Some(REMOTE.with(Rc::clone))
    }
}

fn hs256(claims: &str) -> String {
    let input = format!(
        "{}.{}",
        base64url::encode(br#"{"alg":"HS256","kid":"hs","typ":"JWT"}"#),
        base64url::encode(claims.as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HMAC_SECRET).expect("any key length");
    mac.update(input.as_bytes());
    let signature = mac.finalize().into_bytes();
    format!("{input}.{}", base64url::encode(&signature))
}

fn check_compiled(config: &CompiledConfig) {
    let all_anonymous = !config.rules.is_empty()
        && config
            .rules
            .iter()
            .all(|r| r.requirement == Requirement::Anonymous);
    assert!(!config.providers.is_empty() || all_anonymous);
    for (i, provider) in config.providers.iter().enumerate() {
        assert!(is_metric_segment(&provider.name), "{:?}", provider.name);
        assert!(!provider.issuer.is_empty());
        assert!(!provider.locations.is_empty());
        assert!(config
            .providers
            .iter()
            .take(i)
            .all(|p| p.name != provider.name));
        if let KeySource::Remote(remote) = &provider.keys {
            assert!(remote.timeout_nanos > 0 && remote.cache_nanos > 0);
            assert!(remote.retry_nanos > 0 && remote.unknown_kid_nanos > 0);
            assert!(!remote.cluster.is_empty() && !remote.authority.is_empty());
            assert!(remote.path.starts_with('/'));
        }
        for (_, header) in &provider.claim_headers {
            assert!(config.owned_headers.contains(header), "{header}");
        }
        if let Some(header) = &provider.payload_header {
            assert!(config.owned_headers.contains(header));
        }
    }
    for (i, rule) in config.rules.iter().enumerate() {
        assert!(is_metric_segment(&rule.name));
        assert!(config.rules.iter().take(i).all(|r| r.name != rule.name));
        if let Requirement::Authenticated { providers } = &rule.requirement {
            assert!(providers.iter().all(|p| *p < config.providers.len()));
        }
    }
    assert!(config.realm.bytes().all(config::is_quoted_string_safe));
    assert!(config.max_token_bytes > 0);
    assert!(config.owned_headers.contains(&config.principal_header));
    // Owned headers are removed before the token is looked for.
    for name in &config.owned_headers {
        assert!(!name.starts_with(':'), "{name}");
        for provider in &config.providers {
            for location in &provider.locations {
                match location {
                    TokenLocation::Header { name: token, .. } => assert_ne!(name, token),
                    TokenLocation::Cookie(_) => assert_ne!(name, "cookie"),
                    TokenLocation::Query(_) => {}
                }
            }
        }
    }
    assert!(
        config.owned_headers.windows(2).all(|w| w[0] < w[1]),
        "sorted, unique"
    );
}

fn request(extra: &[(&str, String)]) -> RequestHead {
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), "/orders/42".to_owned()),
        (":authority".to_owned(), "api.example.com".to_owned()),
    ];
    headers.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    RequestHead::new(headers, Some("192.0.2.1:5000".into()))
}

fn run(
    authorizer: &Authorizer,
    cache: &mut VerifiedCache<Rc<Identity>>,
    request: &RequestHead,
) -> (Authentication, bool, Decision) {
    let step = match authorizer.authenticate(request, &Fixture, cache, NOW, true) {
        AuthStep::NeedKeys(_) => authorizer.authenticate(request, &Fixture, cache, NOW, false),
        done => done,
    };
    let AuthStep::Done(authenticated) = step else {
        panic!("a second call never asks for keys again");
    };
    let decision = authorizer.decide(request, &authenticated);
    (authenticated.outcome, authenticated.cache_hit, decision)
}

fn check_request(
    authorizer: &Authorizer,
    cache: &mut VerifiedCache<Rc<Identity>>,
    request: &RequestHead,
    may_verify: bool,
) {
    let config = &authorizer.config;
    let (outcome, _, decision) = run(authorizer, cache, request);
    let identity = match &outcome {
        Authentication::Verified(identity) => {
            assert!(may_verify, "a token that cannot verify did: {request:?}");
            let provider = config
                .providers
                .get(identity.provider)
                .expect("its provider");
            assert_eq!(
                identity.claims.get("iss").and_then(|v| v.as_str()),
                Some(provider.issuer.as_str())
            );
            true
        }
        _ => false,
    };
    match &decision.verdict {
        Verdict::Allow => {
            for (i, (name, value)) in decision.set_headers.iter().enumerate() {
                assert!(config.owned_headers.contains(name), "{name} is not owned");
                assert!(
                    !value.chars().any(|c| c.is_control() && c != '\t'),
                    "{name}: {value:?}"
                );
                assert!(
                    decision.set_headers.iter().take(i).all(|(n, _)| n != name),
                    "{name} set twice: {:?}",
                    decision.set_headers
                );
            }
            if !identity {
                assert!(
                    decision.set_headers.is_empty(),
                    "identity headers without identity"
                );
            }
        }
        Verdict::Deny(reply) => {
            assert!(
                matches!(reply.status, 400 | 401 | 403 | 503),
                "{}",
                reply.status
            );
            assert!(decision.set_headers.is_empty() && !decision.failed_open);
            assert!(decision.reason.is_some());
            for (name, value) in &reply.headers {
                assert!(!value.contains(['\r', '\n']), "{name}: {value:?}");
            }
        }
    }
    let (again, hit, repeated) = run(authorizer, cache, request);
    assert_eq!(repeated.verdict, decision.verdict);
    assert_eq!(repeated.set_headers, decision.set_headers);
    // Entries live whole seconds: a sub-second `maxAge` rounds to no caching.
    if identity && config.cache_entries > 0 && config.cache_max_age_secs > 0 {
        assert!(hit, "a verified token is cached");
        assert!(matches!(again, Authentication::Verified(_)));
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (json, claims) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(compiled) = config::parse(json.as_bytes()) else {
        return;
    };
    check_compiled(&compiled);
    let mut cache = VerifiedCache::new(compiled.cache_entries.min(64));
    let authorizer = Authorizer::new(compiled);

    check_request(&authorizer, &mut cache, &request(&[]), false);
    let garbage = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln".to_owned();
    check_request(
        &authorizer,
        &mut cache,
        &request(&[("authorization", format!("Bearer {garbage}"))]),
        false,
    );
    let mut tokens: Vec<String> = TOKENS.iter().map(|t| (*t).to_owned()).collect();
    if !claims.is_empty() {
        tokens.push(hs256(claims));
    }
    for token in &tokens {
        let carriers = [
            request(&[("authorization", format!("Bearer {token}"))]),
            RequestHead::new(
                vec![
                    (":method".to_owned(), "GET".to_owned()),
                    (
                        ":path".to_owned(),
                        format!("/orders/42?access_token={token}"),
                    ),
                ],
                None,
            ),
            request(&[("cookie", format!("theme=dark; session={token}"))]),
        ];
        for head in &carriers {
            check_request(&authorizer, &mut cache, head, true);
        }
    }
});
