//! The authz filter in a real Envoy: tokens signed by an independent signer
//! (meshward-jwt-testkit) against inline key sets and a remote JWKS endpoint the test
//! controls (swapped, failing, hung, stopped). Identity headers and their spoof-proofing,
//! key rotation with exactly one re-fetch, last good keys through an outage, failure
//! modes, exact RFC 6750 challenges and problem+json bodies, claim rules with a shadow
//! rule, the verified-token cache, requests paused while keys load (and not stranded
//! when the client that triggered the fetch goes away), fetch timeouts, an unknown
//! cluster, config rejection. Every test runs twice, against the filter's own module
//! (`separate::…`) and against the bundle `meshward_bundle` with only its `authz`
//! section (`bundle::…`), with the same assertions.
//!
//! Every local reply costs about a second here: the harness client reads to EOF and
//! Envoy holds a connection it closes for `delayed_close_timeout` (1 s).

use std::time::{Duration, Instant};

use meshward_e2e::stats::prometheus_value;
use meshward_e2e::{
    Bootstrap, Envoy, EnvoyOptions, JwksServer, Packaging, RecordedRequest, RecordingUpstream,
    Request, Response,
};
use meshward_jwt_testkit::{jwks, now_secs, Alg, Signer};
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "orders-api";
const REALM: &str = "orders";
const PROBLEM_JSON: &str = "application/problem+json";
/// The headers the filter sets for the `main` provider (and the principal): a client
/// must never supply one.
const MAIN_OWNED: [&str; 4] = ["x-meshward-principal", "x-user", "x-scope", "x-roles"];

struct Authz {
    upstream: RecordingUpstream,
    envoy: Envoy,
}

/// Envoy with the authz filter (packaged as `packaging` says) configured by `config` in
/// front of a recording upstream, plus a `jwks` cluster pointing at `jwks_port` when
/// given.
fn start(packaging: Packaging, config: &Value, jwks_port: Option<u16>, workers: u32) -> Authz {
    let upstream = RecordingUpstream::start().expect("upstream");
    let mut bootstrap = Bootstrap::new(upstream.port());
    if let Some(port) = jwks_port {
        bootstrap = bootstrap.cluster("jwks", port);
    }
    let bootstrap = bootstrap
        .packaged_filter(packaging, "meshward_authz", &config.to_string())
        .expect("module built (cargo xtask build-wasm)");
    let envoy = Envoy::start(
        &bootstrap,
        &EnvoyOptions {
            concurrency: workers,
            ..EnvoyOptions::default()
        },
    )
    .expect("envoy starts");
    Authz { upstream, envoy }
}

impl Authz {
    fn send(&self, request: Request) -> Response {
        request.send(self.envoy.port()).expect("request completes")
    }

    /// `wasmcustom.meshward.authz.<name>`, 0 when absent.
    fn counter(&self, name: &str) -> u64 {
        self.envoy
            .counter(&format!("wasmcustom.meshward.authz.{name}"))
    }

    /// The request the upstream received last.
    fn last_upstream_request(&self) -> RecordedRequest {
        self.upstream
            .requests()
            .pop()
            .expect("a request reached the upstream")
    }

    /// Polls (bounded) until the counter reaches `at_least`; its last value.
    fn wait_counter(&self, name: &str, at_least: u64, timeout: Duration) -> u64 {
        let reached = self
            .envoy
            .eventually(timeout, |_| self.counter(name) >= at_least);
        let value = self.counter(name);
        assert!(
            reached,
            "{name} stayed at {value} (< {at_least}) for {timeout:?}"
        );
        value
    }
}

/// The standard claims (issuer, audience, `sub`, valid for 10 minutes) plus `extra`.
fn claims(sub: &str, extra: Value) -> Value {
    let now = now_secs();
    let mut claims =
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600});
    if let (Some(all), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (name, value) in extra {
            all.insert(name.clone(), value.clone());
        }
    }
    claims
}

fn bearer(path: &str, token: &str) -> Request {
    Request::get(path).header("authorization", &format!("Bearer {token}"))
}

/// Adds forged copies of every identity header (twice for `x-user`, in two spellings),
/// `x-partner` included (owned only where the `partner` provider is configured).
fn with_forged_identity(mut request: Request) -> Request {
    for (name, value) in [
        ("x-meshward-principal", "https://issuer.test/root"),
        ("x-user", "root"),
        ("X-User", "root-again"),
        ("x-scope", "admin:all"),
        ("x-roles", "admin"),
        ("x-partner", "forged"),
    ] {
        request = request.header(name, value);
    }
    request
}

fn values<'r>(request: &'r RecordedRequest, name: &str) -> Vec<&'r str> {
    request
        .headers
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .collect()
}

