//! The trace-inject configuration loader, and what a loaded configuration does.
//!
//! Input: the JSON configuration. Properties of a configuration that loads: no format
//! listed twice and at least one emitted per direction; sampling thresholds within the
//! 56 random bits; every configured header name valid and lowercase, and none it
//! writes a pseudo-header or a trace-context header; the vendor key a valid tracestate
//! key. Then, for three requests (valid W3C context, nothing, an
//! invalid `traceparent` with a valid `b3`) in both directions: every header set is a
//! valid lowercase name set once; exactly the emitted formats are written and parse
//! (`traceparent` with this hop's ids, `tracestate` with the vendor entry first, `b3`,
//! the B3 multi headers, `baggage` with nothing dropped); an accepted incoming context
//! is continued; a new trace is sampled exactly by the ratio (or the force header); a
//! generated request id is a UUID (the trace id when `fromTraceId`); `traceresponse`
//! exactly when configured.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::random::SeededRandom;
use meshward_filter_common::request::RequestHead;
use meshward_trace_inject::b3;
use meshward_trace_inject::baggage::Baggage;
use meshward_trace_inject::config::{self, CompiledConfig, Direction, Format};
use meshward_trace_inject::propagate::{self, Source};
use meshward_trace_inject::traceparent::TraceParent;
use meshward_trace_inject::tracestate::{is_valid_key, TraceState};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const B3: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";

