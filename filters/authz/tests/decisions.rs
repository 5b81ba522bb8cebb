//! Rules, replies and identity headers: the decision the filter acts on, for real
//! tokens, across requirements, claim conditions, shadow rules and the failure mode.
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
    AuthStep, Authenticated, Authorizer, Decision, DenyReason, KeyLookup, Verdict,
};
use meshward_authz::cache::VerifiedCache;
use meshward_authz::config;
use meshward_authz::jwks::KeySet;
use meshward_filter_common::request::RequestHead;
use meshward_jwt_testkit::{jwks, Alg, Signer};
use serde_json::{json, Value};

const ISSUER: &str = "https://id.example.com/";
const OTHER_ISSUER: &str = "https://partner.example.com/";
const NOW: u64 = 1_800_000_000;

struct NoRemote;

impl KeyLookup for NoRemote {
    fn remote_keys(&self, _provider: usize) -> Option<Rc<KeySet>> {
        None
    }
}

struct Fixture {
    authorizer: Authorizer,
    signer: Signer,
    partner: Signer,
}

fn fixture(rules: Value, extra: Value) -> Fixture {
    let signer = Signer::generate(Alg::ES256, "main-1");
    let partner = Signer::generate(Alg::EdDSA, "partner-1");
    let mut config = json!({
        "realm": "orders",
        "providers": [
            {"name": "main", "issuer": ISSUER, "jwks": {"inline": jwks(&[&signer])},
             "claimHeaders": [
                {"claim": "sub", "header": "x-user"},
                {"claim": "roles", "header": "x-roles"},
                {"claim": "tenant.id", "header": "x-tenant"}
             ],
             "payloadHeader": "x-jwt-payload",
             "stripToken": true},
            {"name": "partner", "issuer": OTHER_ISSUER, "jwks": {"inline": jwks(&[&partner])}}
        ],
        "rules": rules
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    Fixture {
        authorizer: Authorizer::new(config::parse(config.to_string().as_bytes()).unwrap()),
        signer,
        partner,
    }
}

fn request(method: &str, path: &str, token: Option<&str>) -> RequestHead {
    let mut headers = vec![
        (":method".to_owned(), method.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.example.com".to_owned()),
    ];
    if let Some(token) = token {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    RequestHead::new(headers, None)
}

impl Fixture {
    fn token(&self, extra: Value) -> String {
        let mut claims = json!({"iss": ISSUER, "sub": "alice", "exp": NOW + 60});
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        self.signer.sign(&claims)
    }

    fn decide(&self, method: &str, path: &str, token: Option<&str>) -> Decision {
        let request = request(method, path, token);
        let mut cache = VerifiedCache::new(0);
        let authenticated: Authenticated = match self
            .authorizer
            .authenticate(&request, &NoRemote, &mut cache, NOW, true)
        {
            AuthStep::Done(done) => done,
            other => panic!("{other:?}"),
        };
        self.authorizer.decide(&request, &authenticated)
    }

    fn rule_name(&self, decision: &Decision) -> Option<&str> {
        decision
            .rule
            .map(|i| self.authorizer.config.rules[i].name.as_str())
    }
}

fn status(decision: &Decision) -> u16 {
    match &decision.verdict {
        Verdict::Allow => 200,
        Verdict::Deny(reply) => reply.status,
    }
}

fn header<'d>(decision: &'d Decision, name: &str) -> Option<&'d str> {
    match &decision.verdict {
        Verdict::Deny(reply) => reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str()),
        Verdict::Allow => None,
    }
}

fn orders_rules() -> Value {
    json!([
        {"name": "health", "action": "allow", "require": "anonymous",
         "match": {"path": {"exact": "/healthz"}}},
        {"name": "blocked-tenant", "action": "deny",
         "claims": [{"claim": "tenant.id", "equals": "banned"}]},
        {"name": "write-orders", "action": "allow", "match": {"methods": ["POST"], "path": {"prefix": "/orders"}},
         "claims": [{"claim": "scope", "contains": "orders:write"}]},
        {"name": "read-orders", "action": "allow", "match": {"methods": ["GET"], "path": {"prefix": "/orders"}}},
        {"name": "admin", "action": "allow", "match": {"path": {"prefix": "/admin"}},
         "claims": [{"claim": "role", "in": ["admin", "ops"]}]},
        {"name": "partner-reports", "action": "allow", "providers": ["partner"],
         "match": {"path": {"prefix": "/reports"}}}
    ])
}

#[test]
fn claim_conditions_allow_and_deny_as_written() {
    let f = fixture(orders_rules(), json!({}));
    let writer = f.token(json!({"scope": "orders:read orders:write"}));
    let reader = f.token(json!({"scope": "orders:read"}));
    let ops = f.token(json!({"role": "ops"}));
    let guest = f.token(json!({"role": "guest"}));

    let d = f.decide("POST", "/orders", Some(&writer));
    assert_eq!((status(&d), f.rule_name(&d)), (200, Some("write-orders")));
    let d = f.decide("POST", "/orders", Some(&reader));
    assert_eq!(
        (status(&d), d.reason),
        (403, Some(DenyReason::Rule)),
        "falls to default deny"
    );
    assert_eq!(f.rule_name(&d), None);
    let d = f.decide("GET", "/orders/1", Some(&reader));
    assert_eq!((status(&d), f.rule_name(&d)), (200, Some("read-orders")));
    let d = f.decide("GET", "/admin/users", Some(&ops));
    assert_eq!((status(&d), f.rule_name(&d)), (200, Some("admin")));
    let d = f.decide("GET", "/admin/users", Some(&guest));
    assert_eq!(status(&d), 403);
}

#[test]
fn deny_rules_apply_to_authenticated_callers_with_matching_claims() {
    let f = fixture(orders_rules(), json!({}));
    let banned = f.token(json!({"tenant": {"id": "banned"}, "scope": "orders:write"}));
    let d = f.decide("POST", "/orders", Some(&banned));
    assert_eq!((status(&d), f.rule_name(&d)), (403, Some("blocked-tenant")));
    assert_eq!(d.reason, Some(DenyReason::Rule));
    // Anonymous callers skip the deny rule (its claims cannot hold) and meet the
    // allow rule's requirement: 401, not 403.
    let d = f.decide("POST", "/orders", None);
    assert_eq!((status(&d), f.rule_name(&d)), (401, Some("write-orders")));
}

#[test]
fn replies_are_exact() {
    let f = fixture(orders_rules(), json!({}));
    let d = f.decide("GET", "/orders", None);
    assert_eq!(status(&d), 401);
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );
    assert_eq!(header(&d, "content-type"), Some("application/problem+json"));

    let expired = {
        let claims = json!({"iss": ISSUER, "sub": "alice", "exp": NOW - 3600});
        f.signer.sign(&claims)
    };
    let d = f.decide("GET", "/orders", Some(&expired));
    assert_eq!(d.reason, Some(DenyReason::Expired));
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"the token has expired\"")
    );
    let Verdict::Deny(reply) = &d.verdict else {
        unreachable!()
    };
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"type": "https://meshward.dev/problems/unauthorized", "title": "Unauthorized",
               "status": 401, "detail": "the token has expired"})
    );
    assert!(!reply.body.contains(&expired[..20]), "never echo the token");

    let d = f.decide("DELETE", "/orders", Some(&f.token(json!({}))));
    let Verdict::Deny(reply) = &d.verdict else {
        unreachable!()
    };
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"type": "https://meshward.dev/problems/forbidden", "title": "Forbidden",
               "status": 403, "detail": "the authorization policy does not allow this request"})
    );
}