fn assert_no_identity(request: &RecordedRequest, owned: &[&str]) {
    for name in owned {
        assert_eq!(
            values(request, name),
            Vec::<&str>::new(),
            "{name} must not reach the upstream: {:?}",
            request.headers
        );
    }
}

/// The response is an RFC 9457 problem with exactly these members.
fn assert_problem(response: &Response, status: u16, slug: &str, title: &str, detail: &str) {
    assert_eq!(response.status, status, "{}", response.body_text());
    assert_eq!(response.header("content-type"), Some(PROBLEM_JSON));
    assert_eq!(
        response.json().expect("problem+json body"),
        json!({
            "type": format!("https://meshward.dev/problems/{slug}"),
            "title": title,
            "status": status,
            "detail": detail,
        })
    );
}

fn remote_jwks(cache: &str, retry: &str, unknown_kid: &str) -> Value {
    json!({"remote": {
        "cluster": "jwks",
        "uri": "http://jwks.test/.well-known/jwks.json",
        "cacheDuration": cache,
        "retryInterval": retry,
        "unknownKidRefetchInterval": unknown_kid
    }})
}

/// The provider every test uses: remote or inline keys, three claim headers.
fn main_provider(keys: Value) -> Value {
    json!({
        "name": "main",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": keys,
        "claimHeaders": [
            {"claim": "sub", "header": "x-user"},
            {"claim": "scope", "header": "x-scope"},
            {"claim": "roles", "header": "x-roles"}
        ]
    })
}

/// Fetch count once no fetch has arrived for 300 ms (the start-up loads of every VM
/// are done), polled for at most 10 s.
fn settled_fetches(server: &JwksServer) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (server.fetches(), Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = server.fetches();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(300) {
            return now;
        }
    }
    panic!("JWKS fetches kept arriving for 10 s: {}", server.fetches());
}

