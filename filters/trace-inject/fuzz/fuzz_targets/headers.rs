//! Every trace-inject parser, and the whole processing model, on arbitrary input:
//! traceparent, tracestate, B3 (single and multi), baggage, the config loader.
//! Properties checked beyond "no panic": whatever parses re-serialises to something
//! that parses to the same value, and the outgoing traceparent is always valid.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_common::random::SeededRandom;
use meshward_filter_common::request::RequestHead;
use meshward_trace_inject::config::{self, Direction};
use meshward_trace_inject::traceparent::TraceParent;
use meshward_trace_inject::tracestate::TraceState;
use meshward_trace_inject::{b3, baggage::Baggage, propagate};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let mut next = || fields.next().unwrap_or("");
    let (tp, ts, single, multi, bag) = (next(), next(), next(), next(), next());

    if let Ok(parsed) = TraceParent::parse(tp) {
        let again = TraceParent::parse(&parsed.format()).expect("formatted traceparent parses");
        assert_eq!(
            (again.trace_id, again.parent_id),
            (parsed.trace_id, parsed.parent_id)
        );
    }
    if let Ok(state) = TraceState::parse(ts.split('\r')) {
        let again =
            TraceState::parse([state.format().as_str()]).expect("formatted tracestate parses");
        assert_eq!(again, state);
    }
    if let Some(parsed) = b3::parse_single(single) {
        if let Some(context) = parsed.context {
            let text = b3::format_single(
                &context.trace_id,
                &context.span_id,
                b3::Sampling::Accept,
                context.parent_span_id.as_ref(),
            );
            assert_eq!(
                b3::parse_single(&text).and_then(|b| b.context),
                Some(context)
            );
        }
    }
    let mut parts = multi.split(' ');
    let _ = b3::parse_multi(
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    let mut bag = Baggage::parse(bag.split('\r'));
    bag.restrict(None);
    assert!(bag.len() <= 64 && bag.format().len() <= 8192);
    let reparsed = Baggage::parse([bag.format().as_str()]);
    assert_eq!(reparsed.dropped, 0, "formatted baggage is valid");

    let _ = config::parse(data);
    let compiled =
        config::parse(b"{\"emit\":[\"w3c\",\"b3Single\",\"b3Multi\"]}").expect("static config");
    let headers = vec![
        ("traceparent".to_string(), tp.to_string()),
        ("tracestate".to_string(), ts.to_string()),
        ("b3".to_string(), single.to_string()),
        ("baggage".to_string(), bag.format()),
    ];
    let outcome = propagate::process(
        &compiled,
        Direction::Outbound,
        &RequestHead::new(headers, None),
        &mut SeededRandom::new(1),
    );
    TraceParent::parse(&outcome.traceparent()).expect("outgoing traceparent is valid");
});