#[test]
fn anonymous_rules_ignore_bad_tokens_but_keep_good_identities() {
    let f = fixture(orders_rules(), json!({}));
    let d = f.decide("GET", "/healthz", Some("garbage"));
    assert_eq!((status(&d), f.rule_name(&d)), (200, Some("health")));
    assert!(d.set_headers.is_empty());
    let d = f.decide("GET", "/healthz", Some(&f.token(json!({}))));
    assert!(d
        .set_headers
        .iter()
        .any(|(n, v)| n == "x-user" && v == "alice"));
}

#[test]
fn provider_narrowing_turns_a_foreign_token_into_401() {
    let f = fixture(orders_rules(), json!({}));
    let partner = f
        .partner
        .sign(&json!({"iss": OTHER_ISSUER, "sub": "p1", "exp": NOW + 60}));
    let d = f.decide("GET", "/reports/q3", Some(&partner));
    assert_eq!(
        (status(&d), f.rule_name(&d)),
        (200, Some("partner-reports"))
    );
    let d = f.decide("GET", "/reports/q3", Some(&f.token(json!({}))));
    assert_eq!(status(&d), 401);
    assert_eq!(d.reason, Some(DenyReason::Issuer));
}

#[test]
fn identity_headers_principal_payload_and_stripped_token() {
    let f = fixture(orders_rules(), json!({}));
    let token =
        f.token(json!({"roles": ["admin", "ops"], "tenant": {"id": 42}, "scope": "orders:read"}));
    let d = f.decide("GET", "/orders", Some(&token));
    let headers: std::collections::BTreeMap<_, _> = d.set_headers.iter().cloned().collect();
    assert_eq!(
        headers["x-meshward-principal"],
        "https://id.example.com//alice"
    );
    assert_eq!(headers["x-user"], "alice");
    assert_eq!(headers["x-roles"], "admin,ops");
    assert_eq!(headers["x-tenant"], "42");
    assert_eq!(headers["x-jwt-payload"], token.split('.').nth(1).unwrap());
    assert_eq!(d.remove_headers, ["authorization"]);
    assert_eq!(
        f.authorizer.config.owned_headers,
        [
            "x-jwt-payload",
            "x-meshward-principal",
            "x-roles",
            "x-tenant",
            "x-user"
        ]
    );
}