fn verified_tokens_reach_the_upstream_with_identity_headers_and_forged_ones_never_do(
    packaging: Packaging,
) {
    let rsa = Signer::generate_in_slot(Alg::RS256, "rsa-1", 0);
    let ec = Signer::generate(Alg::ES256, "ec-1");
    let partner = Signer::generate(Alg::EdDSA, "partner-1");
    let server = JwksServer::start(&jwks(&[&rsa, &ec])).unwrap();
    let config = json!({
        "realm": REALM,
        "providers": [
            main_provider(remote_jwks("300s", "1s", "30s")),
            {
                "name": "partner",
                "issuer": "https://partner.test",
                "jwks": {"inline": jwks(&[&partner])},
                "claimHeaders": [{"claim": "sub", "header": "x-partner"}],
                "stripToken": true
            }
        ],
        "rules": [
            {"name": "public", "action": "allow", "match": {"path": {"prefix": "/public"}}, "require": "anonymous"},
            {"name": "closed", "action": "deny", "match": {"path": {"prefix": "/closed"}}},
            {"name": "api", "action": "allow"}
        ]
    });
    let authz = start(packaging, &config, Some(server.port()), 2);

    // RS256, remote keys: claims as headers, an array claim joined by commas, the
    // principal, the token itself forwarded (no stripToken), forged copies gone.
    let alice = rsa.sign(&claims(
        "alice",
        json!({"scope": "orders:read orders:write", "roles": ["admin", "ops"]}),
    ));
    let response = authz.send(with_forged_identity(bearer("/orders", &alice)));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = authz.last_upstream_request();
    assert_eq!(values(&seen, "x-user"), ["alice"], "{:?}", seen.headers);
    assert_eq!(values(&seen, "x-scope"), ["orders:read orders:write"]);
    assert_eq!(values(&seen, "x-roles"), ["admin,ops"]);
    assert_eq!(
        values(&seen, "x-meshward-principal"),
        ["https://issuer.test/alice"]
    );
    assert_eq!(values(&seen, "x-partner"), Vec::<&str>::new());
    let expected_authorization = format!("Bearer {alice}");
    assert_eq!(
        values(&seen, "authorization"),
        [expected_authorization.as_str()]
    );

    // ES256 from the same remote set; claims the token lacks give no header at all.
    let bob = ec.sign(&claims("bob", json!({"scope": "orders:read"})));
    let response = authz.send(with_forged_identity(bearer("/orders", &bob)));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = authz.last_upstream_request();
    assert_eq!(values(&seen, "x-user"), ["bob"]);
    assert_eq!(values(&seen, "x-scope"), ["orders:read"]);
    assert_eq!(values(&seen, "x-roles"), Vec::<&str>::new());
    assert_eq!(
        values(&seen, "x-meshward-principal"),
        ["https://issuer.test/bob"]
    );

    // EdDSA, inline keys, stripToken: the upstream never sees the token.
    let partner_token = partner.sign(&json!({
        "iss": "https://partner.test", "sub": "p-1", "exp": now_secs() + 600
    }));
    let response = authz.send(with_forged_identity(bearer("/orders", &partner_token)));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = authz.last_upstream_request();
    assert_eq!(values(&seen, "authorization"), Vec::<&str>::new());
    assert_eq!(values(&seen, "x-partner"), ["p-1"]);
    assert_eq!(
        values(&seen, "x-meshward-principal"),
        ["https://partner.test/p-1"]
    );
    assert_eq!(values(&seen, "x-user"), Vec::<&str>::new());

    // Anonymous route without a token, and with a forged one (alice's signature over
    // mallory's claims): through, with no identity at all.
    let all_owned = [&MAIN_OWNED[..], &["x-partner"]].concat();
    let response = authz.send(with_forged_identity(Request::get("/public/menu")));
    assert_eq!(response.status, 200);
    assert_no_identity(&authz.last_upstream_request(), &all_owned);
    let mallory = rsa.sign(&claims("mallory", json!({"roles": ["admin"]})));
    let segments = |token: &str| token.split('.').map(str::to_owned).collect::<Vec<_>>();
    let (a, m) = (segments(&alice), segments(&mallory));
    let spliced = format!("{}.{}.{}", a[0], m[1], a[2]);
    let response = authz.send(with_forged_identity(bearer("/public/menu", &spliced)));
    assert_eq!(response.status, 200);
    assert_no_identity(&authz.last_upstream_request(), &all_owned);
    // The same forgery on a route that needs a token.
    let response = authz.send(bearer("/orders", &spliced));
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(
            r#"Bearer realm="orders", error="invalid_token", error_description="the token's signature is invalid""#
        )
    );
    // An anonymous route still gets the identity of a valid token.
    let response = authz.send(with_forged_identity(bearer("/public/menu", &bob)));
    assert_eq!(response.status, 200);
    assert_eq!(values(&authz.last_upstream_request(), "x-user"), ["bob"]);

    // A denied request never reaches the upstream, forged headers or not.
    let hits = authz.upstream.hits();
    let response = authz.send(with_forged_identity(bearer("/closed", &alice)));
    assert_problem(
        &response,
        403,
        "forbidden",
        "Forbidden",
        "the authorization policy does not allow this request",
    );
    assert_eq!(authz.upstream.hits(), hits);

    assert_eq!(authz.upstream.hits(), 6);
    for seen in authz.upstream.requests() {
        for forged in ["root", "root-again", "admin:all", "forged"] {
            assert!(
                !seen.headers.iter().any(|(_, value)| value == forged),
                "forged value {forged:?} reached the upstream: {:?}",
                seen.headers
            );
        }
    }
    assert_eq!(authz.counter("provider.main.rejected.signature"), 2);
    assert_eq!(authz.counter("provider.partner.verified"), 1);
    assert_eq!(authz.counter("rule.closed.denied"), 1);
    assert_eq!(authz.counter("rule.public.allowed"), 3);
    assert_eq!(authz.counter("rule.api.allowed"), 3);
    assert_eq!(authz.counter("denied.signature"), 1);
    assert_eq!(authz.counter("allowed"), 6);
}

fn a_rotated_key_is_accepted_after_exactly_one_refetch(packaging: Packaging) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let b = Signer::generate_in_slot(Alg::RS256, "key-b", 1);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    let config = json!({
        "realm": REALM,
        "providers": [main_provider(remote_jwks("300s", "1s", "30s"))]
    });
    // One worker: re-fetches are per worker VM, so one worker makes the count exact.
    let authz = start(packaging, &config, Some(server.port()), 1);

    let alice = a.sign(&claims("alice", json!({})));
    let response = authz.send(bearer("/", &alice));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let before = settled_fetches(&server);
    assert!(before >= 1);

    server.set_document(&jwks(&[&b]));
    let bob = bearer("/", &b.sign(&claims("bob", json!({}))));
    let started = Instant::now();
    let response = authz.send(bob);
    assert_eq!(response.status, 200, "{}", response.body_text());
    // The root dispatches a fetch a request asks for at once (a few ms here), not on
    // its next regular 500 ms tick.
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "the re-fetch started at once: {:?}",
        started.elapsed()
    );
    assert_eq!(values(&authz.last_upstream_request(), "x-user"), ["bob"]);
    assert_eq!(
        server.fetches(),
        before + 1,
        "exactly one re-fetch for the new kid"
    );

    // The new key is now known: no further fetch.
    let response = authz.send(bearer("/", &b.sign(&claims("carol", json!({})))));
    assert_eq!(response.status, 200);
    // The removed key and a kid nobody published are refused without re-fetching
    // (at most one unknown-kid re-fetch per unknownKidRefetchInterval).
    let unknown_kid = r#"Bearer realm="orders", error="invalid_token", error_description="the token's signing key is unknown""#;
    let response = authz.send(bearer("/", &a.sign(&claims("dave", json!({})))));
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some(unknown_kid));
    let stranger = Signer::generate_in_slot(Alg::RS256, "key-c", 2);
    let response = authz.send(bearer("/", &stranger.sign(&claims("eve", json!({})))));
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some(unknown_kid));
    // Alice's token was verified (and cached) with key A before A was removed: the
    // refresh that dropped A cleared the cache, so it is refused like any A token.
    let response = authz.send(bearer("/", &alice));
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some(unknown_kid));
    assert_eq!(server.fetches(), before + 1);
    assert_eq!(authz.counter("provider.main.rejected.unknown_kid"), 3);
    assert_eq!(authz.counter("provider.main.jwks_fetch_failed"), 0);
    assert!(server
        .requests()
        .iter()
        .all(|r| r.method == "GET" && r.path == "/.well-known/jwks.json"));
    assert_eq!(
        server.requests()[0].header("host"),
        Some("jwks.test"),
        "the URI's authority"
    );
}

