//! The filter's hand-written RLS messages against Envoy's generated API (`envoy-types`):
//! each message encoded by one side decodes on the other with every field intact, so the
//! filter talks to any RLS implementation (envoyproxy/ratelimit, Limitador, Meshward's).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry as EnvoyEntry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor as EnvoyDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus as EnvoyStatus, RateLimit as EnvoyRateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest as EnvoyRequest, RateLimitResponse as EnvoyResponse,
};
use envoy_types::pb::google::protobuf::Duration as EnvoyDuration;
use meshward_ratelimit::global::messages::{
    DescriptorStatus, Entry, ProtoDuration, RateLimit, RateLimitDescriptor, RateLimitRequest,
    RateLimitResponse, CODE_OK, CODE_OVER_LIMIT,
};
use prost::Message;

fn entry(key: &str, value: &str) -> Entry {
    Entry {
        key: key.into(),
        value: value.into(),
    }
}

fn filter_request() -> RateLimitRequest {
    RateLimitRequest {
        domain: "shop/orders-limit".into(),
        descriptors: vec![
            RateLimitDescriptor {
                entries: vec![
                    entry("rule", "per-client"),
                    entry("remote_address", "192.0.2.1"),
                ],
            },
            RateLimitDescriptor {
                entries: vec![entry("rule", "all")],
            },
        ],
        hits_addend: 1,
    }
}

#[test]
fn the_filters_request_decodes_as_envoys_and_back() {
    let bytes = filter_request().encode_to_vec();
    let envoy = EnvoyRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(envoy.domain, "shop/orders-limit");
    assert_eq!(envoy.hits_addend, 1);
    assert_eq!(envoy.descriptors.len(), 2);
    assert_eq!(
        envoy.descriptors[0].entries,
        vec![
            EnvoyEntry {
                key: "rule".into(),
                value: "per-client".into()
            },
            EnvoyEntry {
                key: "remote_address".into(),
                value: "192.0.2.1".into()
            },
        ]
    );
    // Envoy's encoding of the same request is byte-identical, and decodes in the filter.
    let round = EnvoyRequest {
        domain: envoy.domain.clone(),
        descriptors: envoy
            .descriptors
            .iter()
            .map(|d| EnvoyDescriptor {
                entries: d.entries.clone(),
                ..Default::default()
            })
            .collect(),
        hits_addend: 1,
    };
    assert_eq!(round.encode_to_vec(), bytes);
    assert_eq!(
        RateLimitRequest::decode(round.encode_to_vec().as_slice()).unwrap(),
        filter_request()
    );
}

#[test]
fn envoys_response_decodes_in_the_filter_and_back() {
    let envoy = EnvoyResponse {
        overall_code: Code::OverLimit as i32,
        statuses: vec![
            EnvoyStatus {
                code: Code::OverLimit as i32,
                current_limit: Some(EnvoyRateLimit {
                    name: "per-client".into(),
                    requests_per_unit: 10,
                    unit: Unit::Minute as i32,
                }),
                limit_remaining: 0,
                duration_until_reset: Some(EnvoyDuration {
                    seconds: 42,
                    nanos: 5,
                }),
                ..Default::default()
            },
            EnvoyStatus {
                code: Code::Ok as i32,
                limit_remaining: 99,
                ..Default::default()
            },
        ],
        response_headers_to_add: vec![
            EnvoyHeaderValue {
                key: "x-a".into(),
                value: "1".into(),
                ..Default::default()
            },
            EnvoyHeaderValue {
                key: "x-b".into(),
                raw_value: b"2".to_vec(),
                ..Default::default()
            },
        ],
        raw_body: b"ignored".to_vec(),
        ..Default::default()
    };
    let filter = RateLimitResponse::decode(envoy.encode_to_vec().as_slice()).unwrap();
    assert_eq!(filter.overall_code, CODE_OVER_LIMIT);
    assert_eq!(
        filter.statuses[0],
        DescriptorStatus {
            code: CODE_OVER_LIMIT,
            current_limit: Some(RateLimit {
                requests_per_unit: 10,
                unit: Unit::Minute as i32,
                name: "per-client".into()
            }),
            limit_remaining: 0,
            duration_until_reset: Some(ProtoDuration {
                seconds: 42,
                nanos: 5
            }),
        }
    );
    assert_eq!(filter.statuses[1].code, CODE_OK);
    assert_eq!(filter.statuses[1].limit_remaining, 99);
    assert_eq!(
        filter.response_headers_to_add[0].text().as_deref(),
        Some("1")
    );
    assert_eq!(
        filter.response_headers_to_add[1].text().as_deref(),
        Some("2")
    );

    let back = EnvoyResponse::decode(filter.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.overall_code, envoy.overall_code);
    assert_eq!(
        back.statuses[0].current_limit,
        envoy.statuses[0].current_limit
    );
    assert_eq!(
        back.statuses[0].duration_until_reset,
        envoy.statuses[0].duration_until_reset
    );
    assert_eq!(back.statuses[1].limit_remaining, 99);
    assert_eq!(back.response_headers_to_add.len(), 2);
}