#[test]
fn shadow_rules_are_counted_never_enforced() {
    let rules = json!([
        {"name": "no-deletes", "action": "deny", "shadow": true, "require": "anonymous",
         "match": {"methods": ["DELETE"]}},
        {"name": "needs-admin", "action": "allow", "shadow": true,
         "match": {"path": {"prefix": "/orders"}},
         "claims": [{"claim": "role", "equals": "admin"}]},
        {"name": "everyone", "action": "allow", "require": "anonymous"}
    ]);
    let f = fixture(rules, json!({}));
    let d = f.decide("DELETE", "/orders/1", None);
    assert_eq!((status(&d), f.rule_name(&d)), (200, Some("everyone")));
    assert_eq!(d.shadow, [(0, false), (1, false)]);
    let admin = f.token(json!({"role": "admin"}));
    let d = f.decide("GET", "/orders/1", Some(&admin));
    assert_eq!(status(&d), 200);
    assert_eq!(d.shadow, [(1, true)]);
}

#[test]
fn without_rules_every_request_needs_a_valid_token() {
    let f = fixture(json!([]), json!({}));
    assert_eq!(status(&f.decide("GET", "/", None)), 401);
    assert_eq!(
        status(&f.decide("GET", "/", Some(&f.token(json!({}))))),
        200
    );
}

#[test]
fn default_allow_still_rejects_nothing_but_adds_identity() {
    let f = fixture(
        json!([{"name": "no-admin", "action": "deny", "require": "anonymous", "match": {"path": {"prefix": "/admin"}}}]),
        json!({"defaultAction": "allow"}),
    );
    assert_eq!(status(&f.decide("GET", "/admin", None)), 403);
    let d = f.decide("GET", "/x", Some(&f.token(json!({}))));
    assert_eq!(status(&d), 200);
    assert!(!d.set_headers.is_empty());
    assert_eq!(status(&f.decide("GET", "/x", None)), 200);
}

#[test]
fn failure_mode_decides_when_keys_are_unavailable() {
    let remote = |mode: &str| {
        let config = json!({
            "failureMode": mode,
            "providers": [{"name": "main", "issuer": ISSUER,
                           "jwks": {"remote": {"cluster": "jwks", "uri": "https://id.example.com/jwks"}}}]
        });
        Authorizer::new(config::parse(config.to_string().as_bytes()).unwrap())
    };
    let signer = Signer::generate(Alg::ES256, "k");
    let token = signer.sign(&json!({"iss": ISSUER, "sub": "a", "exp": NOW + 60}));
    let req = request("GET", "/", Some(&token));
    for (mode, expected, failed_open) in [("deny", 503, false), ("allow", 200, true)] {
        let authorizer = remote(mode);
        let mut cache = VerifiedCache::new(0);
        let AuthStep::Done(done) = authorizer.authenticate(&req, &NoRemote, &mut cache, NOW, false)
        else {
            panic!()
        };
        let d = authorizer.decide(&req, &done);
        assert_eq!(
            (status(&d), d.failed_open),
            (expected, failed_open),
            "{mode}"
        );
        assert!(d.set_headers.is_empty());
    }
}