fn the_last_good_keys_stay_in_force_when_the_jwks_endpoint_goes_down(packaging: Packaging) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    // Refreshes are due 1.8 s after each load and retried every second.
    let config = json!({
        "realm": REALM,
        "providers": [main_provider(remote_jwks("2s", "1s", "30s"))]
    });
    let authz = start(packaging, &config, Some(server.port()), 2);
    let response = authz.send(bearer("/", &a.sign(&claims("u0", json!({})))));
    assert_eq!(response.status, 200, "{}", response.body_text());

    server.stop();
    // Every VM has failed a refresh at least once by the time four failures are counted.
    authz.wait_counter(
        "provider.main.jwks_fetch_failed",
        4,
        Duration::from_secs(15),
    );
    for i in 1..=6 {
        let sub = format!("u{i}");
        let response = authz.send(bearer("/", &a.sign(&claims(&sub, json!({})))));
        assert_eq!(response.status, 200, "{}", response.body_text());
        assert_eq!(
            values(&authz.last_upstream_request(), "x-user"),
            [sub.as_str()]
        );
    }
    // An unknown kid is still an invalid token (401), not an outage (503).
    let stranger = Signer::generate_in_slot(Alg::RS256, "key-c", 2);
    let response = authz.send(bearer("/", &stranger.sign(&claims("eve", json!({})))));
    assert_eq!(response.status, 401);
    assert_eq!(authz.counter("provider.main.rejected.keys_unavailable"), 0);
    assert_eq!(authz.counter("provider.main.verified"), 7);
}

fn failure_mode_deny_answers_503_while_the_keys_cannot_be_loaded_then_recovers(
    packaging: Packaging,
) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    server.set_failing(true);
    let config = json!({
        "realm": REALM,
        "failureMode": "deny",
        "providers": [main_provider(remote_jwks("300s", "1s", "30s"))]
    });
    let authz = start(packaging, &config, Some(server.port()), 2);
    let token = a.sign(&claims("alice", json!({})));

    let response = authz.send(bearer("/", &token));
    assert_problem(
        &response,
        503,
        "authentication-unavailable",
        "Service Unavailable",
        "the token cannot be verified now: the issuer's signing keys are unavailable",
    );
    // The provider's retryInterval (1 s): when the next fetch may succeed.
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("www-authenticate"), None);
    assert_eq!(authz.upstream.hits(), 0);
    assert!(server.fetches() >= 1);
    assert!(authz.counter("provider.main.jwks_fetch_failed") >= 1);
    assert_eq!(authz.counter("provider.main.jwks_fetch_ok"), 0);
    assert_eq!(authz.counter("denied.keys_unavailable"), 1);
    assert_eq!(authz.counter("provider.main.rejected.keys_unavailable"), 1);
    // A request without a token needs no keys: the usual 401.
    assert_eq!(authz.send(Request::get("/")).status, 401);

    // The endpoint comes back: the retry (every second) loads the keys.
    server.set_failing(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        let response = authz.send(bearer("/", &token));
        if response.status == 200 || Instant::now() >= deadline {
            break response;
        }
        assert_eq!(response.status, 503, "{}", response.body_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recovered.status, 200, "{}", recovered.body_text());
    assert_eq!(values(&authz.last_upstream_request(), "x-user"), ["alice"]);
    assert!(authz.counter("provider.main.jwks_fetch_ok") >= 1);
}

