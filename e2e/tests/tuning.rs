//! Runtime tuning end to end (issue #7, docs/adr/0007): the control plane in file mode,
//! the Rust agent (ADS + gRPC reports, in-process through the library) and the Go agent
//! (its probe process, HTTP long-poll + reports). Policy edits must reach both; the Go
//! runtime must really run with what was pushed (the probe reads the values back with
//! `debug.SetMemoryLimit(-1)` / `debug.SetGCPercent`); the adaptive GOGC must follow a
//! reported heap change as the ADR formula says, guard rail and hysteresis included;
//! and an agent must come back after a control-plane restart.
//!
//! Without Go (no `target/go/meshward-tuning-probe` and no `go` to build it) the Go
//! parts are skipped with a loud notice on stderr; the Rust parts always run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshward_e2e::control_plane::ControlPlane;
use meshward_e2e::tuning::{go_probe, skip_go, GoProbe, RustAgent, MIB};
use meshward_tuning_agent::{Event, RuntimeTuning};
use serde_json::Value;

/// Every wait is bounded by this (file poll 100 ms + two-read rule + delivery are far
/// below it).
const WAIT: Duration = Duration::from_secs(10);
const NAMESPACE: &str = "shop";
const WORKLOAD: &str = "orders";
const LABELS: [(&str, &str); 1] = [("app", "orders")];
const POLICY_ID: &str = "shop/orders-gc";
const RUST_NODE: &str = "orders-rs.shop";
const GO_NODE: &str = "orders-go.shop";
/// The container memory limit both agents report (overriding their cgroup's).
const LIMIT: u64 = 256 * MIB;

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: meshward.io/v1alpha1\n\
         kind: RuntimeTuning\n\
         metadata: {{name: orders-gc, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: orders}}}}\n{spec}"
    )
}

