//! The processing model at one sidecar hop: read the incoming context (W3C first, then
//! B3), decide sampling, become a participant (a new span id for this hop, the trace id
//! kept), and say which request headers to set or remove and what the response gets.

use meshward_filter_common::random::Random;
use meshward_filter_common::request::RequestHead;

use crate::b3::{self, Sampling};
use crate::baggage::Baggage;
use crate::config::{CompiledConfig, Direction, Format};
use crate::ids::{encode_hex, SpanId, TraceId};
use crate::traceparent::{self, TraceParent, FLAG_RANDOM, FLAG_SAMPLED, KNOWN_FLAGS};
use crate::tracestate::TraceState;

/// Where the trace context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A valid `traceparent`, propagated.
    W3c,
    /// B3 headers, converted.
    B3,
    /// Nothing usable arrived: a new trace.
    New,
}

/// Why an incoming trace was not continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    InvalidTraceparent(traceparent::Invalid),
    DuplicateTraceparent,
    InvalidB3,
}

impl Restart {
    /// Metric segment.
    pub fn reason(&self) -> &'static str {
        match self {
            Restart::InvalidTraceparent(_) => "invalid_traceparent",
            Restart::DuplicateTraceparent => "duplicate_traceparent",
            Restart::InvalidB3 => "invalid_b3",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub trace_id: TraceId,
    /// This hop's span id (the outgoing parent-id).
    pub span_id: SpanId,
    /// The caller's span id, when one arrived.
    pub parent_id: Option<SpanId>,
    pub flags: u8,
    pub source: Source,
    pub restart: Option<Restart>,
    pub tracestate_dropped: bool,
    pub baggage_dropped: usize,
    /// B3 debug (`d` / `X-B3-Flags: 1`) arrived: propagated as such in B3 output.
    pub debug: bool,
    /// Request headers to remove (first), then to set (replacing a single existing
    /// value). Only headers the request carries are listed for removal.
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    /// Response headers to add.
    pub response: Vec<(String, String)>,
}

impl Outcome {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    pub fn traceparent(&self) -> String {
        TraceParent {
            version: 0,
            trace_id: self.trace_id,
            parent_id: self.span_id,
            flags: self.flags,
        }
        .format()
    }
}

const B3_MULTI: [&str; 5] = [
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

struct Incoming {
    trace_id: TraceId,
    parent_id: SpanId,
    flags: Option<u8>,
    source: Source,
}

fn read_w3c(
    config: &CompiledConfig,
    request: &RequestHead,
) -> (Option<TraceParent>, Option<Restart>) {
    if !config.accepts(Format::W3c) {
        return (None, None);
    }
    let mut values = request.header_values("traceparent");
    match (values.next(), values.next()) {
        (None, _) => (None, None),
        (Some(_), Some(_)) => (None, Some(Restart::DuplicateTraceparent)),
        (Some(value), None) => match TraceParent::parse(value) {
            Ok(parsed) => (Some(parsed), None),
            Err(invalid) => (None, Some(Restart::InvalidTraceparent(invalid))),
        },
    }
}

/// B3 context and/or sampling; `Err` when B3 headers are present but malformed.
fn read_b3(config: &CompiledConfig, request: &RequestHead) -> Result<Option<b3::B3>, ()> {
    let multi = || {
        if !config.accepts(Format::B3Multi) {
            return Ok(None);
        }
        let h = |name: &str| request.header(name);
        b3::parse_multi(
            h("x-b3-traceid"),
            h("x-b3-spanid"),
            h("x-b3-parentspanid"),
            h("x-b3-sampled"),
            h("x-b3-flags"),
        )
    };
    if config.accepts(Format::B3Single) {
        if let Some(single) = request.header("b3") {
            // A malformed single header falls back to a usable multi-header set.
            return match b3::parse_single(single) {
                Some(parsed) => Ok(Some(parsed)),
                None => match multi() {
                    Ok(Some(parsed)) if parsed.context.is_some() => Ok(Some(parsed)),
                    _ => Err(()),
                },
            };
        }
    }
    multi()
}

fn ratio_threshold(config: &CompiledConfig, request: &RequestHead) -> u64 {
    config
        .route_sampling
        .iter()
        .find(|(matcher, _)| matcher.matches(request))
        .map_or(config.sampling_threshold, |(_, threshold)| *threshold)
}

pub fn process(
    config: &CompiledConfig,
    direction: Direction,
    request: &RequestHead,
    random: &mut dyn Random,
) -> Outcome {
    let (w3c, mut restart) = read_w3c(config, request);
    let mut b3_sampling = None;
    let incoming = match w3c {
        Some(parent) => Some(Incoming {
            trace_id: parent.trace_id,
            parent_id: parent.parent_id,
            flags: Some(parent.flags),
            source: Source::W3c,
        }),
        None => match read_b3(config, request) {
            Ok(Some(b3)) => {
                b3_sampling = b3.sampling;
                b3.context.map(|context| Incoming {
                    trace_id: context.trace_id,
                    parent_id: context.span_id,
                    flags: b3
                        .sampling
                        .map(|s| if s.sampled() { FLAG_SAMPLED } else { 0 }),
                    source: Source::B3,
                })
            }
            Ok(None) => None,
            Err(()) => {
                restart = restart.or(Some(Restart::InvalidB3));
                None
            }
        },
    };
    // A valid B3 context continues the trace even when a traceparent was unusable.
    if incoming.as_ref().is_some_and(|i| i.source == Source::B3) {
        restart = None;
    }
    let forced = config
        .force_header
        .as_deref()
        .is_some_and(|name| request.header(name).is_some());
    let (trace_id, parent_id, source, mut flags) = match incoming {
        Some(incoming) => {
            let inherited = incoming.flags.map(|f| f & KNOWN_FLAGS);
            let flags = inherited
                .unwrap_or_else(|| sample_by_ratio(config, request, &incoming.trace_id, 0));
            (
                incoming.trace_id,
                Some(incoming.parent_id),
                incoming.source,
                flags,
            )
        }
        None => {
            let trace_id = TraceId::random(random);
            let flags = match b3_sampling {
                Some(sampling) if sampling.sampled() => FLAG_RANDOM | FLAG_SAMPLED,
                Some(_) => FLAG_RANDOM,
                None => sample_by_ratio(config, request, &trace_id, FLAG_RANDOM),
            };
            (trace_id, None, Source::New, flags)
        }
    };
    if forced || b3_sampling == Some(Sampling::Debug) {
        flags |= FLAG_SAMPLED;
    }
    let span_id = SpanId::random(random);

    let mut outcome = Outcome {
        trace_id,
        span_id,
        parent_id,
        flags,
        source,
        restart,
        tracestate_dropped: false,
        debug: b3_sampling == Some(Sampling::Debug),
        baggage_dropped: 0,
        remove: Vec::new(),
        set: Vec::new(),
        response: Vec::new(),
    };
    write_trace_headers(config, direction, request, &mut outcome);
    write_baggage(config, request, &mut outcome);
    write_request_id(config, request, random, &mut outcome);
    if config.hop(direction).trace_response {
        outcome
            .response
            .push(("traceresponse".into(), outcome.traceparent()));
    }
    if let Some(header) = &config.debug_header {
        outcome.response.push((header.clone(), trace_id.hex()));
    }
    // Every removal is a host call: only remove what is there, and let a set replace a
    // single existing value (a repeated header is removed first so no copy survives).
    let set = &outcome.set;
    outcome.remove.retain(|name| {
        let present = request.header_values(name).count();
        present > 1 || (present == 1 && !set.iter().any(|(n, _)| n == name))
    });
    outcome
}

/// Whether a `traceresponse` the application already set should be kept instead of
/// this hop's: it names the same trace and is valid, so it carries the application's own
/// span and its sampling decision (which may have upgraded ours).
pub fn keep_upstream_traceresponse(ours: &str, upstream: &str) -> bool {
    match (TraceParent::parse(ours), TraceParent::parse(upstream)) {
        (Ok(ours), Ok(theirs)) => ours.trace_id == theirs.trace_id,
        _ => false,
    }
}

/// For traces without an inherited decision: sampled when the trace id's random bits
/// fall under the (route's) ratio threshold. Deterministic per trace id, so every hop
/// that decides agrees.
fn sample_by_ratio(
    config: &CompiledConfig,
    request: &RequestHead,
    trace_id: &TraceId,
    flags: u8,
) -> u8 {
    if trace_id.random_bits() < ratio_threshold(config, request) {
        flags | FLAG_SAMPLED
    } else {
        flags
    }
}

fn write_trace_headers(
    config: &CompiledConfig,
    direction: Direction,
    request: &RequestHead,
    outcome: &mut Outcome,
) {
    let emit = &config.hop(direction).emit;
    outcome
        .remove
        .extend(["traceparent", "tracestate", "b3"].map(String::from));
    outcome.remove.extend(B3_MULTI.map(String::from));
    if emit.contains(&Format::W3c) {
        outcome
            .set
            .push(("traceparent".into(), outcome.traceparent()));
        let mut state = if outcome.source == Source::W3c {
            match TraceState::parse(request.header_values("tracestate")) {
                Ok(state) => state,
                Err(_) => {
                    outcome.tracestate_dropped = true;
                    TraceState::default()
                }
            }
        } else {
            // Restarted, converted or new: an incoming tracestate belongs to another trace.
            outcome.tracestate_dropped = request.header("tracestate").is_some();
            TraceState::default()
        };
        if let Some(key) = &config.vendor_key {
            state.upsert_front(key, &outcome.span_id.hex());
        }
        if !state.is_empty() {
            outcome.set.push(("tracestate".into(), state.format()));
        }
    }
    let sampling = if outcome.debug {
        Sampling::Debug
    } else if outcome.sampled() {
        Sampling::Accept
    } else {
        Sampling::Deny
    };
    if emit.contains(&Format::B3Single) {
        let value = b3::format_single(
            &outcome.trace_id,
            &outcome.span_id,
            sampling,
            outcome.parent_id.as_ref(),
        );
        outcome.set.push(("b3".into(), value));
    }
    if emit.contains(&Format::B3Multi) {
        outcome
            .set
            .push(("x-b3-traceid".into(), outcome.trace_id.hex()));
        outcome
            .set
            .push(("x-b3-spanid".into(), outcome.span_id.hex()));
        if let Some(parent) = outcome.parent_id {
            outcome.set.push(("x-b3-parentspanid".into(), parent.hex()));
        }
        // Debug is sent as X-B3-Flags: 1, which implies sampling (no X-B3-Sampled).
        match sampling {
            Sampling::Debug => outcome.set.push(("x-b3-flags".into(), "1".into())),
            Sampling::Accept => outcome.set.push(("x-b3-sampled".into(), "1".into())),
            Sampling::Deny => outcome.set.push(("x-b3-sampled".into(), "0".into())),
        }
    }
}

fn write_baggage(config: &CompiledConfig, request: &RequestHead, outcome: &mut Outcome) {
    let has_baggage = request.header("baggage").is_some();
    let mut baggage = Baggage::parse(request.header_values("baggage"));
    baggage.restrict(config.baggage_allow.as_deref());
    outcome.baggage_dropped = baggage.dropped;
    if has_baggage && baggage.dropped > 0 {
        outcome.remove.push("baggage".into());
        if !baggage.is_empty() {
            outcome.set.push(("baggage".into(), baggage.format()));
        }
    }
    for (key, header) in &config.baggage_to_headers {
        outcome.remove.push(header.clone());
        // A decoded value may carry %0D%0A: never copy control characters into a header.
        let safe = |value: &String| !value.chars().any(|c| c.is_control() && c != '\t');
        if let Some(value) = baggage.decoded(key).filter(safe) {
            outcome.set.push((header.clone(), value));
        }
    }
}

fn write_request_id(
    config: &CompiledConfig,
    request: &RequestHead,
    random: &mut dyn Random,
    outcome: &mut Outcome,
) {
    if !config.request_id_generate || request.header(&config.request_id_header).is_some() {
        return;
    }
    let bytes = if config.request_id_from_trace {
        outcome.trace_id.0
    } else {
        let mut bytes = [0u8; 16];
        random.fill(&mut bytes);
        // RFC 9562 version 4, variant 10.
        if let Some(b) = bytes.get_mut(6) {
            *b = (*b & 0x0f) | 0x40;
        }
        if let Some(b) = bytes.get_mut(8) {
            *b = (*b & 0x3f) | 0x80;
        }
        bytes
    };
    outcome
        .set
        .push((config.request_id_header.clone(), uuid(&bytes)));
}

fn uuid(bytes: &[u8; 16]) -> String {
    let hex = encode_hex(bytes);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::parse;
    use meshward_filter_common::random::SeededRandom;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TRACE_HEX: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn run(config: &str, direction: Direction, headers: &[(&str, &str)]) -> Outcome {
        let config = parse(config.as_bytes()).unwrap();
        let mut pairs = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), "/".to_string()),
        ];
        pairs.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        process(
            &config,
            direction,
            &RequestHead::new(pairs, None),
            &mut SeededRandom::new(42),
        )
    }

    fn set<'a>(outcome: &'a Outcome, name: &str) -> Option<&'a str> {
        outcome
            .set
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn no_context_starts_a_random_sampled_trace() {
        let outcome = run("{}", Direction::Inbound, &[]);
        assert_eq!(outcome.source, Source::New);
        assert_eq!(outcome.restart, None);
        let header = TraceParent::parse(set(&outcome, "traceparent").unwrap()).unwrap();
        assert_eq!(header.flags, FLAG_SAMPLED | FLAG_RANDOM);
        assert_eq!(header.trace_id, outcome.trace_id);
        assert!(set(&outcome, "x-request-id").is_some());
        assert_eq!(outcome.response[0].0, "traceresponse");
        assert_eq!(outcome.response[0].1, outcome.traceparent());
    }

    #[test]
    fn valid_context_keeps_trace_id_and_tracestate_with_a_new_parent_id() {
        let outcome = run(
            r#"{"tracestate":{"vendorKey":"meshward"}}"#,
            Direction::Outbound,
            &[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")],
        );
        assert_eq!(outcome.source, Source::W3c);
        let header = TraceParent::parse(set(&outcome, "traceparent").unwrap()).unwrap();
        assert_eq!(header.trace_id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(header.parent_id.hex(), "00f067aa0ba902b7");
        assert_eq!(
            header.flags, FLAG_SAMPLED,
            "flags inherited (no random flag was set)"
        );
        assert_eq!(
            set(&outcome, "tracestate").unwrap(),
            format!("meshward={},congo=t61rcWkgMzE", header.parent_id.hex())
        );
        assert_eq!(outcome.parent_id.unwrap().hex(), "00f067aa0ba902b7");
        assert!(
            outcome.response.is_empty(),
            "no traceresponse outbound by default"
        );
    }

    #[test]
    fn invalid_or_duplicated_traceparent_restarts_and_drops_tracestate() {
        let bad = run(
            "{}",
            Direction::Inbound,
            &[
                ("traceparent", "00-zz-00f067aa0ba902b7-01"),
                ("tracestate", "a=1"),
            ],
        );
        assert!(matches!(bad.restart, Some(Restart::InvalidTraceparent(_))));
        assert_eq!(bad.source, Source::New);
        assert_ne!(bad.trace_id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(set(&bad, "tracestate"), None);
        assert!(bad.remove.contains(&"tracestate".to_string()));
        assert!(bad.tracestate_dropped);
        let twice = run(
            "{}",
            Direction::Inbound,
            &[("traceparent", PARENT), ("traceparent", PARENT)],
        );
        assert_eq!(twice.restart, Some(Restart::DuplicateTraceparent));
        assert_ne!(twice.trace_id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_tracestate_is_dropped_but_the_trace_continues() {
        let outcome = run(
            "{}",
            Direction::Inbound,
            &[("traceparent", PARENT), ("tracestate", "a=1,a=2")],
        );
        assert_eq!(outcome.source, Source::W3c);
        assert!(outcome.tracestate_dropped);
        assert_eq!(set(&outcome, "tracestate"), None);
    }

    #[test]
    fn b3_only_is_converted_and_w3c_wins_when_both_are_valid() {
        let b3 = run(
            r#"{"emit":["w3c","b3Single"]}"#,
            Direction::Inbound,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        );
        assert_eq!(b3.source, Source::B3);
        assert_eq!(b3.trace_id.hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(b3.sampled());
        assert_eq!(b3.parent_id.unwrap().hex(), "e457b5a2e4d86bd1");
        let single = set(&b3, "b3").unwrap();
        assert_eq!(
            single,
            format!(
                "80f198ee56343ba864fe8b2a57d3eff7-{}-1-e457b5a2e4d86bd1",
                b3.span_id.hex()
            )
        );
        let both = run(
            "{}",
            Direction::Inbound,
            &[
                ("traceparent", PARENT),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ],
        );
        assert_eq!(both.source, Source::W3c);
        assert_eq!(both.trace_id.hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            both.remove.contains(&"x-b3-traceid".to_string()),
            "stale B3 is not passed on when not emitted"
        );
    }

    #[test]
    fn b3_multi_emitted_and_b3_sampling_only_decides_a_new_trace() {
        let multi = run(
            r#"{"emit":["b3Multi"]}"#,
            Direction::Inbound,
            &[("traceparent", PARENT)],
        );
        assert_eq!(
            set(&multi, "x-b3-traceid"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(set(&multi, "x-b3-parentspanid"), Some("00f067aa0ba902b7"));
        assert_eq!(set(&multi, "x-b3-sampled"), Some("1"));
        assert_eq!(set(&multi, "traceparent"), None);
        let deny = run("{}", Direction::Inbound, &[("b3", "0")]);
        assert_eq!(deny.source, Source::New);
        assert!(!deny.sampled());
        let bad = run("{}", Direction::Inbound, &[("b3", "garbage")]);
        assert_eq!(bad.restart, Some(Restart::InvalidB3));
    }

    #[test]
    fn w3c_to_b3_to_w3c_round_trip_keeps_the_trace_and_chains_the_spans() {
        // Hop 1: W3C in, B3 single out.
        let hop1 = run(
            r#"{"emit":["b3Single"]}"#,
            Direction::Outbound,
            &[("traceparent", PARENT)],
        );
        let b3 = set(&hop1, "b3").unwrap().to_string();
        // Hop 2: B3 only in, W3C and B3 multi out.
        let hop2 = run(
            r#"{"emit":["w3c","b3Multi"]}"#,
            Direction::Inbound,
            &[("b3", &b3)],
        );
        assert_eq!(hop2.source, Source::B3);
        assert_eq!(hop2.trace_id.hex(), TRACE_HEX);
        assert_eq!(
            hop2.parent_id,
            Some(hop1.span_id),
            "hop 1's span is hop 2's parent"
        );
        let w3c = TraceParent::parse(set(&hop2, "traceparent").unwrap()).unwrap();
        assert_eq!(
            (w3c.trace_id.hex().as_str(), w3c.sampled()),
            (TRACE_HEX, true)
        );
        // Hop 3: back to W3C only.
        let hop3 = run(
            "{}",
            Direction::Inbound,
            &[
                ("traceparent", set(&hop2, "traceparent").unwrap()),
                ("x-b3-traceid", TRACE_HEX),
            ],
        );
        assert_eq!(hop3.source, Source::W3c);
        assert_eq!(hop3.parent_id, Some(hop2.span_id));
        assert!(hop3.remove.contains(&"x-b3-traceid".to_string()));
    }

    #[test]
    fn b3_64_bit_trace_ids_become_padded_w3c_ids() {
        let outcome = run(
            "{}",
            Direction::Inbound,
            &[
                ("x-b3-traceid", "64fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "0"),
            ],
        );
        let w3c = TraceParent::parse(set(&outcome, "traceparent").unwrap()).unwrap();
        assert_eq!(w3c.trace_id.hex(), "000000000000000064fe8b2a57d3eff7");
        assert!(!w3c.sampled());
        assert_eq!(
            w3c.flags & FLAG_RANDOM,
            0,
            "a converted id is not known to be random"
        );
    }

    #[test]
    fn only_present_headers_are_removed_and_repeats_are_removed_before_setting() {
        let plain = run("{}", Direction::Inbound, &[("traceparent", PARENT)]);
        assert!(
            plain.remove.is_empty(),
            "traceparent is replaced, nothing else is present: {:?}",
            plain.remove
        );
        let stale = run(
            "{}",
            Direction::Inbound,
            &[("traceparent", PARENT), ("b3", "0")],
        );
        assert_eq!(stale.remove, ["b3"]);
        let twice = run(
            "{}",
            Direction::Inbound,
            &[("traceparent", PARENT), ("traceparent", PARENT)],
        );
        assert_eq!(
            twice.remove,
            ["traceparent"],
            "removed first so the set leaves exactly one"
        );
    }

    #[test]
    fn b3_debug_survives_and_malformed_single_falls_back_to_multi() {
        let debug = run(
            r#"{"emit":["b3Single","b3Multi"]}"#,
            Direction::Inbound,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
        );
        assert!(
            set(&debug, "b3").unwrap().contains("-d-"),
            "{:?}",
            set(&debug, "b3")
        );
        assert_eq!(set(&debug, "x-b3-flags"), Some("1"));
        assert_eq!(set(&debug, "x-b3-sampled"), None);
        let fallback = run(
            "{}",
            Direction::Inbound,
            &[
                ("b3", "garbage"),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ],
        );
        assert_eq!((fallback.source, fallback.restart), (Source::B3, None));
        assert_eq!(fallback.trace_id.hex(), "80f198ee56343ba864fe8b2a57d3eff7");
    }

    #[test]
    fn baggage_values_with_control_characters_are_not_copied_into_headers() {
        let outcome = run(
            r#"{"baggage":{"toHeaders":[{"key":"k","header":"x-k"}]}}"#,
            Direction::Inbound,
            &[("baggage", "k=%0d%0aX-Evil:%201")],
        );
        assert_eq!(set(&outcome, "x-k"), None);
    }

    #[test]
    fn an_applications_traceresponse_for_the_same_trace_is_kept() {
        let ours = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(keep_upstream_traceresponse(
            ours,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
        ));
        assert!(
            !keep_upstream_traceresponse(
                ours,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            ),
            "another trace"
        );
        assert!(!keep_upstream_traceresponse(ours, "garbage"));
    }

    #[test]
    fn sampling_ratio_route_override_and_force_header() {
        let never = run(r#"{"sampling":{"ratio":0}}"#, Direction::Inbound, &[]);
        assert!(!never.sampled());
        let parent_unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let inherited = run(
            r#"{"sampling":{"ratio":1}}"#,
            Direction::Inbound,
            &[("traceparent", parent_unsampled)],
        );
        assert!(!inherited.sampled(), "parent-based");
        let route = run(
            r#"{"sampling":{"ratio":0,"routes":[{"match":{"path":{"exact":"/"}},"ratio":1}]}}"#,
            Direction::Inbound,
            &[],
        );
        assert!(route.sampled());
        let forced = run(
            r#"{"sampling":{"ratio":0,"forceHeader":"x-force-trace"}}"#,
            Direction::Inbound,
            &[("traceparent", parent_unsampled), ("x-force-trace", "1")],
        );
        assert!(forced.sampled());
    }

    #[test]
    fn ratio_decisions_follow_the_trace_ids_random_bits() {
        let config = parse(br#"{"sampling":{"ratio":0.25}}"#).unwrap();
        let mut random = SeededRandom::new(7);
        let sampled = (0..4000)
            .filter(|_| {
                process(
                    &config,
                    Direction::Inbound,
                    &RequestHead::default(),
                    &mut random,
                )
                .sampled()
            })
            .count();
        assert!(
            (800..1200).contains(&sampled),
            "≈25% of 4000, got {sampled}"
        );
        let low = TraceId::parse("ffffffffffffffffff00000000000001").unwrap();
        assert_eq!(
            sample_by_ratio(&config, &RequestHead::default(), &low, 0),
            FLAG_SAMPLED
        );
        let high = TraceId::parse("00000000000000000080000000000000").unwrap();
        assert_eq!(
            sample_by_ratio(&config, &RequestHead::default(), &high, 0),
            0
        );
    }

    #[test]
    fn baggage_is_filtered_limited_and_copied_to_headers() {
        let outcome = run(
            r#"{"baggage":{"allowKeys":["tenant","region"],"toHeaders":[{"key":"tenant","header":"x-tenant"},{"key":"user","header":"x-user"}]}}"#,
            Direction::Inbound,
            &[
                ("baggage", "tenant=acme%20corp,secret=1,region=eu"),
                ("x-user", "spoofed"),
            ],
        );
        assert_eq!(
            set(&outcome, "baggage"),
            Some("tenant=acme%20corp,region=eu")
        );
        assert_eq!(outcome.baggage_dropped, 1);
        assert_eq!(set(&outcome, "x-tenant"), Some("acme corp"));
        assert!(
            outcome.remove.contains(&"x-user".to_string()) && set(&outcome, "x-user").is_none(),
            "a client-set copy is removed"
        );
    }

    #[test]
    fn request_id_generated_only_when_absent_and_optionally_from_the_trace_id() {
        let present = run("{}", Direction::Inbound, &[("x-request-id", "abc")]);
        assert_eq!(set(&present, "x-request-id"), None);
        let random = run("{}", Direction::Inbound, &[]);
        let id = set(&random, "x-request-id").unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "UUID version 4");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "RFC 9562 variant"
        );
        let derived = run(
            r#"{"requestId":{"fromTraceId":true,"header":"x-correlation-id"}}"#,
            Direction::Inbound,
            &[("traceparent", PARENT)],
        );
        assert_eq!(
            set(&derived, "x-correlation-id"),
            Some("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
        );
    }
}