fn failure_mode_allow_lets_requests_through_without_identity_when_keys_cannot_be_loaded(
    packaging: Packaging,
) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    server.stop(); // connection refused from the start
    let config = json!({
        "realm": REALM,
        "failureMode": "allow",
        "providers": [main_provider(remote_jwks("300s", "1s", "30s"))]
    });
    let authz = start(packaging, &config, Some(server.port()), 2);

    let token = a.sign(&claims("alice", json!({"scope": "orders:write"})));
    let response = authz.send(with_forged_identity(bearer("/", &token)));
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_no_identity(&authz.last_upstream_request(), &MAIN_OWNED);
    assert_eq!(authz.counter("failed_open"), 1);
    assert!(authz.counter("provider.main.jwks_fetch_failed") >= 1);
    assert_eq!(authz.counter("provider.main.verified"), 0);

    // Failing open is about keys only: no token or a malformed one is still a 401.
    let response = authz.send(with_forged_identity(Request::get("/")));
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="orders""#)
    );
    let response = authz.send(bearer("/", "not.a-token"));
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(
            r#"Bearer realm="orders", error="invalid_token", error_description="the token is malformed""#
        )
    );
    assert_eq!(authz.upstream.hits(), 1);
    assert_eq!(server.fetches(), 0);
}