#[test]
fn config_errors_name_the_path() {
    let cases = [
        (json!({"providers": []}), "providers: at least one provider"),
        (
            json!({"providers": [], "rules": [{"name": "r", "action": "allow"}]}),
            "providers: at least one provider is required (without providers every rule",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {}}]}),
            "providers[0].jwks: give exactly one of `remote` or `inline`",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {"remote": {"cluster": "c", "uri": "ftp://x"}}}]}),
            "providers[0].jwks.remote.uri: expected an absolute http(s):// URI",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {"inline": {"keys": []}}}]}),
            "providers[0].jwks.inline: the JWKS has no usable signing key",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "algorithms": ["none"], "jwks": {"inline": jwks(&[&Signer::generate(Alg::ES256, "k")])}}]}),
            "providers[0].algorithms[0]: \"none\" is not one of",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {"inline": jwks(&[&Signer::generate(Alg::ES256, "k")])}}],
                   "rules": [{"name": "r", "action": "allow", "providers": ["b"]}]}),
            "rules[0].providers[0]: no provider is named \"b\"",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {"inline": jwks(&[&Signer::generate(Alg::ES256, "k")])}}],
                   "rules": [{"name": "r", "action": "allow", "claims": [{"claim": "x", "in": ["a"], "exists": true}]}]}),
            "rules[0].claims[0]: give exactly one of",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {"inline": jwks(&[&Signer::generate(Alg::ES256, "k")])}}],
                   "rules": [{"name": "r", "action": "permit"}]}),
            "rules[0].action: unknown variant `permit`",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": "i", "jwks": {"inline": jwks(&[&Signer::generate(Alg::ES256, "k")])}}],
                   "realm": "say \"hi\""}),
            "realm: use printable ASCII",
        ),
    ];
    for (config, expected) in cases {
        let err = config::parse(config.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
    }
}

