//! Every algorithm verifies with keys generated in the test, and every "must reject"
//! case of the authz filter is refused for the right reason. Tokens are signed by the
//! testkit with RustCrypto primitives directly, not by the verifier's library.
// Native only: the testkit generates keys with OS randomness.
#![cfg(not(target_arch = "wasm32"))]
// Integration-test helpers are test code too (clippy.toml only covers `#[test]` fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::rc::Rc;

use meshward_authz::authorizer::{
    AuthStep, Authentication, Authorizer, DenyReason, KeyLookup, KeysNeeded,
};
use meshward_authz::cache::VerifiedCache;
use meshward_authz::config;
use meshward_authz::jwks::{KeySet, Origin};
use meshward_authz::outputs::Identity;
use meshward_filter_common::request::RequestHead;
use meshward_jwt_testkit::{b64, jwks, unsigned_token, Alg, Signer};
use serde_json::{json, Value};

const ISSUER: &str = "https://id.example.com/";
const NOW: u64 = 1_800_000_000;

struct NoRemote;

impl KeyLookup for NoRemote {
    fn remote_keys(&self, _provider: usize) -> Option<Rc<KeySet>> {
        None
    }
}

struct Remote(Option<Rc<KeySet>>);

impl KeyLookup for Remote {
    fn remote_keys(&self, _provider: usize) -> Option<Rc<KeySet>> {
        self.0.clone()
    }
}

fn authorizer_with(jwks_document: &str, extra: Value) -> Authorizer {
    let mut provider = json!({
        "name": "main",
        "issuer": ISSUER,
        "audiences": ["api://orders"],
        "jwks": {"inline": jwks_document},
    });
    for (key, value) in extra.as_object().unwrap() {
        provider[key] = value.clone();
    }
    let config = json!({"providers": [provider], "realm": "orders"}).to_string();
    Authorizer::new(config::parse(config.as_bytes()).unwrap())
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": "api://orders", "exp": NOW + 300, "iat": NOW})
}

fn bearer(token: &str) -> RequestHead {
    RequestHead::new(
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/orders".into()),
            (":authority".into(), "api.example.com".into()),
            ("authorization".into(), format!("Bearer {token}")),
        ],
        None,
    )
}

fn authenticate(authorizer: &Authorizer, token: &str) -> Authentication {
    let mut cache = VerifiedCache::<Rc<Identity>>::new(0);
    match authorizer.authenticate(&bearer(token), &NoRemote, &mut cache, NOW, true) {
        AuthStep::Done(done) => done.outcome,
        other => panic!("unexpected {other:?}"),
    }
}