fn valid_header_name(name: &str) -> bool {
    let bare = name.strip_prefix(':').unwrap_or(name);
    !bare.is_empty()
        && bare.bytes().all(|b| {
            b.is_ascii_digit() || b.is_ascii_lowercase() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn no_repeats(list: &[Format]) -> bool {
    list.iter()
        .enumerate()
        .all(|(i, f)| !list.iter().take(i).any(|g| g == f))
}

fn check_compiled(config: &CompiledConfig) {
    assert!(no_repeats(&config.accept));
    for hop in [&config.inbound, &config.outbound] {
        assert!(!hop.emit.is_empty() && no_repeats(&hop.emit));
    }
    assert!(config.sampling_threshold <= 1 << 56);
    assert!(config.route_sampling.iter().all(|(_, t)| *t <= 1 << 56));
    let mut names = vec![config.request_id_header.as_str()];
    names.extend(config.force_header.as_deref());
    names.extend(config.debug_header.as_deref());
    names.extend(config.baggage_to_headers.iter().map(|(_, h)| h.as_str()));
    for name in names {
        assert!(valid_header_name(name), "{name:?}");
    }
    // What it writes from its configuration is neither a pseudo-header nor trace context.
    let written = std::iter::once(&config.request_id_header)
        .chain(config.baggage_to_headers.iter().map(|(_, h)| h));
    for name in written {
        assert!(!name.starts_with(':'), "{name}");
        let trace_context = [
            "traceparent",
            "tracestate",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "x-b3-flags",
            "baggage",
        ];
        assert!(!trace_context.contains(&name.as_str()), "{name}");
    }
    if let Some(key) = &config.vendor_key {
        assert!(is_valid_key(key), "{key:?}");
    }
}

fn request(extra: &[(&str, &str)]) -> RequestHead {
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), "/orders/42".to_owned()),
        (":authority".to_owned(), "shop.example.com".to_owned()),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    RequestHead::new(headers, Some("192.0.2.1:5000".into()))
}

fn check_hop(
    config: &CompiledConfig,
    direction: Direction,
    request: &RequestHead,
    incoming: Option<Source>,
) {
    let outcome = propagate::process(config, direction, request, &mut SeededRandom::new(7));
    let hop = config.hop(direction);
    let set = |name: &str| {
        outcome
            .set
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    for (i, (name, value)) in outcome.set.iter().enumerate() {
        assert!(valid_header_name(name), "{name:?}");
        assert!(!value.contains(['\r', '\n', '\0']), "{name}: {value:?}");
        assert!(
            !outcome.set.iter().take(i).any(|(n, _)| n == name),
            "{name} set twice: {:?}",
            outcome.set
        );
    }
    assert_ne!(Some(outcome.span_id), outcome.parent_id);

    let emits = |format: Format| hop.emit.contains(&format);
    assert_eq!(set("traceparent").is_some(), emits(Format::W3c));
    assert_eq!(set("b3").is_some(), emits(Format::B3Single));
    assert_eq!(set("x-b3-traceid").is_some(), emits(Format::B3Multi));
    if let Some(value) = set("traceparent") {
        let parsed = TraceParent::parse(value).expect("the traceparent written parses");
        assert_eq!(
            (parsed.trace_id, parsed.parent_id),
            (outcome.trace_id, outcome.span_id)
        );
        if let Some(state) = set("tracestate") {
            let state = TraceState::parse([state]).expect("the tracestate written parses");
            if let Some(key) = &config.vendor_key {
                assert_eq!(state.get(key), Some(outcome.span_id.hex().as_str()));
                let first = state.format();
                assert!(first.starts_with(&format!("{key}=")), "{first}");
            }
        } else {
            assert!(
                config.vendor_key.is_none(),
                "the vendor entry is always written"
            );
        }
    }
    if let Some(value) = set("b3") {
        let parsed = b3::parse_single(value).expect("the b3 written parses");
        let context = parsed.context.expect("with ids");
        assert_eq!(
            (context.trace_id, context.span_id),
            (outcome.trace_id, outcome.span_id)
        );
        assert_eq!(context.parent_span_id, outcome.parent_id);
    }
    if let Some(value) = set("baggage") {
        let parsed = Baggage::parse([value]);
        assert_eq!((parsed.dropped, parsed.format().as_str()), (0, value));
    }

    let accepted = |format: Format| config.accepts(format);
    match incoming {
        Some(Source::W3c) if accepted(Format::W3c) => {
            assert_eq!(outcome.source, Source::W3c);
            assert_eq!(outcome.trace_id.hex(), TRACE);
        }
        Some(Source::B3) if accepted(Format::B3Single) => assert_eq!(outcome.source, Source::B3),
        _ => {}
    }
    if incoming.is_none() {
        assert_eq!(outcome.source, Source::New);
        let forced = config
            .force_header
            .as_deref()
            .is_some_and(|name| request.header(name).is_some());
        let threshold = config
            .route_sampling
            .iter()
            .find(|(matcher, _)| matcher.matches(request))
            .map_or(config.sampling_threshold, |(_, t)| *t);
        let by_ratio = outcome.trace_id.random_bits() < threshold;
        assert_eq!(outcome.sampled(), forced || by_ratio);
    }

    let request_id = set(&config.request_id_header);
    if config.request_id_generate && request.header(&config.request_id_header).is_none() {
        let id = request_id.expect("a request id is generated");
        assert_eq!(id.len(), 36, "{id}");
        if config.request_id_from_trace {
            assert_eq!(id.replace('-', ""), outcome.trace_id.hex());
        }
    }
    let traceresponse = outcome.response.iter().find(|(n, _)| n == "traceresponse");
    assert_eq!(traceresponse.is_some(), hop.trace_response);
    if let Some((_, value)) = traceresponse {
        assert!(TraceParent::parse(value).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(compiled) = config::parse(data) else {
        return;
    };
    check_compiled(&compiled);
    let w3c = request(&[
        ("traceparent", TRACEPARENT),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ("baggage", "tenant=acme,bad key=1,region=eu%20west"),
    ]);
    let new = request(&[]);
    let converted = request(&[
        ("traceparent", "00-zz"),
        ("b3", B3),
        ("baggage", "tenant=acme"),
    ]);
    for direction in [Direction::Inbound, Direction::Outbound] {
        check_hop(&compiled, direction, &w3c, Some(Source::W3c));
        check_hop(&compiled, direction, &new, None);
        check_hop(&compiled, direction, &converted, Some(Source::B3));
    }
});
