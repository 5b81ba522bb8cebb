//! W3C `tracestate`, each input line one header line.
//!
//! Properties: several lines parse exactly like one line joining them with commas
//! (same state or same error); a parsed state has at most 32 members, every member's
//! key and value are valid and `get` finds them; it re-serialises to one line that
//! parses to the same state; this hop's entry (`upsert_front`) goes first, keeps the list
//! within 32 and the others in order, and the result still parses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_trace_inject::tracestate::{is_valid_key, is_valid_value, TraceState, MAX_MEMBERS};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let parsed = TraceState::parse(lines.iter().copied());
    let joined = lines.join(",");
    assert_eq!(TraceState::parse([joined.as_str()]), parsed, "{lines:?}");
    let Ok(state) = parsed else {
        return;
    };
    assert!(state.len() <= MAX_MEMBERS);
    let formatted = state.format();
    let members: Vec<(&str, &str)> = formatted
        .split(',')
        .filter(|member| !member.is_empty())
        .map(|member| member.split_once('=').expect("key=value"))
        .collect();
    assert_eq!(members.len(), state.len(), "{formatted:?}");
    for (key, value) in &members {
        assert!(
            is_valid_key(key) && is_valid_value(value),
            "{key:?}={value:?}"
        );
        assert_eq!(state.get(key), Some(*value));
    }
    assert_eq!(
        TraceState::parse([formatted.as_str()]).as_ref(),
        Ok(&state),
        "{formatted:?}"
    );

    let mut ours = state.clone();
    ours.upsert_front("meshward", "00f067aa0ba902b7");
    assert!(ours.len() <= MAX_MEMBERS);
    let written = ours.format();
    assert!(
        written.starts_with("meshward=00f067aa0ba902b7"),
        "{written:?}"
    );
    let others: Vec<&(&str, &str)> = members.iter().filter(|(k, _)| *k != "meshward").collect();
    let kept = ours.len() - 1;
    assert_eq!(kept, others.len().min(MAX_MEMBERS - 1));
    for (key, value) in others.iter().take(kept) {
        assert_eq!(ours.get(key), Some(*value));
    }
    assert_eq!(TraceState::parse([written.as_str()]).as_ref(), Ok(&ours));
});
