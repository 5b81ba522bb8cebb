//! B3 propagation, single header and multi-header form.
//!
//! Input lines: the `b3` value, then `X-B3-TraceId`, `X-B3-SpanId`,
//! `X-B3-ParentSpanId`, `X-B3-Sampled`, `X-B3-Flags` (a missing line is an absent
//! header). Properties: a parsed context re-serialises (`format_single`, lowercase,
//! 128-bit trace id) to a header that parses to the same context and sampling; the single
//! header and the multi-header form agree (the parts of a parsed single header, given as
//! the multi headers, parse to the same context and sampling); no B3 headers at all is
//! "none", not an error; a context never has all-zero ids.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_trace_inject::b3::{self, Sampling, B3};

fn round_trip(parsed: &B3) {
    let Some(context) = parsed.context else {
        return;
    };
    assert!(context.trace_id.0.iter().any(|b| *b != 0));
    assert!(context.span_id.0.iter().any(|b| *b != 0));
    let sampling = parsed.sampling.unwrap_or(Sampling::Accept);
    let text = b3::format_single(
        &context.trace_id,
        &context.span_id,
        sampling,
        context.parent_span_id.as_ref(),
    );
    assert!(!text.bytes().any(|b| b.is_ascii_uppercase()), "{text}");
    assert_eq!(text.split('-').next().map(str::len), Some(32), "{text}");
    let again = b3::parse_single(&text).expect("a formatted b3 header parses");
    assert_eq!(again.context, Some(context), "{text}");
    assert_eq!(again.sampling, Some(sampling), "{text}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let single = lines.next().unwrap_or("");
    let multi: Vec<Option<&str>> = (0..5).map(|_| lines.next()).collect();
    let header = |i: usize| multi.get(i).copied().flatten();

    if let Some(parsed) = b3::parse_single(single) {
        round_trip(&parsed);
        if parsed.context.is_some() {
            let mut parts = single.trim().split('-');
            let (trace, span, sampled, parent) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            assert_eq!(
                b3::parse_multi(trace, span, parent, sampled, None),
                Ok(Some(parsed)),
                "{single:?} as multi headers"
            );
        }
    }
    match b3::parse_multi(header(0), header(1), header(2), header(3), header(4)) {
        Ok(Some(parsed)) => {
            round_trip(&parsed);
            assert!(multi.iter().any(Option::is_some));
        }
        Ok(None) => assert!(multi.iter().all(Option::is_none)),
        Err(()) => assert!(header(0).is_some() || header(1).is_some()),
    }
    assert_eq!(b3::parse_multi(None, None, None, None, None), Ok(None));
});