/// Writes by rename, as editors do, so the poller never reads half a file.
fn write_policy(dir: &Path, text: &str) {
    let tmp = dir.join(".tuning.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("tuning.yaml")).unwrap();
}

/// `GOMEMLIMIT = ⌊r × L⌋` (ADR 0007).
fn expected_memory_limit(ratio: f64, limit: u64) -> i64 {
    (ratio * limit as f64).floor() as i64
}

/// Adaptive GOGC per ADR 0007: `T = t × L`, `clamp(⌊(T − H)/H · 100⌋, min, max)`;
/// `H = 0` → `clamp(100, min, max)`. Also whether the guard rail holds it at `min`
/// (raw below min → `heapNearLimit`).
fn expected_gogc(min: i64, max: i64, target_ratio: f64, limit: u64, heap: u64) -> (i64, bool) {
    if heap == 0 {
        return (100.clamp(min, max), false);
    }
    let target = target_ratio * limit as f64;
    let raw = ((target - heap as f64) / heap as f64 * 100.0).floor() as i64;
    if raw < min {
        (min, true)
    } else {
        (raw.min(max), false)
    }
}

/// The Go probe binary, or `None` after the loud skip notice.
fn go_probe_or_skip(test: &str) -> Option<PathBuf> {
    match go_probe() {
        Ok(Some(binary)) => Some(binary),
        Ok(None) => {
            skip_go(test);
            None
        }
        Err(error) => panic!("{error}"),
    }
}

fn start_go(binary: &Path, control: &ControlPlane) -> GoProbe {
    let probe = GoProbe::start(
        binary,
        control.http_port(),
        GO_NODE,
        NAMESPACE,
        WORKLOAD,
        &LABELS,
        LIMIT,
    )
    .unwrap();
    probe
        .await_event("probe started", WAIT, |e| e["event"] == "started")
        .unwrap_or_else(|e| panic!("{e}\n{}", probe.output()));
    probe
}

fn start_rust(control: &ControlPlane) -> RustAgent {
    RustAgent::start(
        control.xds_port(),
        RUST_NODE,
        NAMESPACE,
        WORKLOAD,
        &LABELS,
        LIMIT,
    )
    .unwrap()
}

fn rust_applied(
    agent: &RustAgent,
    what: &str,
    predicate: impl Fn(&RuntimeTuning) -> bool,
) -> RuntimeTuning {
    agent
        .await_applied(what, WAIT, predicate)
        .unwrap_or_else(|e| panic!("Rust agent: {e}"))
}

/// A Go `applied` event with these values; asserts the Go runtime reads them back.
/// `None` = not set by the control plane: the process's own setting (Go's defaults, as
/// GOGC/GOMEMLIMIT are not in its environment) is read back.
fn go_applied(probe: &GoProbe, what: &str, memory: Option<i64>, gc: Option<i64>) -> Value {
    let event = probe
        .await_applied(what, WAIT, |e| {
            e["memoryLimitBytes"].as_i64() == memory && e["gcPercent"].as_i64() == gc
        })
        .unwrap_or_else(|e| panic!("Go probe: {e}"));
    assert_eq!(
        event["readbackMemoryLimit"].as_i64(),
        Some(memory.unwrap_or(i64::MAX)),
        "{what}: {event}"
    );
    assert_eq!(
        event["readbackGCPercent"].as_i64(),
        Some(gc.unwrap_or(100)),
        "{what}: {event}"
    );
    event
}

/// Waits (bounded) for the control plane's `/status` tuning entry of `node` to satisfy
/// `predicate` (status has no change notification, so this polls).
fn await_status(
    control: &ControlPlane,
    node: &str,
    what: &str,
    predicate: impl Fn(&Value) -> bool,
) {
    let started = Instant::now();
    loop {
        let status = control.status();
        if predicate(&status["tuning"][node]) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "status of {node} never showed {what}: {:#}",
            status["tuning"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn policy_edits_reach_the_rust_and_the_go_agent() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &policy("  memoryLimitRatio: 0.5\n  gogc: {fixed: 150}\n"),
    );
    let control = ControlPlane::start(dir.path()).unwrap();
    let rust = start_rust(&control);
    let go_binary = go_probe_or_skip("policy_edits_reach_the_rust_and_the_go_agent");
    let go = go_binary.as_deref().map(|b| start_go(b, &control));

    // The first document: ⌊0.5 × 256 MiB⌋ and the fixed GOGC.
    let first = rust_applied(&rust, "first document", |t| t.gc_percent == Some(150));
    assert_eq!(first.node_id, RUST_NODE);
    assert_eq!(first.policy, POLICY_ID);
    assert_eq!(
        first.memory_limit_bytes,
        Some(expected_memory_limit(0.5, LIMIT))
    );
    assert_eq!(first.memory_limit_bytes, Some(128 * MIB as i64));
    assert!(
        !first.version.is_empty() && !first.heap_near_limit,
        "{first:?}"
    );
    // The ACK reached the control plane (the instance counts as delivered), and it knows
    // the agent from its node metadata and reports.
    await_status(&control, RUST_NODE, "the ACKed version", |s| {
        s["delivered"] == true && s["version"] == first.version.as_str()
    });
    let status = control.status();
    let entry = &status["tuning"][RUST_NODE];
    assert!(
        entry["agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("meshward-tuning-agent-rust/")),
        "{entry:#}"
    );
    assert_eq!(entry["pod"], "orders-rs.shop-pod", "{entry:#}");
    assert_eq!(entry["container"], "app", "{entry:#}");
    assert_eq!(entry["reportedMemoryLimitBytes"], LIMIT, "{entry:#}");
    if let Some(go) = &go {
        go_applied(
            go,
            "first document",
            Some(expected_memory_limit(0.5, LIMIT)),
            Some(150),
        );
    }

    // Edits: each reaches both agents; the time from the write to the callback / to the
    // Go runtime running with it is reported.
    let edits: [(&str, Option<f64>, Option<i64>); 3] = [
        (
            "  memoryLimitRatio: 0.75\n  gogc: {fixed: 300}\n",
            Some(0.75),
            Some(300),
        ),
        // GOGC no longer set by the policy: the agents restore the process's own.
        ("  memoryLimitRatio: 0.75\n", Some(0.75), None),
        // Ratio back to its default (0.9), GOGC fixed again.
        ("  gogc: {fixed: 80}\n", Some(0.9), Some(80)),
    ];
    for (spec, ratio, gc) in edits {
        let memory = ratio.map(|r| expected_memory_limit(r, LIMIT));
        let written = Instant::now();
        write_policy(dir.path(), &policy(spec));
        let what = format!("edit to {spec:?}");
        let tuning = rust_applied(&rust, &what, |t| {
            t.memory_limit_bytes == memory && t.gc_percent.map(i64::from) == gc
        });
        let rust_took = written.elapsed();
        assert_eq!(tuning.policy, POLICY_ID);
        let go_took = go.as_ref().map(|go| {
            go_applied(go, &what, memory, gc);
            written.elapsed()
        });
        eprintln!("{what}: Rust agent {rust_took:?}, Go runtime {go_took:?}");
    }

    // No policy selects the workload any more: nothing is set, the processes are back to
    // their own settings (Go: no memory limit, GOGC 100).
    std::fs::remove_file(dir.path().join("tuning.yaml")).unwrap();
    let none = rust_applied(&rust, "policy removed", |t| t.policy.is_empty());
    assert_eq!(
        (none.memory_limit_bytes, none.gc_percent),
        (None, None),
        "{none:?}"
    );
    if let Some(go) = &go {
        go_applied(go, "policy removed", None, None);
    }
}

#[test]
fn adaptive_gogc_follows_the_reported_heap() {
    let (min, max, target_ratio, step) = (25, 500, 0.8, 10);
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        &policy(
            "  memoryLimitRatio: 0.9\n  gogc: {adaptive: {min: 25, max: 500, targetRatio: 0.8}}\n",
        ),
    );
    let control = ControlPlane::start(dir.path()).unwrap();
    let memory = expected_memory_limit(0.9, LIMIT);
    let gogc = |heap: u64| expected_gogc(min, max, target_ratio, LIMIT, heap);

    // --- Rust agent: the heap is exactly what the test reports.
    let rust = start_rust(&control);
    let first = rust_applied(&rust, "no heap yet", |_| true);
    assert_eq!(first.memory_limit_bytes, Some(memory), "{first:?}");
    assert_eq!(
        first.gc_percent.map(i64::from),
        Some(gogc(0).0),
        "{first:?}"
    );
    assert_eq!(
        first.gc_percent,
        Some(100),
        "Go's default within the bounds"
    );

    // 60 MiB of 204.8 MiB target: ⌊(204.8 − 60)/60 · 100⌋ = 241 (the numbers are far
    // from a rounding boundary, so exact equality is fair).
    let reported = Instant::now();
    rust.reporter().report_heap(60 * MIB);
    let (at_60, _) = gogc(60 * MIB);
    assert_eq!(at_60, 241);
    let tuning = rust_applied(&rust, "GOGC for 60 MiB", |t| {
        t.gc_percent.map(i64::from) == Some(at_60)
    });
    assert!(!tuning.heap_near_limit, "{tuning:?}");
    assert_eq!(
        tuning.memory_limit_bytes,
        Some(memory),
        "GOMEMLIMIT moves only with L or r"
    );
    eprintln!(
        "Rust agent: heap report → new GOGC applied in {:?}",
        reported.elapsed()
    );

    // 61 MiB → 235, within `step` of 241: kept, nothing pushed (hysteresis). A 1.7 % move
    // waits for the periodic report; the reply shows the unchanged document.
    assert!((gogc(61 * MIB).0 - at_60).abs() < step);
    rust.reporter().report_heap(61 * MIB);
    for round in 0..2 {
        let event = rust
            .await_event("a report of 61 MiB", WAIT, |e| {
                matches!(e, Event::Reported { live_heap_bytes, .. } if *live_heap_bytes == 61 * MIB)
            })
            .unwrap();
        let Event::Reported {
            current: Some(current),
            ..
        } = event
        else {
            panic!("report {round} without a document: {event:?}");
        };
        assert_eq!(
            current.gc_percent.map(i64::from),
            Some(at_60),
            "{current:?}"
        );
        assert_eq!(current.version, tuning.version, "same values, same version");
    }
    assert_eq!(rust.applied_since(), [], "a move within step is not pushed");

    // 200 MiB: the raw value (2) is below min: held at min and flagged (guard rail).
    rust.reporter().report_heap(200 * MIB);
    assert_eq!(gogc(200 * MIB), (min, true));
    let pressed = rust_applied(&rust, "GOGC held at min", |t| t.gc_percent == Some(25));
    assert!(pressed.heap_near_limit, "{pressed:?}");
    await_status(&control, RUST_NODE, "heapNearLimit", |s| {
        s["heapNearLimit"] == true && s["liveHeapBytes"] == 200 * MIB
    });
    // And back.
    rust.reporter().report_heap(60 * MIB);
    let relieved = rust_applied(&rust, "GOGC after the heap shrank", |t| {
        t.gc_percent.map(i64::from) == Some(at_60)
    });
    assert!(!relieved.heap_near_limit, "{relieved:?}");

    // --- Go probe: its real live heap, read by the Go runtime.
    let Some(binary) = go_probe_or_skip("adaptive_gogc_follows_the_reported_heap") else {
        return;
    };
    let mut go = start_go(&binary, &control);
    // A small heap: the raw GOGC is far above max → max.
    let small = go
        .await_applied("GOGC at max for a small heap", WAIT, |e| {
            e["gcPercent"].as_i64() == Some(max)
        })
        .unwrap_or_else(|e| panic!("Go probe: {e}"));
    assert_eq!(small["memoryLimitBytes"].as_i64(), Some(memory), "{small}");
    assert_eq!(
        small["readbackMemoryLimit"].as_i64(),
        Some(memory),
        "{small}"
    );
    assert_eq!(small["readbackGCPercent"].as_i64(), Some(max), "{small}");

    // 64 MiB more live heap: GOGC drops to about ⌊(204.8 − 64)/64 · 100⌋ = 220. The Go
    // runtime's heap figure catches up over a few reports, and the control plane follows
    // it in steps; hysteresis means a push only when the value moves by ≥ `step` (or
    // hits a bound). So: every push must be read back by the runtime and be at least
    // `step` from the previous one, and once the reported heap shows the growth, the
    // value in force must be within `step` of the formula for that heap.
    go.command("grow 64").unwrap();
    let grown = Instant::now();
    let deadline = grown + WAIT;
    let mut gc = max;
    let mut pushed = vec![gc];
    let mut heap: Option<u64> = None;
    let (gc, heap) = loop {
        let event = go.next_event(deadline).unwrap_or_else(|e| {
            panic!("GOGC did not follow the grown heap: {e}; pushed {pushed:?}, last heap {heap:?}")
        });
        match event["event"].as_str() {
            Some("reported") => heap = event["liveHeapBytes"].as_u64(),
            Some("applied") => {
                let next = event["gcPercent"].as_i64().unwrap();
                assert_eq!(event["readbackGCPercent"].as_i64(), Some(next), "{event}");
                assert_eq!(
                    event["readbackMemoryLimit"].as_i64(),
                    Some(memory),
                    "{event}"
                );
                assert!(
                    next == min || next == max || (next - gc).abs() >= step,
                    "pushed {next} after {gc}: a move below step {step} (pushed {pushed:?})"
                );
                gc = next;
                pushed.push(gc);
            }
            _ => {}
        }
        if let Some(h) = heap.filter(|h| *h >= 64 * MIB) {
            if (gc - gogc(h).0).abs() < step {
                break (gc, h);
            }
        }
    };
    let (expected, near) = gogc(heap);
    assert!(!near && expected < max, "{expected}");
    eprintln!(
        "Go probe: grow 64 MiB → GOGC {gc} (formula {expected} for H={heap}) in {:?}, pushes {pushed:?}",
        grown.elapsed()
    );

    // Shrinking brings the bound back (a bound is always delivered).
    go.command("shrink").unwrap();
    let back = go
        .await_applied("GOGC after shrink", WAIT, |e| {
            e["gcPercent"].as_i64() == Some(max)
        })
        .unwrap_or_else(|e| panic!("Go probe: {e}"));
    assert_eq!(back["readbackGCPercent"].as_i64(), Some(max), "{back}");
}

#[test]
fn agents_come_back_after_a_control_plane_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &policy("  gogc: {fixed: 150}\n"));
    let mut control = ControlPlane::start(dir.path()).unwrap();
    let rust = start_rust(&control);
    let go_binary = go_probe_or_skip("agents_come_back_after_a_control_plane_restart");
    let go = go_binary.as_deref().map(|b| start_go(b, &control));
    let memory = Some(expected_memory_limit(0.9, LIMIT));
    rust_applied(&rust, "first document", |t| t.gc_percent == Some(150));
    rust.reporter().report_heap(32 * MIB);
    if let Some(go) = &go {
        go_applied(go, "first document", memory, Some(150));
    }

    control.stop();
    let event = rust
        .await_event("the stream's end", WAIT, |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .unwrap();
    eprintln!("control plane stopped: {event:?}");
    control.restart().unwrap();
    let restarted = Instant::now();
    rust.await_event("reconnection", WAIT, |e| *e == Event::Connected)
        .unwrap();
    eprintln!(
        "Rust agent reconnected {:?} after the restart",
        restarted.elapsed()
    );
    // The restarted control plane learns the heap again: a report follows every
    // reconnection.
    await_status(&control, RUST_NODE, "the re-reported heap", |s| {
        s["liveHeapBytes"] == 32 * MIB && s["gcPercent"] == 150
    });
    // Same content after the restart: the application is not called again.
    assert_eq!(
        rust.applied_since(),
        [],
        "nothing new to apply after a restart"
    );

    // A policy edit after the restart reaches both.
    write_policy(dir.path(), &policy("  gogc: {fixed: 200}\n"));
    rust_applied(&rust, "edit after the restart", |t| {
        t.gc_percent == Some(200)
    });
    if let Some(go) = &go {
        go_applied(go, "edit after the restart", memory, Some(200));
    }
}
