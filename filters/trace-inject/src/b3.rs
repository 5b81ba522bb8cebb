//! B3 propagation (openzipkin/b3-propagation): the single `b3` header
//! (`{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or a bare sampling state
//! `0`/`1`/`d`) and the multi-header form (`X-B3-TraceId`, `X-B3-SpanId`,
//! `X-B3-ParentSpanId`, `X-B3-Sampled`, `X-B3-Flags`). 64-bit trace ids are left-padded
//! with zeros to 128 bits. Hex is accepted in either case and emitted lowercase.

use crate::ids::{SpanId, TraceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    Accept,
    Deny,
    /// `d` / `X-B3-Flags: 1`: force sampling.
    Debug,
}

impl Sampling {
    pub fn sampled(self) -> bool {
        !matches!(self, Sampling::Deny)
    }

    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "1" | "true" => Some(Sampling::Accept),
            "0" | "false" => Some(Sampling::Deny),
            "d" => Some(Sampling::Debug),
            _ => None,
        }
    }
}

/// Ids present in B3 headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3Context {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
}

/// What B3 headers said: a context, a bare sampling decision, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct B3 {
    pub context: Option<B3Context>,
    pub sampling: Option<Sampling>,
}

fn trace_id(hex: &str) -> Option<TraceId> {
    let hex = hex.trim().to_ascii_lowercase();
    match hex.len() {
        32 => TraceId::parse(&hex),
        16 => TraceId::parse(&format!("{:0>32}", hex)),
        _ => None,
    }
}

fn span_id(hex: &str) -> Option<SpanId> {
    SpanId::parse(&hex.trim().to_ascii_lowercase())
}

/// Parses the single `b3` header; `None` when it is malformed.
pub fn parse_single(value: &str) -> Option<B3> {
    let value = value.trim();
    if let Some(sampling) = Sampling::parse(value) {
        return Some(B3 {
            context: None,
            sampling: Some(sampling),
        });
    }
    let mut parts = value.split('-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let sampling = match parts.next() {
        Some(state) => Some(Sampling::parse(state)?),
        None => None,
    };
    let parent = match parts.next() {
        Some(parent) => Some(span_id(parent)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(B3 {
        context: Some(B3Context {
            trace_id: trace,
            span_id: span,
            parent_span_id: parent,
        }),
        sampling,
    })
}

/// The multi-header form, from the header values present. `Ok(None)`: no B3 headers;
/// `Err(())`: present but malformed.
#[allow(clippy::result_unit_err)]
pub fn parse_multi(
    trace: Option<&str>,
    span: Option<&str>,
    parent: Option<&str>,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Result<Option<B3>, ()> {
    if [trace, span, parent, sampled, flags]
        .iter()
        .all(Option::is_none)
    {
        return Ok(None);
    }
    // An unreadable X-B3-Sampled is "no decision", not a reason to drop the ids.
    let sampling = if flags.map(str::trim) == Some("1") {
        Some(Sampling::Debug)
    } else {
        sampled.and_then(Sampling::parse)
    };
    let context = match (trace, span) {
        (Some(trace), Some(span)) => Some(B3Context {
            trace_id: trace_id(trace).ok_or(())?,
            span_id: span_id(span).ok_or(())?,
            parent_span_id: match parent {
                Some(parent) => Some(span_id(parent).ok_or(())?),
                None => None,
            },
        }),
        (None, None) => None,
        _ => return Err(()),
    };
    Ok(Some(B3 { context, sampling }))
}

/// `b3: {trace}-{span}-{1|0|d}[-{parent}]`.
pub fn format_single(
    trace_id: &TraceId,
    span_id: &SpanId,
    sampling: Sampling,
    parent: Option<&SpanId>,
) -> String {
    let state = match sampling {
        Sampling::Accept => '1',
        Sampling::Deny => '0',
        Sampling::Debug => 'd',
    };
    let mut out = format!("{}-{}-{state}", trace_id.hex(), span_id.hex());
    if let Some(parent) = parent {
        out.push('-');
        out.push_str(&parent.hex());
    }
    out
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn single_header_forms() {
        let full =
            parse_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .unwrap();
        let context = full.context.unwrap();
        assert_eq!(context.trace_id.hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(context.span_id.hex(), "e457b5a2e4d86bd1");
        assert_eq!(context.parent_span_id.unwrap().hex(), "05e3ac9a4f6e3b90");
        assert_eq!(full.sampling, Some(Sampling::Accept));
        let short = parse_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d").unwrap();
        assert_eq!(
            short.context.unwrap().trace_id.hex(),
            "000000000000000064fe8b2a57d3eff7",
            "64-bit ids are left-padded"
        );
        assert_eq!(short.sampling, Some(Sampling::Debug));
        assert_eq!(
            parse_single("0"),
            Some(B3 {
                context: None,
                sampling: Some(Sampling::Deny)
            })
        );
        assert_eq!(parse_single("d").unwrap().sampling, Some(Sampling::Debug));
        assert!(
            parse_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")
                .unwrap()
                .sampling
                .is_none()
        );
    }

    #[test]
    fn single_header_rejects_malformed_values() {
        for bad in [
            "",
            "x",
            "abc-def",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
            "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-extra",
            "123-e457b5a2e4d86bd1-1",
        ] {
            assert!(parse_single(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn multi_header_forms() {
        let b3 = parse_multi(
            Some("463ac35c9f6413ad48485a3953bb6124"),
            Some("a2fb4a1d1a96d312"),
            Some("0020000000000001"),
            Some("1"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            b3.context.unwrap().parent_span_id.unwrap().hex(),
            "0020000000000001"
        );
        assert_eq!(b3.sampling, Some(Sampling::Accept));
        assert_eq!(parse_multi(None, None, None, None, None), Ok(None));
        assert_eq!(
            parse_multi(None, None, None, Some("0"), None)
                .unwrap()
                .unwrap()
                .sampling,
            Some(Sampling::Deny)
        );
        assert_eq!(
            parse_multi(
                Some("463ac35c9f6413ad"),
                Some("a2fb4a1d1a96d312"),
                None,
                None,
                Some("1")
            )
            .unwrap()
            .unwrap()
            .sampling,
            Some(Sampling::Debug)
        );
        assert!(
            parse_multi(Some("463ac35c9f6413ad"), None, None, None, None).is_err(),
            "trace id without span id"
        );
        assert!(parse_multi(Some("zz"), Some("a2fb4a1d1a96d312"), None, None, None).is_err());
        assert_eq!(
            parse_multi(None, None, None, Some("maybe"), None),
            Ok(Some(B3::default())),
            "unreadable sampling is no decision"
        );
    }

    #[test]
    fn round_trip_through_the_single_form() {
        let trace = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::parse("00f067aa0ba902b7").unwrap();
        let parent = SpanId::parse("b7ad6b7169203331").unwrap();
        let text = format_single(&trace, &span, Sampling::Accept, Some(&parent));
        assert_eq!(
            text,
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-b7ad6b7169203331"
        );
        let back = parse_single(&text).unwrap().context.unwrap();
        assert_eq!(
            (back.trace_id, back.span_id, back.parent_span_id),
            (trace, span, Some(parent))
        );
    }
}