/// Found with the `config` fuzz target's properties (filters/authz/fuzz): a claim
/// header could overwrite the principal header or another claim header, and a written
/// header could be the one the token is read from (removed before it is looked for).
#[test]
fn headers_the_filter_writes_are_written_once_and_never_hide_the_token() {
    let keys = jwks(&[&Signer::generate(Alg::ES256, "k")]);
    let provider = |extra: Value| {
        let mut provider = json!({"name": "a", "issuer": "i", "jwks": {"inline": keys}});
        for (key, value) in extra.as_object().unwrap() {
            provider[key] = value.clone();
        }
        json!({"providers": [provider]})
    };
    let cases = [
        (
            provider(json!({"claimHeaders": [{"claim": "sub", "header": "X-Meshward-Principal"}]})),
            "providers[0].claimHeaders[0].header: \"x-meshward-principal\" is already written",
        ),
        (
            provider(json!({"claimHeaders": [{"claim": "sub", "header": "x-a"}, {"claim": "aud", "header": "x-a"}]})),
            "providers[0].claimHeaders[1].header: \"x-a\" is already written",
        ),
        (
            provider(json!({"claimHeaders": [{"claim": "sub", "header": "x-a"}], "payloadHeader": "x-a"})),
            "providers[0].payloadHeader: \"x-a\" is already written",
        ),
        (
            provider(json!({"claimHeaders": [{"claim": "sub", "header": ":authority"}]})),
            "providers[0].claimHeaders[0].header: \":authority\": a pseudo-header",
        ),
        (
            provider(json!({"claimHeaders": [{"claim": "sub", "header": "Authorization"}]})),
            "providers[0].claimHeaders[0].header: \"authorization\" is where a provider reads its token",
        ),
        (
            provider(json!({"from": [{"cookie": "session"}], "payloadHeader": "cookie"})),
            "providers[0].payloadHeader: \"cookie\" is where a provider reads its token",
        ),
        (
            {
                let mut config = provider(json!({"from": [{"header": "x-token"}]}));
                config["principalHeader"] = json!("x-token");
                config
            },
            "principalHeader: \"x-token\" is where a provider reads its token",
        ),
    ];
    for (config, expected) in cases {
        let err = config::parse(config.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
    }
    // Two providers may write the same claim header: one token, one provider.
    let two = json!({"providers": [
        {"name": "a", "issuer": "i", "jwks": {"inline": keys}, "claimHeaders": [{"claim": "sub", "header": "x-user"}]},
        {"name": "b", "issuer": "j", "jwks": {"inline": keys}, "claimHeaders": [{"claim": "sub", "header": "x-user"}]}
    ]});
    assert!(config::parse(two.to_string().as_bytes()).is_ok());
}

#[test]
fn failing_open_unlocks_only_rules_that_would_accept_the_unavailable_provider() {
    // `partner`'s keys are remote and down; `internal` is healthy. A token whose
    // (unverified) `iss` names `partner` must not open routes reserved to `internal`.
    let internal = Signer::generate(Alg::ES256, "i");
    let config = json!({
        "failureMode": "allow",
        "providers": [
            {"name": "internal", "issuer": ISSUER, "jwks": {"inline": jwks(&[&internal])}},
            {"name": "partner", "issuer": OTHER_ISSUER,
             "jwks": {"remote": {"cluster": "jwks", "uri": "https://partner.example.com/jwks"}}}
        ],
        "rules": [
            {"name": "admin", "action": "allow", "providers": ["internal"], "match": {"path": {"prefix": "/admin"}},
             "claims": [{"claim": "role", "in": ["admin"]}]},
            {"name": "no-exports", "action": "deny", "require": "anonymous", "match": {"path": {"prefix": "/exports"}}},
            {"name": "reports", "action": "allow", "providers": ["partner"], "match": {"path": {"prefix": "/reports"}}},
            {"name": "scoped", "action": "allow", "match": {"path": {"prefix": "/scoped"}},
             "claims": [{"claim": "scope", "contains": "read"}]}
        ]
    });
    let authorizer = Authorizer::new(config::parse(config.to_string().as_bytes()).unwrap());
    let forged = Signer::generate(Alg::ES256, "x").sign(&json!({"iss": OTHER_ISSUER, "sub": "eve", "role": "admin", "scope": "read", "exp": NOW + 60}));
    let decide = |path: &str| {
        let req = request("GET", path, Some(&forged));
        let mut cache = VerifiedCache::new(0);
        let AuthStep::Done(done) = authorizer.authenticate(&req, &NoRemote, &mut cache, NOW, false)
        else {
            panic!()
        };
        authorizer.decide(&req, &done)
    };
    let d = decide("/admin/users");
    assert_eq!(status(&d), 503, "an internal-only route stays closed");
    let d = decide("/exports/all");
    assert_eq!(status(&d), 403, "deny rules still apply");
    let d = decide("/scoped/x");
    assert_eq!(
        (status(&d), d.reason),
        (403, Some(DenyReason::Rule)),
        "claims cannot be checked: the rule does not apply"
    );
    let d = decide("/reports/q3");
    assert_eq!(
        (status(&d), d.failed_open),
        (200, true),
        "the partner route fails open"
    );
    assert!(
        d.set_headers.is_empty(),
        "no identity from an unverified token"
    );
}

#[test]
fn two_providers_for_one_issuer_and_location_are_a_configuration_error() {
    let key = jwks(&[&Signer::generate(Alg::ES256, "k")]);
    let config = json!({"providers": [
        {"name": "a", "issuer": ISSUER, "audiences": ["x"], "jwks": {"inline": key}},
        {"name": "b", "issuer": ISSUER, "audiences": ["y"], "jwks": {"inline": key}}
    ]});
    let err = config::parse(config.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("providers[1].issuer: provider \"a\" already verifies issuer"),
        "{err}"
    );
    // Different locations are fine.
    let config = json!({"providers": [
        {"name": "a", "issuer": ISSUER, "jwks": {"inline": key}},
        {"name": "b", "issuer": ISSUER, "from": [{"header": "x-token"}], "jwks": {"inline": key}}
    ]});
    assert!(config::parse(config.to_string().as_bytes()).is_ok());
}

#[test]
fn several_tokens_get_400_invalid_request() {
    let f = fixture(json!([]), json!({}));
    let token = f.token(json!({}));
    let other = f.token(json!({"sub": "bob"}));
    let req = RequestHead::new(
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/".into()),
            ("authorization".into(), format!("Bearer {token}")),
            ("authorization".into(), format!("Bearer {other}")),
        ],
        None,
    );
    let mut cache = VerifiedCache::new(0);
    let AuthStep::Done(done) = f
        .authorizer
        .authenticate(&req, &NoRemote, &mut cache, NOW, true)
    else {
        panic!()
    };
    let d = f.authorizer.decide(&req, &done);
    assert_eq!(status(&d), 400);
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"orders\", error=\"invalid_request\", error_description=\"the request carries more than one token\"")
    );
}

#[test]
fn without_providers_anonymous_rules_pass_everything() {
    let config = json!({"providers": [], "rules": [{"name": "no-policy", "action": "allow", "require": "anonymous"}]});
    let authorizer = Authorizer::new(config::parse(config.to_string().as_bytes()).unwrap());
    let req = request("GET", "/", Some("whatever"));
    let mut cache = VerifiedCache::new(0);
    let AuthStep::Done(done) = authorizer.authenticate(&req, &NoRemote, &mut cache, NOW, true)
    else {
        panic!()
    };
    assert_eq!(status(&authorizer.decide(&req, &done)), 200);
}