fn rejected(authorizer: &Authorizer, token: &str) -> DenyReason {
    match authenticate(authorizer, token) {
        Authentication::Invalid { reason, .. } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn assert_verified(authorizer: &Authorizer, token: &str) {
    match authenticate(authorizer, token) {
        Authentication::Verified(identity) => {
            assert_eq!(
                identity.principal.as_deref(),
                Some("https://id.example.com//alice")
            );
        }
        other => panic!("expected a verified token, got {other:?}"),
    }
}

#[test]
fn every_algorithm_verifies_with_its_key_and_fails_with_another_key() {
    for alg in Alg::ALL {
        let signer = Signer::generate(alg, "k1");
        // Same algorithm, different key material, same kid: must not verify.
        let impostor = Signer::generate_in_slot(alg, "k1", 1);
        let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
        assert_verified(&authorizer, &signer.sign(&claims()));
        assert_eq!(
            rejected(&authorizer, &impostor.sign(&claims())),
            DenyReason::Signature,
            "{}",
            alg.name()
        );
    }
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    let token = signer.sign(&claims());
    let (header, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut forged_claims = claims();
    forged_claims["sub"] = json!("mallory");
    let forged = format!(
        "{header}.{}.{signature}",
        b64(forged_claims.to_string().as_bytes())
    );
    assert_eq!(rejected(&authorizer, &forged), DenyReason::Signature);
}

#[test]
fn keys_without_kid_are_tried_in_turn() {
    let first = Signer::generate(Alg::RS256, "a");
    let second = Signer::generate_in_slot(Alg::RS256, "b", 1);
    let mut set: Value = serde_json::from_str(&jwks(&[&first, &second])).unwrap();
    for key in set["keys"].as_array_mut().unwrap() {
        key.as_object_mut().unwrap().remove("kid");
    }
    let authorizer = authorizer_with(&set.to_string(), json!({}));
    let token = second.sign_with_header(&json!({"kid": null}), &claims());
    assert_verified(&authorizer, &token);
}

#[test]
fn rejects_alg_none_in_any_casing() {
    let signer = Signer::generate(Alg::RS256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    for none in ["none", "None", "NONE", "nOnE"] {
        let token = unsigned_token(&json!({"alg": none, "kid": "k1"}), &claims());
        assert_eq!(
            rejected(&authorizer, &token),
            DenyReason::Algorithm,
            "{none}"
        );
        // Even with a signature segment attached.
        let signed = format!("{token}c2ln");
        assert_eq!(
            rejected(&authorizer, &signed),
            DenyReason::Algorithm,
            "{none}"
        );
    }
}

#[test]
fn rejects_hmac_tokens_against_an_asymmetric_key() {
    // The classic confusion forgery: HS256 keyed with the RSA public modulus.
    let rsa = Signer::generate(Alg::RS256, "k1");
    let authorizer = authorizer_with(&jwks(&[&rsa]), json!({}));
    let secret = rsa.rsa_public_modulus().unwrap();
    let forged = Signer::hmac(Alg::HS256, "k1", &secret).sign(&claims());
    assert_eq!(rejected(&authorizer, &forged), DenyReason::Algorithm);
    // Same with a JWK that publishes no `alg` (only its kty decides).
    let mut set: Value = serde_json::from_str(&jwks(&[&rsa])).unwrap();
    set["keys"][0].as_object_mut().unwrap().remove("alg");
    let authorizer = authorizer_with(&set.to_string(), json!({}));
    assert_eq!(rejected(&authorizer, &forged), DenyReason::Algorithm);
    // And an RSA key pinned to PS256 refuses RS256 tokens.
    set["keys"][0]["alg"] = json!("PS256");
    let authorizer = authorizer_with(&set.to_string(), json!({}));
    assert_eq!(
        rejected(&authorizer, &rsa.sign(&claims())),
        DenyReason::Algorithm
    );
}

#[test]
fn rejects_algorithms_outside_the_provider_allowlist() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({"algorithms": ["RS256"]}));
    assert_eq!(
        rejected(&authorizer, &signer.sign(&claims())),
        DenyReason::Algorithm
    );
}

#[test]
fn rejects_unknown_kid() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let stranger = Signer::generate(Alg::ES256, "k2");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    assert_eq!(
        rejected(&authorizer, &stranger.sign(&claims())),
        DenyReason::UnknownKid
    );
}

#[test]
fn rejects_expired_and_not_yet_valid_tokens_beyond_the_skew() {
    let signer = Signer::generate(Alg::EdDSA, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({"clockSkew": "30s"}));
    let with = |field: &str, value: u64| {
        let mut c = claims();
        c[field] = json!(value);
        signer.sign(&c)
    };
    assert_verified(&authorizer, &with("exp", NOW - 29));
    assert_eq!(
        rejected(&authorizer, &with("exp", NOW - 30)),
        DenyReason::Expired
    );
    assert_verified(&authorizer, &with("nbf", NOW + 30));
    assert_eq!(
        rejected(&authorizer, &with("nbf", NOW + 31)),
        DenyReason::NotYetValid
    );
}

#[test]
fn rejects_wrong_issuer_and_audience() {
    let signer = Signer::generate(Alg::ES384, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com/");
    assert_eq!(rejected(&authorizer, &signer.sign(&c)), DenyReason::Issuer);
    let mut c = claims();
    c["aud"] = json!(["api://billing"]);
    assert_eq!(
        rejected(&authorizer, &signer.sign(&c)),
        DenyReason::Audience
    );
}

#[test]
fn rejects_critical_headers_it_does_not_understand() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    let token = signer.sign_with_header(
        &json!({"crit": ["http://example.com/ext"], "http://example.com/ext": true}),
        &claims(),
    );
    assert_eq!(rejected(&authorizer, &token), DenyReason::Malformed);
}

#[test]
fn rejects_malformed_and_non_canonical_base64url() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    let token = signer.sign(&claims());
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    // An ES256 signature is 64 bytes: 86 characters whose last one carries 4 unused
    // bits. Setting one of them spells the same bytes non-canonically.
    let last = signature.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).unwrap();
    let sibling = alphabet.chars().nth(index ^ 1).unwrap();
    let non_canonical = format!(
        "{signing_input}.{}{sibling}",
        &signature[..signature.len() - 1]
    );
    assert_eq!(rejected(&authorizer, &non_canonical), DenyReason::Malformed);
    for bad in [
        format!("{token}="),
        token.replacen('.', ".=", 1),
        format!(
            "{signing_input}.{}",
            signature.replace('-', "+").replace('_', "/") + "+"
        ),
        token.replace('.', ""),
        format!("{token}.more"),
        "a.b".to_owned(),
    ] {
        assert_eq!(rejected(&authorizer, &bad), DenyReason::Malformed, "{bad}");
    }
}