fn challenges_and_problem_bodies_are_exact(packaging: Packaging) {
    let key = Signer::generate(Alg::ES256, "ec-1");
    let config = json!({
        "realm": REALM,
        "providers": [main_provider(json!({"inline": jwks(&[&key])}))],
        "rules": [{
            "name": "staff-only",
            "action": "allow",
            "match": {"path": {"prefix": "/staff"}},
            "claims": [{"claim": "role", "equals": "staff"}]
        }]
    });
    let authz = start(packaging, &config, None, 2);

    // RFC 6750 §3.1: no credentials, no error code.
    let response = authz.send(Request::get("/staff/rota"));
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="orders""#)
    );
    assert_problem(
        &response,
        401,
        "unauthorized",
        "Unauthorized",
        "a bearer token is required",
    );

    let now = now_secs();
    let expired = key.sign(&claims(
        "alice",
        json!({"role": "staff", "iat": now - 7200, "exp": now - 3600}),
    ));
    let response = authz.send(bearer("/staff/rota", &expired));
    assert_eq!(
        response.header("www-authenticate"),
        Some(
            r#"Bearer realm="orders", error="invalid_token", error_description="the token has expired""#
        )
    );
    assert_problem(
        &response,
        401,
        "unauthorized",
        "Unauthorized",
        "the token has expired",
    );

    let other_audience = key.sign(&claims("alice", json!({"role": "staff", "aud": "billing"})));
    let response = authz.send(bearer("/staff/rota", &other_audience));
    assert_eq!(
        response.header("www-authenticate"),
        Some(
            r#"Bearer realm="orders", error="invalid_token", error_description="the token's audience is not accepted""#
        )
    );
    assert_problem(
        &response,
        401,
        "unauthorized",
        "Unauthorized",
        "the token's audience is not accepted",
    );

    // A valid token the rules do not allow: 403, no challenge.
    let guest = key.sign(&claims("bob", json!({"role": "guest"})));
    let response = authz.send(bearer("/staff/rota", &guest));
    assert_problem(
        &response,
        403,
        "forbidden",
        "Forbidden",
        "the authorization policy does not allow this request",
    );
    assert_eq!(response.header("www-authenticate"), None);

    let staff = key.sign(&claims("carol", json!({"role": "staff"})));
    assert_eq!(authz.send(bearer("/staff/rota", &staff)).status, 200);
    assert_eq!(authz.upstream.hits(), 1);

    assert_eq!(authz.counter("denied.missing"), 1);
    assert_eq!(authz.counter("denied.expired"), 1);
    assert_eq!(authz.counter("denied.audience"), 1);
    assert_eq!(authz.counter("denied.rule"), 1);
    assert_eq!(authz.counter("provider.main.rejected.expired"), 1);
    assert_eq!(authz.counter("rule.staff-only.allowed"), 1);
    assert_eq!(authz.counter("default_action.denied"), 1);
    let prometheus = authz.envoy.prometheus().unwrap();
    for (series, value) in [
        (r#"meshward_authz_denied{meshward_reason="expired"}"#, 1.0),
        (r#"meshward_authz_denied{meshward_reason="rule"}"#, 1.0),
        (
            r#"meshward_authz_provider_rejected{meshward_provider="main",meshward_reason="expired"}"#,
            1.0,
        ),
        (
            r#"meshward_authz_provider_verified{meshward_provider="main"}"#,
            2.0,
        ),
        (
            r#"meshward_authz_rule_allowed{meshward_rule="staff-only"}"#,
            1.0,
        ),
    ] {
        assert_eq!(
            prometheus_value(&prometheus, series),
            Some(value),
            "{series} in:\n{prometheus}"
        );
    }
}

fn claim_rules_decide_in_order_and_a_shadow_rule_only_counts(packaging: Packaging) {
    let key = Signer::generate(Alg::ES256, "ec-1");
    let config = json!({
        "realm": REALM,
        "defaultAction": "deny",
        "providers": [main_provider(json!({"inline": jwks(&[&key])}))],
        "rules": [
            {"name": "watch-mallory", "action": "deny", "shadow": true,
             "claims": [{"claim": "sub", "equals": "mallory"}]},
            {"name": "no-deletes", "action": "deny", "match": {"methods": ["DELETE"]}},
            {"name": "orders-write", "action": "allow",
             "match": {"path": {"prefix": "/orders"}, "methods": ["POST"]},
             "claims": [{"claim": "scope", "contains": "orders:write"}]},
            {"name": "admin", "action": "allow", "match": {"path": {"prefix": "/admin"}},
             "claims": [{"claim": "role", "in": ["admin", "ops"]}]}
        ]
    });
    let authz = start(packaging, &config, None, 2);
    let token = |sub: &str, extra: Value| key.sign(&claims(sub, extra));
    let post = |path: &str, token: &str| {
        Request::post(path, b"{}").header("authorization", &format!("Bearer {token}"))
    };
    let delete = |path: &str, token: &str| {
        let mut request = bearer(path, token);
        request.method = "DELETE".into();
        request
    };
    let writer = token("alice", json!({"scope": "orders:read orders:write"}));
    let reader = token("bob", json!({"scope": "orders:read"}));
    let mallory = token("mallory", json!({"scope": "orders:write", "role": "admin"}));

    let cases: Vec<(&str, Request, u16)> = vec![
        ("write scope posts", post("/orders", &writer), 200),
        ("read scope cannot post", post("/orders", &reader), 403),
        ("no rule for GET /orders", bearer("/orders", &writer), 403),
        (
            "role admin",
            bearer("/admin/users", &token("carol", json!({"role": "admin"}))),
            200,
        ),
        (
            "role ops",
            bearer("/admin/users", &token("dan", json!({"role": "ops"}))),
            200,
        ),
        (
            "one of the roles in an array",
            bearer(
                "/admin/users",
                &token("frank", json!({"role": ["viewer", "ops"]})),
            ),
            200,
        ),
        (
            "role user",
            bearer("/admin/users", &token("erin", json!({"role": "user"}))),
            403,
        ),
        ("admin needs a token", Request::get("/admin/users"), 401),
        ("shadow deny does not block", post("/orders", &mallory), 200),
        (
            "shadow deny does not block admin",
            bearer("/admin/users", &mallory),
            200,
        ),
        ("deny rule", delete("/orders/1", &mallory), 403),
        (
            "deny rule beats admin",
            delete("/admin/users/1", &token("carol", json!({"role": "admin"}))),
            403,
        ),
    ];
    for (what, request, expected) in cases {
        let response = authz.send(request);
        assert_eq!(
            response.status,
            expected,
            "{what}: {}",
            response.body_text()
        );
    }
    assert_eq!(authz.upstream.hits(), 6);
    assert_eq!(authz.counter("rule.watch-mallory.shadow_denied"), 3);
    assert_eq!(authz.counter("rule.watch-mallory.denied"), 0);
    assert_eq!(authz.counter("rule.orders-write.allowed"), 2);
    assert_eq!(authz.counter("rule.admin.allowed"), 4);
    assert_eq!(authz.counter("rule.no-deletes.denied"), 2);
    assert_eq!(authz.counter("default_action.denied"), 3);
    assert_eq!(authz.counter("denied.rule"), 5);
    assert_eq!(authz.counter("denied.missing"), 1);
    let prometheus = authz.envoy.prometheus().unwrap();
    assert_eq!(
        prometheus_value(
            &prometheus,
            r#"meshward_authz_rule_shadow_denied{meshward_rule="watch-mallory"}"#
        ),
        Some(3.0),
        "{prometheus}"
    );
}

fn repeated_tokens_are_served_from_the_verified_token_cache_until_they_expire(
    packaging: Packaging,
) {
    let key = Signer::generate(Alg::ES256, "ec-1");
    let mut provider = main_provider(json!({"inline": jwks(&[&key])}));
    provider["clockSkew"] = json!("1s");
    let config = json!({"realm": REALM, "providers": [provider]});
    let authz = start(packaging, &config, None, 2);

    let token = key.sign(&claims("alice", json!({})));
    for _ in 0..10 {
        assert_eq!(authz.send(bearer("/", &token)).status, 200);
    }
    assert_eq!(authz.counter("provider.main.verified"), 10);
    // One cache per worker: at most one miss on each of the two.
    let hits = authz.counter("provider.main.cache_hits");
    assert!((8..=9).contains(&hits), "cache hits {hits}");
    let other = key.sign(&claims("bob", json!({})));
    assert_eq!(authz.send(bearer("/", &other)).status, 200);
    assert_eq!(authz.counter("provider.main.cache_hits"), hits);
    let prometheus = authz.envoy.prometheus().unwrap();
    assert_eq!(
        prometheus_value(
            &prometheus,
            r#"meshward_authz_provider_cache_hits{meshward_provider="main"}"#
        ),
        Some(hits as f64),
        "{prometheus}"
    );

    // A cached verification never outlives the token's `exp`.
    let short = key.sign(&claims("carol", json!({"exp": now_secs() + 2})));
    assert_eq!(authz.send(bearer("/", &short)).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let response = authz.send(bearer("/", &short));
        if response.status != 200 || Instant::now() >= deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(expired.status, 401, "{}", expired.body_text());
    assert_eq!(
        expired.header("www-authenticate"),
        Some(
            r#"Bearer realm="orders", error="invalid_token", error_description="the token has expired""#
        )
    );
}

fn requests_arriving_while_the_keys_load_wait_for_them(packaging: Packaging) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    server.hold(); // the start-up loads reach the server but get no answer yet
    let config = json!({
        "realm": REALM,
        "providers": [main_provider(remote_jwks("300s", "1s", "30s"))]
    });
    let authz = start(packaging, &config, Some(server.port()), 2);
    assert!(server.wait_for_fetches(2, Duration::from_secs(10)));

    let port = authz.envoy.port();
    let request = with_forged_identity(bearer("/", &a.sign(&claims("alice", json!({})))));
    let pending = std::thread::spawn(move || request.send(port));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!pending.is_finished(), "the request waits for the keys");
    assert_eq!(authz.upstream.hits(), 0);
    let fetches = server.fetches();

    server.release();
    let response = pending.join().unwrap().expect("request completes");
    assert_eq!(response.status, 200, "{}", response.body_text());
    // Finished by the root acting as the request: its own identity, no forged one.
    let seen = authz.last_upstream_request();
    assert_eq!(values(&seen, "x-user"), ["alice"]);
    assert_eq!(
        values(&seen, "x-meshward-principal"),
        ["https://issuer.test/alice"]
    );
    assert_eq!(values(&seen, "x-scope"), Vec::<&str>::new());
    assert_eq!(
        server.fetches(),
        fetches,
        "the waiting request started no fetch of its own"
    );
}

