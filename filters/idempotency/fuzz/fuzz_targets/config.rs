//! The idempotency configuration loader, and how a loaded configuration plans requests.
//!
//! Input: the JSON configuration on the first line; optionally an `Idempotency-Key`
//! field value on the second (default `"fuzz-key"`).
//!
//! Properties of a configuration that loads: methods are uppercase and never GET, HEAD,
//! OPTIONS or TRACE; header names valid and lowercase (the key header, identity and
//! replay headers, the default replay headers kept); limits positive and within their
//! documented bounds; durations positive; a remote store names a cluster and a timeout
//! of 1 ms to 10 s. Planning: a GET, a method not configured or a request without a
//! route is skipped; on the configured methods (without routes) a request without a key
//! is skipped, a valid key takes part, a key over the limit is refused with a 400
//! problem+json; the scope is deterministic and depends on the key; the field value
//! given is planned exactly as `key::parse_key` reads it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::request::RequestHead;
use meshward_idempotency::config::{self, CompiledConfig, StoreMode};
use meshward_idempotency::key::parse_key;
use meshward_idempotency::machine::{plan_request, RequestPlan};

const DEFAULT_REPLAY: [&str; 8] = [
    "content-type",
    "content-encoding",
    "content-language",
    "location",
    "etag",
    "last-modified",
    "cache-control",
    "vary",
];

fn valid_header_name(name: &str) -> bool {
    let bare = name.strip_prefix(':').unwrap_or(name);
    !bare.is_empty()
        && bare.bytes().all(|b| {
            b.is_ascii_digit() || b.is_ascii_lowercase() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn check_compiled(config: &CompiledConfig) {
    for method in &config.methods {
        assert!(!method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()));
        assert!(!["GET", "HEAD", "OPTIONS", "TRACE"].contains(&method.as_str()));
    }
    assert!(valid_header_name(&config.header), "{:?}", config.header);
    assert!((1..=4096).contains(&config.max_key_length));
    for route in &config.routes {
        assert!((1..=64).contains(&route.name.len()));
    }
    for name in config.identity_headers.iter().chain(&config.replay_headers) {
        assert!(valid_header_name(name), "{name:?}");
    }
    for name in DEFAULT_REPLAY {
        assert!(config.replay_headers.iter().any(|h| h == name));
    }
    assert!(config.max_body_bytes > 0 && config.max_response_bytes > 0);
    assert!(config.lock_nanos > 0 && config.ttl_nanos > 0);
    assert!((1..=1_000_000).contains(&config.max_entries));
    assert!(config.max_stored_bytes > 0);
    assert!(config.in_flight_wait_nanos <= 60_000_000_000);
    if let StoreMode::Remote(remote) = &config.store {
        assert!(!remote.cluster.is_empty());
        assert!((1_000_000..=10_000_000_000).contains(&remote.timeout_nanos));
    }
}

fn request(method: &str, header: &str, key: Option<&str>) -> RequestHead {
    let mut headers = vec![
        (":method".to_owned(), method.to_owned()),
        (":path".to_owned(), "/orders?x=1".to_owned()),
        (":authority".to_owned(), "shop.example.com".to_owned()),
    ];
    if header != "x-meshward-principal" {
        headers.push((
            "x-meshward-principal".to_owned(),
            "https://issuer/alice".to_owned(),
        ));
    }
    if let Some(key) = key {
        headers.push((header.to_owned(), key.to_owned()));
    }
    RequestHead::new(headers, Some("192.0.2.1:5000".into()))
}

fn scope(config: &CompiledConfig, request: &RequestHead) -> Option<[u8; 16]> {
    match plan_request(config, request) {
        RequestPlan::Check { scope } => Some(scope),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (json, field) = text.split_once('\n').unwrap_or((&text, "\"fuzz-key\""));
    let Ok(config) = config::parse(json.as_bytes()) else {
        return;
    };
    check_compiled(&config);
    let header = config.header.clone();

    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "NOT-CONFIGURED"] {
        if !config.methods.iter().any(|m| m == method) {
            let plan = plan_request(&config, &request(method, &header, Some("\"k\"")));
            assert_eq!(plan, RequestPlan::Skip, "{method}");
        }
    }
    // A pseudo-header as the key field would be the request's own `:method` or `:path`.
    let Some(method) = config.methods.first().cloned() else {
        return;
    };
    if header.starts_with(':') {
        return;
    }
    let plan = plan_request(&config, &request(&method, &header, Some(field)));
    let parsed = parse_key([field].into_iter(), config.lenient, config.max_key_length);
    match (&plan, &parsed) {
        (RequestPlan::Check { .. }, Ok(_)) | (RequestPlan::Skip, _) => {}
        (RequestPlan::Reject(reply), Err(_)) => {
            assert_eq!(reply.status, 400);
            let body: serde_json::Value =
                serde_json::from_slice(&reply.body).expect("a problem+json body");
            assert_eq!(body.get("status").and_then(|s| s.as_u64()), Some(400));
        }
        other => panic!("{field:?}: plan and key disagree: {other:?}"),
    }
    if matches!(plan, RequestPlan::Skip) {
        assert!(
            !config.routes.is_empty(),
            "without routes a configured method is planned"
        );
    }
    if !config.routes.is_empty() {
        return;
    }
    assert_eq!(
        plan_request(&config, &request(&method, &header, None)),
        RequestPlan::Skip,
        "optional key absent"
    );
    let a = scope(&config, &request(&method, &header, Some("\"a\"")));
    let b = scope(&config, &request(&method, &header, Some("\"b\"")));
    assert!(a.is_some() && a != b, "the scope depends on the key");
    assert_eq!(a, scope(&config, &request(&method, &header, Some("\"a\""))));
    let long = format!("\"{}\"", "k".repeat(config.max_key_length + 1));
    assert!(matches!(
        plan_request(&config, &request(&method, &header, Some(&long))),
        RequestPlan::Reject(reply) if reply.status == 400
    ));
});