#[test]
fn rejects_ecdsa_signatures_with_r_or_s_zero_or_not_below_the_order() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    let token = signer.sign(&claims());
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let order: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let mut one = [0u8; 32];
    one[31] = 1;
    for (r, s) in [
        ([0u8; 32], [0u8; 32]), // CVE-2022-21449 "psychic signature"
        ([0u8; 32], one),
        (one, [0u8; 32]),
        (order, one),
        (one, order),
        ([0xff; 32], one),
    ] {
        let forged = format!("{signing_input}.{}", b64(&[r, s].concat()));
        assert_eq!(rejected(&authorizer, &forged), DenyReason::Signature);
    }
}

#[test]
fn rejects_tokens_over_the_maximum_before_decoding() {
    let signer = Signer::generate(Alg::HS256, "k1");
    let document = jwks(&[&signer]);
    let config = json!({
        "providers": [{"name": "main", "issuer": ISSUER, "jwks": {"inline": document}}],
        "maxTokenBytes": 300
    })
    .to_string();
    let authorizer = Authorizer::new(config::parse(config.as_bytes()).unwrap());
    let mut big = claims();
    big["pad"] = json!("x".repeat(400));
    assert_eq!(
        rejected(&authorizer, &signer.sign(&big)),
        DenyReason::TooLarge
    );
    // Not even valid base64: size is checked first, so the reason is still size.
    assert_eq!(
        rejected(&authorizer, &"!".repeat(301)),
        DenyReason::TooLarge
    );
    assert!(matches!(
        authenticate(&authorizer, &signer.sign(&claims())),
        Authentication::Verified(_)
    ));
}

#[test]
fn embedded_jwk_jku_x5u_x5c_are_never_trusted() {
    let trusted = Signer::generate(Alg::RS256, "k1");
    let attacker = Signer::generate_in_slot(Alg::RS256, "k1", 1);
    let authorizer = authorizer_with(&jwks(&[&trusted]), json!({}));
    let token = attacker.sign_with_header(
        &json!({
            "jwk": attacker.public_jwk(),
            "jku": "https://attacker.example/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": ["MIIB"]
        }),
        &claims(),
    );
    assert_eq!(rejected(&authorizer, &token), DenyReason::Signature);
    let without_kid = attacker.sign_with_header(
        &json!({"kid": null, "jwk": attacker.public_jwk()}),
        &claims(),
    );
    assert_eq!(rejected(&authorizer, &without_kid), DenyReason::Signature);
}

#[test]
fn unusable_jwks_entries_are_skipped_with_a_warning() {
    let good = Signer::generate(Alg::ES256, "good");
    let short = Signer::hmac(Alg::HS256, "short", &[1; 16]);
    let mut set: Value = serde_json::from_str(&jwks(&[&good, &short])).unwrap();
    let mut enc = good.public_jwk();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    set["keys"].as_array_mut().unwrap().push(enc);
    let config = json!({
        "providers": [{"name": "main", "issuer": ISSUER, "jwks": {"inline": set}}]
    })
    .to_string();
    let compiled = config::parse(config.as_bytes()).unwrap();
    assert_eq!(compiled.warnings.len(), 3, "{:?}", compiled.warnings);
    assert!(compiled.warnings[0].contains("kid short"));
    assert!(compiled.warnings[1].contains("kid enc"));
    assert!(compiled.warnings[2].contains("no `audiences`"));
    let authorizer = Authorizer::new(compiled);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        authenticate(&authorizer, &good.sign(&c)),
        Authentication::Verified(_)
    ));
    let short_token = short.sign(&c);
    assert_eq!(rejected(&authorizer, &short_token), DenyReason::UnknownKid);
}

