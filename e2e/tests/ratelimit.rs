//! The rate-limit filter in a real Envoy (2 worker threads): exactness under
//! concurrency, key separation, path scoping, shadow rules, response fields checked by
//! an independent RFC 9651 parser, config rejection, bounded memory. Every test runs
//! twice, against the filter's own module (`separate::…`) and against the bundle
//! `meshward_bundle` with only its `ratelimit` section (`bundle::…`), with the same
//! assertions.

use meshward_e2e::{
    Bootstrap, Envoy, EnvoyOptions, Packaging, RecordingUpstream, Request, Response,
};

fn start(packaging: Packaging, config: &str) -> (RecordingUpstream, Envoy) {
    let upstream = RecordingUpstream::start().expect("upstream");
    let bootstrap = Bootstrap::new(upstream.port())
        .packaged_filter(packaging, "meshward_ratelimit", config)
        .expect("module built");
    let envoy = Envoy::start(
        &bootstrap,
        &EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::default()
        },
    )
    .expect("envoy starts");
    (upstream, envoy)
}

fn send(envoy: &Envoy, request: Request) -> Response {
    request.send(envoy.port()).expect("request completes")
}

fn status(envoy: &Envoy, request: Request) -> u16 {
    send(envoy, request).status
}

/// Sends `total` requests from `connections` concurrent clients; returns the statuses.
fn burst(
    envoy: &Envoy,
    total: usize,
    connections: usize,
    request: impl Fn(usize) -> Request + Sync,
) -> Vec<u16> {
    let port = envoy.port();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(|| {
                    let mut statuses = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= total {
                            return statuses;
                        }
                        statuses.push(request(i).send(port).expect("request completes").status);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    })
}

fn count(statuses: &[u16], code: u16) -> usize {
    statuses.iter().filter(|s| **s == code).count()
}

const CAPACITY: usize = 40;