fn a_hung_jwks_endpoint_answers_waiting_requests_after_the_fetch_timeout(packaging: Packaging) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    server.hold();
    let mut keys = remote_jwks("300s", "1s", "30s");
    keys["remote"]["timeout"] = json!("1s");
    let config = json!({
        "realm": REALM,
        "failureMode": "deny",
        "providers": [main_provider(keys)]
    });
    let authz = start(packaging, &config, Some(server.port()), 2);
    let token = a.sign(&claims("alice", json!({})));

    let started = Instant::now();
    let response = authz.send(bearer("/", &token));
    assert_eq!(response.status, 503, "{}", response.body_text());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered within the fetch timeout and a tick: {:?}",
        started.elapsed()
    );
    assert!(authz.counter("provider.main.jwks_fetch_failed") >= 1);

    server.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        let response = authz.send(bearer("/", &token));
        if response.status == 200 || Instant::now() >= deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recovered.status, 200, "{}", recovered.body_text());
}

fn envoy_refuses_an_invalid_config_and_the_error_names_the_json_path(packaging: Packaging) {
    let upstream = RecordingUpstream::start().unwrap();
    let key = Signer::generate(Alg::ES256, "ec-1");
    let cases = [
        (
            json!({"providers": [{"name": "main", "issuer": ISSUER,
                "jwks": {"remote": {"cluster": "jwks", "uri": "jwks.test/keys"}}}]}),
            "providers[0].jwks.remote.uri:",
        ),
        (
            json!({"providers": [{"name": "main", "issuer": ISSUER, "jwks": {"inline": jwks(&[&key])}}],
                "rules": [{"name": "r", "action": "allow", "providers": ["other"]}]}),
            "rules[0].providers[0]:",
        ),
    ];
    // The bundle reports the same paths under its section (`authz.providers[0]…`), and
    // Envoy names the plugin after the module that runs the filter.
    let refused = format!(
        "Unable to create Wasm plugin {}",
        packaging.module("meshward_authz")
    );
    for (config, expected) in cases {
        let bootstrap = Bootstrap::new(upstream.port())
            .packaged_filter(packaging, "meshward_authz", &config.to_string())
            .unwrap();
        let err = match Envoy::start(&bootstrap, &EnvoyOptions::default()) {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(err) => err,
        };
        assert!(
            err.contains(expected),
            "expected {expected:?} in Envoy's log:\n{err}"
        );
        assert!(
            err.contains(&refused),
            "Envoy must refuse the plugin:\n{err}"
        );
    }
}