#[test]
fn remote_providers_ask_for_keys_when_missing_or_kid_unknown() {
    let signer = Signer::generate(Alg::ES256, "new");
    let config = json!({
        "providers": [{"name": "main", "issuer": ISSUER,
                       "jwks": {"remote": {"cluster": "jwks", "uri": "https://id.example.com/jwks"}}}]
    })
    .to_string();
    let authorizer = Authorizer::new(config::parse(config.as_bytes()).unwrap());
    let mut cache = VerifiedCache::new(16);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    let request = bearer(&signer.sign(&c));
    let step = authorizer.authenticate(&request, &Remote(None), &mut cache, NOW, true);
    assert_eq!(
        step,
        AuthStep::NeedKeys(KeysNeeded::NotLoaded { provider: 0 })
    );
    let step = authorizer.authenticate(&request, &Remote(None), &mut cache, NOW, false);
    assert!(
        matches!(step, AuthStep::Done(d) if d.outcome == Authentication::KeysUnavailable { provider: 0 })
    );

    let old = Signer::generate(Alg::ES256, "old");
    let old_set = meshward_authz::jwks::parse(jwks(&[&old]).as_bytes(), Origin::Remote)
        .unwrap()
        .set;
    let stale = Remote(Some(Rc::new(old_set)));
    let step = authorizer.authenticate(&request, &stale, &mut cache, NOW, true);
    assert_eq!(
        step,
        AuthStep::NeedKeys(KeysNeeded::UnknownKid { provider: 0 })
    );
    let step = authorizer.authenticate(&request, &stale, &mut cache, NOW, false);
    assert!(
        matches!(step, AuthStep::Done(d) if d.outcome == Authentication::Invalid { provider: 0, reason: DenyReason::UnknownKid })
    );

    let rotated = meshward_authz::jwks::parse(jwks(&[&old, &signer]).as_bytes(), Origin::Remote)
        .unwrap()
        .set;
    let fresh = Remote(Some(Rc::new(rotated)));
    let step = authorizer.authenticate(&request, &fresh, &mut cache, NOW, true);
    assert!(matches!(step, AuthStep::Done(d) if matches!(d.outcome, Authentication::Verified(_))));
}

#[test]
fn the_cache_skips_verification_and_never_outlives_exp() {
    let signer = Signer::generate(Alg::RS256, "k1");
    let authorizer = authorizer_with(&jwks(&[&signer]), json!({}));
    let mut c = claims();
    c["exp"] = json!(NOW + 10);
    let request = bearer(&signer.sign(&c));
    let mut cache = VerifiedCache::new(16);
    let mut run =
        |now: u64| match authorizer.authenticate(&request, &NoRemote, &mut cache, now, true) {
            AuthStep::Done(done) => done,
            other => panic!("{other:?}"),
        };
    let first = run(NOW);
    assert!(!first.cache_hit);
    let second = run(NOW + 5);
    assert!(second.cache_hit);
    assert_eq!(first.outcome, second.outcome);
    // At exp the cached entry is gone; the skew still admits the token on a full check.
    let at_exp = run(NOW + 10);
    assert!(!at_exp.cache_hit);
    assert!(matches!(at_exp.outcome, Authentication::Verified(_)));
}

#[test]
fn tokens_are_found_in_headers_query_parameters_and_cookies() {
    let signer = Signer::generate(Alg::HS512, "k1");
    let authorizer = authorizer_with(
        &jwks(&[&signer]),
        json!({"from": [{"header": "x-token"}, {"query": "access_token"}, {"cookie": "session"}]}),
    );
    let token = signer.sign(&claims());
    let mut cache = VerifiedCache::<Rc<Identity>>::new(0);
    for extra in [
        ("x-token".to_owned(), token.clone()),
        (
            ":path".to_owned(),
            format!("/orders?x=1&access_token={token}"),
        ),
        ("cookie".to_owned(), format!("theme=dark; session={token}")),
    ] {
        let mut headers = vec![
            (":method".to_owned(), "GET".to_owned()),
            (":authority".to_owned(), "api".to_owned()),
        ];
        if extra.0 != ":path" {
            headers.push((":path".into(), "/orders".into()));
        }
        headers.push(extra.clone());
        let request = RequestHead::new(headers, None);
        let step = authorizer.authenticate(&request, &NoRemote, &mut cache, NOW, true);
        assert!(
            matches!(&step, AuthStep::Done(d) if matches!(d.outcome, Authentication::Verified(_))),
            "{extra:?}: {step:?}"
        );
    }
    // `Authorization: Bearer` is not among this provider's locations.
    assert_eq!(authenticate(&authorizer, &token), Authentication::Missing);
}