fn exact_under_concurrency(packaging: Packaging, limit: &str) {
    let config = format!(r#"{{"rules":[{{"name":"burst","limit":{limit}}}]}}"#);
    let (upstream, envoy) = start(packaging, &config);
    let statuses = burst(&envoy, 5 * CAPACITY, 16, |_| Request::get("/"));
    assert_eq!(statuses.len(), 5 * CAPACITY);
    assert_eq!(
        count(&statuses, 200),
        CAPACITY,
        "exactly the capacity is admitted: {statuses:?}"
    );
    assert_eq!(count(&statuses, 429), 4 * CAPACITY);
    assert_eq!(
        upstream.hits(),
        CAPACITY,
        "only admitted requests reach the upstream"
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.burst.allowed"),
        CAPACITY as u64
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.burst.limited"),
        4 * CAPACITY as u64
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.burst.store_errors"),
        0
    );
}

fn token_bucket_admits_exactly_its_capacity_across_workers(packaging: Packaging) {
    exact_under_concurrency(
        packaging,
        &format!(r#"{{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":{CAPACITY}}}"#),
    );
}

fn gcra_admits_exactly_its_burst_across_workers(packaging: Packaging) {
    exact_under_concurrency(
        packaging,
        &format!(r#"{{"algorithm":"gcra","requests":1,"per":"1h","burst":{CAPACITY}}}"#),
    );
}

fn sliding_window_admits_exactly_its_limit_across_workers(packaging: Packaging) {
    exact_under_concurrency(
        packaging,
        &format!(r#"{{"algorithm":"slidingWindow","requests":{CAPACITY},"per":"1h"}}"#),
    );
}

fn client_addresses_have_separate_budgets(packaging: Packaging) {
    let (_upstream, envoy) = start(
        packaging,
        r#"{"rules":[{"name":"per-ip","key":[{"type":"clientAddress"}],"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":2}}]}"#,
    );
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let seen: Vec<u16> = (0..3)
            .map(|_| status(&envoy, Request::get("/").from_ip(ip)))
            .collect();
        assert_eq!(seen, [200, 200, 429], "client {ip}");
    }
}

fn forwarded_for_addresses_have_separate_budgets(packaging: Packaging) {
    let (_upstream, envoy) = start(
        packaging,
        r#"{"rules":[{"name":"per-xff","key":[{"type":"clientAddress","source":"xForwardedFor","trustedHops":1}],"limit":{"algorithm":"gcra","requests":1,"per":"1h","burst":1}}]}"#,
    );
    // One trusted proxy appended the last entry; the client is the one before it.
    let from =
        |client: &str| Request::get("/").header("x-forwarded-for", &format!("{client}, 10.0.0.9"));
    assert_eq!(status(&envoy, from("203.0.113.1")), 200);
    assert_eq!(status(&envoy, from("203.0.113.1")), 429);
    assert_eq!(status(&envoy, from("203.0.113.2")), 200);
}

fn header_values_have_separate_budgets_and_absent_keys_skip_the_rule(packaging: Packaging) {
    let (_upstream, envoy) = start(
        packaging,
        r#"{"rules":[{"name":"per-key","key":[{"type":"header","name":"x-api-key"}],"limit":{"algorithm":"slidingWindow","requests":2,"per":"1h"}}]}"#,
    );
    let with_key = |key: &str| Request::get("/").header("x-api-key", key);
    let alice: Vec<u16> = (0..3).map(|_| status(&envoy, with_key("alice"))).collect();
    assert_eq!(alice, [200, 200, 429]);
    let bob: Vec<u16> = (0..3).map(|_| status(&envoy, with_key("bob"))).collect();
    assert_eq!(bob, [200, 200, 429]);
    for _ in 0..5 {
        assert_eq!(status(&envoy, Request::get("/")), 200, "no key, no rule");
    }
}

fn a_rule_scoped_to_one_path_does_not_touch_others(packaging: Packaging) {
    let (upstream, envoy) = start(
        packaging,
        r#"{"rules":[{"name":"login","match":{"path":{"exact":"/login"},"methods":["POST"]},"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":1}}]}"#,
    );
    assert_eq!(status(&envoy, Request::post("/login", b"{}")), 200);
    assert_eq!(status(&envoy, Request::post("/login", b"{}")), 429);
    for _ in 0..10 {
        assert_eq!(
            status(&envoy, Request::get("/login")),
            200,
            "GET is not matched"
        );
        assert_eq!(
            status(&envoy, Request::post("/login/help", b"")),
            200,
            "exact path only"
        );
        assert_eq!(status(&envoy, Request::get("/other")), 200);
    }
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.login.allowed"),
        1
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.login.limited"),
        1
    );
    assert_eq!(upstream.hits(), 31);
}

fn shadow_rules_never_return_429_but_move_their_metric(packaging: Packaging) {
    let (upstream, envoy) = start(
        packaging,
        r#"{"rules":[{"name":"dry-run","shadow":true,"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":2}}]}"#,
    );
    let statuses = burst(&envoy, 20, 4, |_| Request::get("/"));
    assert_eq!(count(&statuses, 200), 20);
    assert_eq!(upstream.hits(), 20);
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.dry-run.allowed"),
        2
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.dry-run.shadow_limited"),
        18
    );
    assert_eq!(
        envoy.counter("wasmcustom.meshward.ratelimit.rule.dry-run.limited"),
        0
    );
    let prometheus = envoy.prometheus().unwrap();
    let value = meshward_e2e::stats::prometheus_value(
        &prometheus,
        r#"meshward_ratelimit_rule_shadow_limited{meshward_rule="dry-run"}"#,
    );
    assert_eq!(value, Some(18.0), "tagged Prometheus series:\n{prometheus}");
    let reply = send(&envoy, Request::get("/"));
    assert_eq!(
        reply.header("ratelimit"),
        None,
        "shadow rules are not advertised"
    );
}

fn sf_list(value: &str) -> sfv::List {
    sfv::Parser::new(value)
        .parse::<sfv::List>()
        .unwrap_or_else(|e| panic!("{value:?} is not an RFC 9651 list: {e}"))
}

/// (policy name, parameter values by key) for each list member.
fn members(list: &sfv::List) -> Vec<(String, std::collections::BTreeMap<String, i64>)> {
    list.iter()
        .map(|member| {
            let sfv::ListEntry::Item(item) = member else {
                panic!("inner lists are not expected: {member:?}")
            };
            let name = match &item.bare_item {
                sfv::BareItem::String(s) => s.as_str().to_string(),
                other => panic!("policy name must be an sf-string, got {other:?}"),
            };
            let params = item
                .params
                .iter()
                .map(|(key, value)| {
                    let sfv::BareItem::Integer(n) = value else {
                        panic!("{key} must be an integer, got {value:?}")
                    };
                    (key.as_str().to_string(), i64::from(*n))
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn ratelimit_fields_parse_with_an_independent_structured_field_parser(packaging: Packaging) {
    let (_upstream, envoy) = start(
        packaging,
        r#"{"responseHeaders":{"onAllowed":true},"rules":[
            {"name":"per-minute","limit":{"algorithm":"tokenBucket","requests":3,"per":"1m"}},
            {"name":"per-hour","limit":{"algorithm":"slidingWindow","requests":100,"per":"1h"}}
        ]}"#,
    );
    let first = send(&envoy, Request::get("/"));
    assert_eq!(first.status, 200);
    let policy = members(&sf_list(
        first
            .header("ratelimit-policy")
            .expect("policy on allowed responses"),
    ));
    assert_eq!(policy.len(), 2);
    assert_eq!(policy[0].0, "per-minute");
    assert_eq!((policy[0].1["q"], policy[0].1["w"]), (3, 60));
    assert_eq!(policy[1].0, "per-hour");
    assert_eq!((policy[1].1["q"], policy[1].1["w"]), (100, 3600));
    let state = members(&sf_list(first.header("ratelimit").unwrap()));
    assert_eq!(state[0].0, "per-minute");
    assert_eq!(state[0].1["r"], 2);
    assert!(
        (1..=20).contains(&state[0].1["t"]),
        "20 s refill one token: {state:?}"
    );
    assert_eq!(state[1].1["r"], 99);
    assert!(first.header("retry-after").is_none());

    send(&envoy, Request::get("/"));
    send(&envoy, Request::get("/"));
    let limited = send(&envoy, Request::get("/"));
    assert_eq!(limited.status, 429);
    let state = members(&sf_list(limited.header("ratelimit").unwrap()));
    assert_eq!(state[0].1["r"], 0);
    assert!((57..=60).contains(&state[0].1["t"]), "{state:?}");
    assert_eq!(
        state[1].1["r"], 96,
        "every matching rule is charged, also on the limited request"
    );
    let retry_after: i64 = limited
        .header("retry-after")
        .unwrap()
        .parse()
        .expect("delay-seconds");
    assert!(
        (17..=20).contains(&retry_after),
        "one token per 20 s: {retry_after}"
    );
    assert_eq!(
        limited.header("content-type"),
        Some("application/problem+json")
    );
    let problem = limited.json().unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["title"], "Too Many Requests");
    assert!(problem["detail"].as_str().unwrap().contains("per-minute"));
    assert!(problem["type"].as_str().unwrap().starts_with("https://"));
}

fn legacy_headers_when_configured(packaging: Packaging) {
    let (_upstream, envoy) = start(
        packaging,
        r#"{"responseHeaders":{"legacy":true,"rateLimit":false},"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":10,"per":"100s","burst":1}}]}"#,
    );
    assert_eq!(status(&envoy, Request::get("/")), 200);
    let limited = send(&envoy, Request::get("/"));
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = limited
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!((8..=10).contains(&reset), "one request per 10 s: {reset}");
    assert!(limited.header("ratelimit").is_none());
}

fn header_values_that_are_not_utf8_do_not_break_the_filter(packaging: Packaging) {
    let (upstream, envoy) = start(
        packaging,
        r#"{"rules":[{"name":"per-key","key":[{"type":"header","name":"x-api-key"}],"limit":{"algorithm":"tokenBucket","requests":1,"per":"1h","burst":2}}]}"#,
    );
    // "caf\xe9" in Latin-1: legal obs-text in HTTP/1.1, not UTF-8.
    let latin1 = || Request::get("/").raw_header("x-api-key", b"caf\xe9");
    let statuses: Vec<u16> = (0..3).map(|_| status(&envoy, latin1())).collect();
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the value is still a key with its own budget"
    );
    assert_eq!(
        status(&envoy, Request::get("/").header("x-api-key", "plain")),
        200,
        "the VM is alive"
    );
    assert_eq!(upstream.hits(), 3);
    let forwarded = upstream.requests()[0]
        .header("x-api-key")
        .unwrap()
        .to_string();
    assert_eq!(
        forwarded, "caf\u{fffd}",
        "forwarded untouched (shown lossily by the test upstream)"
    );
}

fn envoy_refuses_an_invalid_config_and_the_error_names_the_json_path(packaging: Packaging) {
    let upstream = RecordingUpstream::start().unwrap();
    let cases = [
        (
            r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"soon"}}]}"#,
            "rules[0].limit.per:",
        ),
        (
            r#"{"rules":[{"name":"r","limit":{"algorithm":"gcra","requests":1,"per":"1s"},"shdow":true}]}"#,
            "rules[0].shdow: unknown field",
        ),
        (
            r#"{"rules":[{"name":"r","limit":{"algorithm":"leaky","requests":1,"per":"1s"}}]}"#,
            "rules[0].limit.algorithm: unknown variant `leaky`",
        ),
        ("not json", "(root):"),
    ];
    // The bundle reports the same paths under its section (`ratelimit.rules[0]…`), and
    // Envoy names the plugin after the module that runs the filter.
    let refused = format!(
        "Unable to create Wasm plugin {}",
        packaging.module("meshward_ratelimit")
    );
    for (config, expected) in cases {
        let bootstrap = Bootstrap::new(upstream.port())
            .packaged_filter(packaging, "meshward_ratelimit", config)
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

fn memory_stays_bounded_when_100k_distinct_keys_arrive(packaging: Packaging) {
    let (_upstream, envoy) = start(
        packaging,
        r#"{"maxKeys":1000,"rules":[{"name":"flood","key":[{"type":"header","name":"x-client"}],"limit":{"algorithm":"tokenBucket","requests":10,"per":"1m"}}]}"#,
    );
    // Warm up allocator pools and connection handling before the baseline.
    burst(&envoy, 2_000, 8, |i| {
        Request::get("/").header("x-client", &format!("warm-{i}"))
    });
    let before = envoy.allocated_bytes().unwrap();
    let statuses = burst(&envoy, 100_000, 8, |i| {
        Request::get("/").header("x-client", &format!("client-{i}"))
    });
    let after = envoy.allocated_bytes().unwrap();
    assert_eq!(count(&statuses, 200), 100_000, "every new key has budget");
    let evictions = envoy.counter("wasmcustom.meshward.ratelimit.rule.flood.evictions");
    assert!(
        evictions >= 100_000 - 1_000,
        "at most 1000 keys are kept; evictions: {evictions}"
    );
    let growth = after.saturating_sub(before);
    eprintln!("Envoy heap: {before} → {after} bytes (+{growth}) over 100,000 distinct keys; evictions {evictions}");
    // One shared-data key per client would add well over 10 MB here.
    assert!(growth < 4 * 1024 * 1024, "heap grew by {growth} bytes");
}

meshward_e2e::packaged_tests!(
    token_bucket_admits_exactly_its_capacity_across_workers,
    gcra_admits_exactly_its_burst_across_workers,
    sliding_window_admits_exactly_its_limit_across_workers,
    client_addresses_have_separate_budgets,
    forwarded_for_addresses_have_separate_budgets,
    header_values_have_separate_budgets_and_absent_keys_skip_the_rule,
    a_rule_scoped_to_one_path_does_not_touch_others,
    shadow_rules_never_return_429_but_move_their_metric,
    ratelimit_fields_parse_with_an_independent_structured_field_parser,
    legacy_headers_when_configured,
    header_values_that_are_not_utf8_do_not_break_the_filter,
    envoy_refuses_an_invalid_config_and_the_error_names_the_json_path,
    memory_stays_bounded_when_100k_distinct_keys_arrive,
);