fn a_client_that_gives_up_during_a_key_fetch_does_not_strand_the_requests_waiting_on_it(
    packaging: Packaging,
) {
    let a = Signer::generate_in_slot(Alg::RS256, "key-a", 0);
    let b = Signer::generate_in_slot(Alg::RS256, "key-b", 1);
    let server = JwksServer::start(&jwks(&[&a])).unwrap();
    let config = json!({
        "realm": REALM,
        "providers": [main_provider(remote_jwks("300s", "1s", "30s"))]
    });
    // One worker, so both requests wait on the same VM's fetch.
    let authz = start(packaging, &config, Some(server.port()), 1);
    let response = authz.send(bearer("/", &a.sign(&claims("alice", json!({})))));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let before = settled_fetches(&server);

    // Key b is published; the first request with it starts the unknown-kid re-fetch,
    // which the endpoint holds. Its client then gives up.
    server.set_document(&jwks(&[&a, &b]));
    server.hold();
    let port = authz.envoy.port();
    let first = bearer("/", &b.sign(&claims("bob", json!({}))));
    let abandon =
        std::thread::spawn(move || first.send_and_abandon(port, Duration::from_millis(1000)));
    assert!(server.wait_for_fetches(before + 1, Duration::from_secs(5)));
    let second = bearer("/", &b.sign(&claims("carol", json!({}))));
    let waiting = std::thread::spawn(move || {
        let response = second.send(port);
        (response, Instant::now())
    });
    abandon.join().unwrap().unwrap();
    assert!(
        authz.envoy.eventually(Duration::from_secs(5), |envoy| envoy
            .counter("http.ingress.downstream_cx_destroy_remote_active_rq")
            >= 1),
        "Envoy saw the first client go"
    );
    assert!(!waiting.is_finished(), "the second request still waits");
    let released = Instant::now();
    server.release();
    let (response, answered) = waiting.join().unwrap();
    let response = response.expect("request completes");
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert!(
        answered.duration_since(released) < Duration::from_secs(2),
        "answered when the keys arrived, not at its deadline: {:?}",
        answered.duration_since(released)
    );
    assert_eq!(values(&authz.last_upstream_request(), "x-user"), ["carol"]);
    // And key b keeps working.
    let response = authz.send(bearer("/", &b.sign(&claims("dave", json!({})))));
    assert_eq!(response.status, 200, "{}", response.body_text());
}

fn a_jwks_cluster_envoy_does_not_know_answers_503_at_once_and_counts_failures(
    packaging: Packaging,
) {
    let a = Signer::generate(Alg::ES256, "key-a");
    let mut keys = remote_jwks("300s", "1ms", "30s");
    keys["remote"]["cluster"] = json!("no-such-cluster");
    let config = json!({
        "realm": REALM,
        "failureMode": "deny",
        "providers": [main_provider(keys)]
    });
    let authz = start(packaging, &config, None, 2);
    let token = a.sign(&claims("alice", json!({})));
    // With a 1 ms retry interval each request asks for a fetch; the dispatch is refused
    // and the request answered at once rather than at its deadline.
    for _ in 0..3 {
        let started = Instant::now();
        let response = authz.send(bearer("/", &token));
        assert_eq!(response.status, 503, "{}", response.body_text());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered at once: {:?}",
            started.elapsed()
        );
    }
    assert!(authz.counter("provider.main.jwks_fetch_failed") >= 3);
    assert_eq!(authz.counter("provider.main.rejected.keys_unavailable"), 3);
    assert!(authz
        .envoy
        .log()
        .contains(r#"cannot call cluster "no-such-cluster""#));
}

meshward_e2e::packaged_tests!(
    verified_tokens_reach_the_upstream_with_identity_headers_and_forged_ones_never_do,
    a_rotated_key_is_accepted_after_exactly_one_refetch,
    the_last_good_keys_stay_in_force_when_the_jwks_endpoint_goes_down,
    failure_mode_deny_answers_503_while_the_keys_cannot_be_loaded_then_recovers,
    failure_mode_allow_lets_requests_through_without_identity_when_keys_cannot_be_loaded,
    challenges_and_problem_bodies_are_exact,
    claim_rules_decide_in_order_and_a_shadow_rule_only_counts,
    repeated_tokens_are_served_from_the_verified_token_cache_until_they_expire,
    requests_arriving_while_the_keys_load_wait_for_them,
    a_hung_jwks_endpoint_answers_waiting_requests_after_the_fetch_timeout,
    envoy_refuses_an_invalid_config_and_the_error_names_the_json_path,
    a_client_that_gives_up_during_a_key_fetch_does_not_strand_the_requests_waiting_on_it,
    a_jwks_cluster_envoy_does_not_know_answers_503_at_once_and_counts_failures,
);