#[test]
fn fetched_key_sets_never_supply_hmac_secrets() {
    let hmac = Signer::generate(Alg::HS256, "shared");
    let ec = Signer::generate(Alg::ES256, "ec");
    let document = jwks(&[&hmac, &ec]);
    let remote = meshward_authz::jwks::parse(document.as_bytes(), Origin::Remote).unwrap();
    assert_eq!(remote.set.keys.len(), 1);
    assert!(
        remote.warnings[0].contains("accepted inline only"),
        "{:?}",
        remote.warnings
    );
    let inline = meshward_authz::jwks::parse(document.as_bytes(), Origin::Inline).unwrap();
    assert_eq!(inline.set.keys.len(), 2);
}

#[test]
fn keys_that_could_never_verify_are_refused_at_load() {
    let ec = Signer::generate(Alg::ES256, "ec");
    let mut off_curve = ec.public_jwk();
    off_curve["kid"] = json!("off-curve");
    off_curve["y"] = json!(b64(&[7u8; 32]));
    let mut huge_exponent = Signer::generate(Alg::RS256, "rsa").public_jwk();
    huge_exponent["kid"] = json!("huge-e");
    huge_exponent["e"] = json!(b64(&[0xff; 64]));
    let document = json!({"keys": [off_curve, huge_exponent, ec.public_jwk()]}).to_string();
    let parsed = meshward_authz::jwks::parse(document.as_bytes(), Origin::Inline).unwrap();
    assert_eq!(parsed.set.keys.len(), 1);
    let warnings = parsed.warnings.join("\n");
    assert!(
        warnings.contains("(kid off-curve) skipped: the EC point is not on the curve"),
        "{warnings}"
    );
    assert!(
        warnings.contains("(kid huge-e) skipped: unusable RSA key"),
        "{warnings}"
    );
}

#[test]
fn a_kid_shared_by_two_key_types_selects_the_one_that_fits_the_algorithm() {
    let rsa = Signer::generate(Alg::RS256, "shared");
    let ec = Signer::generate(Alg::ES256, "shared");
    let authorizer = authorizer_with(&jwks(&[&rsa, &ec]), json!({}));
    assert_verified(&authorizer, &ec.sign(&claims()));
    assert_verified(&authorizer, &rsa.sign(&claims()));
}

#[test]
fn a_request_with_more_than_one_token_is_refused() {
    let signer = Signer::generate(Alg::ES256, "k1");
    let authorizer = authorizer_with(
        &jwks(&[&signer]),
        json!({"from": [{"header": "authorization", "prefix": "Bearer "}, {"query": "access_token"}]}),
    );
    let good = signer.sign(&claims());
    let other = signer
        .sign(&json!({"iss": ISSUER, "sub": "mallory", "aud": "api://orders", "exp": NOW + 300}));
    let mut cache = VerifiedCache::<Rc<Identity>>::new(0);
    let mut outcome = |headers: Vec<(&str, String)>| {
        let mut all = vec![(":method".to_owned(), "GET".to_owned())];
        all.extend(headers.into_iter().map(|(n, v)| (n.to_owned(), v)));
        match authorizer.authenticate(
            &RequestHead::new(all, None),
            &NoRemote,
            &mut cache,
            NOW,
            true,
        ) {
            AuthStep::Done(done) => done.outcome,
            other => panic!("{other:?}"),
        }
    };
    let multiple = Authentication::Invalid {
        provider: 0,
        reason: DenyReason::MultipleTokens,
    };
    // Two Authorization headers, a header plus a query parameter, a repeated parameter.
    assert_eq!(
        outcome(vec![
            (":path", "/".into()),
            ("authorization", format!("Bearer {good}")),
            ("authorization", format!("Bearer {other}")),
        ]),
        multiple
    );
    assert_eq!(
        outcome(vec![
            (":path", format!("/?access_token={other}")),
            ("authorization", format!("Bearer {good}"))
        ]),
        multiple
    );
    assert_eq!(
        outcome(vec![(
            ":path",
            format!("/?access_token={good}&access_token={other}")
        )]),
        multiple
    );
    // The same token twice is one token.
    assert!(matches!(
        outcome(vec![
            (":path", format!("/?access_token={good}")),
            ("authorization", format!("Bearer {good}"))
        ]),
        Authentication::Verified(_)
    ));
}
