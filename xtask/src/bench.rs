//! `cargo xtask bench <ratelimit|trace-inject>`: what a filter costs per request,
//! measured against baselines in the same run. Envoy (one worker) is pinned to CPU 0 and answers with a
//! direct response, so the figures are Envoy + filters only; wrk runs pinned to CPU 1.
//! Scenarios are measured in interleaved rounds (A B C A B C ...) and reported as
//! medians with min–max.

use std::process::Command;

use meshward_e2e::bootstrap::{meshward_filter, native_local_ratelimit};
use meshward_e2e::{Bootstrap, Envoy, EnvoyOptions, Listener};

use crate::{build_wasm, setup};

pub(crate) const CONNECTIONS: &str = "32";

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
}

struct Scenario {
    name: &'static str,
    /// Index of the native-filter scenario this one is compared with.
    native: Option<usize>,
    envoy: Envoy,
    /// Extra wrk arguments (a header, a Lua script).
    wrk_args: Vec<String>,
    samples: Vec<Sample>,
}

fn parse_args(args: &[String]) -> Result<(String, u64, usize), String> {
    let usage =
        "usage: cargo xtask bench <ratelimit|trace-inject|idempotency|authz|global> [--seconds N] [--rounds N]\n       cargo xtask bench control-plane [--clients N] [--rounds N]";
    let mut seconds = 10;
    let mut rounds = 3;
    let mut it = args.iter();
    let filter = match it.next().map(String::as_str) {
        Some(filter @ ("ratelimit" | "trace-inject" | "idempotency" | "authz" | "global")) => {
            filter.to_string()
        }
        other => return Err(format!("{usage} (got {other:?})")),
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--seconds" => seconds = value.max(1),
            "--rounds" => rounds = usize::try_from(value.max(1)).unwrap_or(3),
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    Ok((filter, seconds, rounds))
}

pub(crate) const TRACEPARENT: &str =
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// (name, bootstrap, extra wrk arguments, index of the native equivalent) per
/// scenario; the first is the baseline.
pub type ScenarioSpec = (&'static str, Bootstrap, Vec<String>, Option<usize>);

/// Replays need a real upstream answer (`via_upstream`): the backend is a second
/// listener of the same pinned Envoy, in every idempotency scenario alike.
pub(crate) fn two_hops(filter: Option<serde_json::Value>) -> Bootstrap {
    let backend_port = meshward_e2e::paths::free_port().unwrap_or(18_099);
    let mut backend = Listener::new("backend", "none");
    backend.port = backend_port;
    backend.cluster = None;
    let mut ingress = Listener::new("ingress", "backend");
    if let Some(filter) = filter {
        ingress = ingress.http_filter(filter);
    }
    Bootstrap::empty()
        .cluster("backend", backend_port)
        .listener(ingress)
        .listener(backend)
}

/// A wrk Lua script written to target/bench, as wrk arguments.
fn wrk_script(name: &str, body: &str) -> Result<Vec<String>, String> {
    let dir = crate::run::root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(name);
    std::fs::write(&path, body).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(vec!["-s".to_string(), path.to_string_lossy().into_owned()])
}

fn scenarios(
    filter: &str,
    services: Option<&crate::bench_global::Services>,
) -> Result<Vec<ScenarioSpec>, String> {
    if filter == "authz" {
        return crate::bench_authz::scenarios();
    }
    if let Some(services) = services {
        return crate::bench_global::scenarios(
            services,
            wrk_script("idempotency-unique-keys.lua", UNIQUE_KEYS_SCRIPT)?,
            wrk_script("idempotency-fixed-key.lua", FIXED_KEY_SCRIPT)?,
        );
    }
    let base = Bootstrap::new(1).direct_response();
    Ok(match filter {
        "ratelimit" => vec![
            ("bare Envoy", base.clone(), vec![], None),
            (
                "native local_ratelimit",
                base.clone().http_filter(native_local_ratelimit(
                    1_000_000_000,
                    1_000_000_000,
                    "1s",
                )),
                vec![],
                None,
            ),
            (
                "meshward ratelimit",
                base.meshward_filter("meshward_ratelimit", MESHWARD_CONFIG)?,
                vec![],
                Some(1),
            ),
        ],
        "trace-inject" => {
            let header = vec!["-H".to_string(), TRACEPARENT.to_string()];
            vec![
                ("bare Envoy", base.clone(), vec![], None),
                (
                    "trace-inject, new trace",
                    base.clone()
                        .meshward_filter("meshward_trace_inject", "{}")?,
                    vec![],
                    None,
                ),
                (
                    "trace-inject, propagate",
                    base.meshward_filter("meshward_trace_inject", "{}")?,
                    header,
                    None,
                ),
            ]
        }
        _ => {
            let fixed = wrk_script("idempotency-fixed-key.lua", FIXED_KEY_SCRIPT)?;
            let unique = wrk_script("idempotency-unique-keys.lua", UNIQUE_KEYS_SCRIPT)?;
            let config = r#"{"maxEntries":100000,"maxStoredBytes":268435456}"#;
            vec![
                ("bare Envoy (2 hops)", two_hops(None), fixed.clone(), None),
                (
                    "idempotency, first execution",
                    two_hops(Some(meshward_filter("meshward_idempotency", config)?)),
                    unique,
                    None,
                ),
                (
                    "idempotency, replay",
                    two_hops(Some(meshward_filter("meshward_idempotency", config)?)),
                    fixed,
                    None,
                ),
            ]
        }
    })
}

const FIXED_KEY_SCRIPT: &str = r#"wrk.method = "POST"
wrk.body = '{"qty":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Idempotency-Key"] = '"bench-replay"'
"#;

/// Keys unique across wrk processes too: each warm-up and round is a new process, and an
/// unseeded `math.random` repeats its sequence, which would turn later rounds into replays.
const UNIQUE_KEYS_SCRIPT: &str = r#"wrk.method = "POST"
wrk.body = '{"qty":1}'
local run = tostring(os.time()) .. "-" .. tostring(os.clock())
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/", {["Content-Type"] = "application/json", ["Idempotency-Key"] = '"k-' .. run .. '-' .. counter .. '"'}, '{"qty":1}')
end
"#;

/// The limit is never reached: the benchmark measures the cost of deciding, keyed on
/// the client address like a typical per-client rule.
pub(crate) const MESHWARD_CONFIG: &str = r#"{"rules":[{"name":"bench","key":[{"type":"clientAddress"}],"limit":{"algorithm":"tokenBucket","requests":1000000000,"per":"1s","burst":1000000000}}]}"#;

pub fn run(args: &[String]) -> Result<(), String> {
    // The control plane benchmark needs no Envoy: its own load generator.
    if let Some(("control-plane", rest)) = args.split_first().map(|(f, r)| (f.as_str(), r)) {
        return crate::bench_control_plane::run(rest);
    }
    // No scenario set named: every scenario, written to docs/bench/REPORT.md.
    if args.first().is_none_or(|first| first.starts_with("--")) {
        return crate::bench_report::run(args);
    }
    let (filter, seconds, rounds) = parse_args(args)?;
    setup::ensure()?;
    setup::require_debian_tool("wrk", "wrk")?;
    setup::require_debian_tool("taskset", "util-linux")?;
    build_wasm::run()?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus < 2 {
        println!(
            "warning: {cpus} CPU available; Envoy and wrk will share it and figures will be noisy"
        );
    }
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warn".into(),
        pin_cpus: Some("0".into()),
    };
    let services = if filter == "global" {
        Some(crate::bench_global::Services::start()?)
    } else {
        None
    };
    let mut running = Vec::new();
    for (name, bootstrap, wrk_args, native) in scenarios(&filter, services.as_ref())? {
        println!("starting Envoy for {name}");
        running.push(Scenario {
            name,
            native,
            envoy: Envoy::start(&bootstrap, &options)?,
            wrk_args,
            samples: Vec::new(),
        });
    }
    println!("\nwarm-up (2 s each)");
    for scenario in &running {
        wrk(scenario.envoy.port(), 2, &scenario.wrk_args)?;
    }
    for round in 1..=rounds {
        for scenario in &mut running {
            let sample = wrk(scenario.envoy.port(), seconds, &scenario.wrk_args)?;
            println!(
                "round {round}/{rounds}  {:<26} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  non-2xx {}",
                scenario.name, sample.rps, sample.p50_us, sample.p99_us, sample.non_2xx
            );
            scenario.samples.push(sample);
        }
    }
    let check = match filter.as_str() {
        "ratelimit" => format!(
            "Meshward `allowed` counter: {}.",
            running
                .last()
                .map(|s| s
                    .envoy
                    .counter("wasmcustom.meshward.ratelimit.rule.bench.allowed"))
                .unwrap_or(0)
        ),
        "authz" => crate::bench_authz::check(&running.iter().map(|s| &s.envoy).collect::<Vec<_>>()),
        "global" => format!(
            "rate-limit service calls {} (errors {}); remote-store idempotency executions {}, replays {}. {} \
             In this report \"throughput vs native\" compares each global/remote scenario with its local/embedded equivalent.",
            running.get(2).map(|s| s.envoy.counter("wasmcustom.meshward.ratelimit.rls.calls")).unwrap_or(0),
            running.get(2).map(|s| s.envoy.counter("wasmcustom.meshward.ratelimit.rls.errors")).unwrap_or(0),
            running.get(5).map(|s| s.envoy.counter("wasmcustom.meshward.idempotency.executions")).unwrap_or(0),
            running.get(7).map(|s| s.envoy.counter("wasmcustom.meshward.idempotency.replays")).unwrap_or(0),
            services.as_ref().map(|s| s.check()).unwrap_or_default()
        ),
        "idempotency" => format!(
            "idempotency counters: executions {} (first-execution Envoy), replays {} (replay Envoy).",
            running.get(1).map(|s| s.envoy.counter("wasmcustom.meshward.idempotency.executions")).unwrap_or(0),
            running.get(2).map(|s| s.envoy.counter("wasmcustom.meshward.idempotency.replays")).unwrap_or(0)
        ),
        _ => format!(
            "trace-inject counters: generated {}, propagated {}.",
            running
                .get(1)
                .map(|s| s
                    .envoy
                    .counter("wasmcustom.meshward.trace_inject.generated"))
                .unwrap_or(0),
            running
                .get(2)
                .map(|s| s
                    .envoy
                    .counter("wasmcustom.meshward.trace_inject.propagated"))
                .unwrap_or(0)
        ),
    };
    let report = report(&filter, &running, seconds, rounds, &check);
    println!("\n{report}");
    let out = crate::run::root().join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join(format!("{filter}.md"));
    std::fs::write(&path, &report).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

pub(crate) fn wrk(port: u16, seconds: u64, extra: &[String]) -> Result<Sample, String> {
    let mut command = Command::new("taskset");
    command.args([
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c",
        CONNECTIONS,
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    command.args(extra);
    let out = command
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .map_err(|e| format!("run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("could not read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Sample> {
    let mut sample = Sample::default();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            sample.rps = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("50%") {
            sample.p50_us = parse_latency(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            sample.p99_us = parse_latency(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            sample.non_2xx = rest.trim().parse().ok()?;
        }
    }
    (sample.rps > 0.0).then_some(sample)
}

fn parse_latency(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value,
        "ms" => value * 1_000.0,
        "s" => value * 1_000_000.0,
        _ => return None,
    })
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Median, min, max.
pub(crate) fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut values = values.to_vec();
    let (min, max) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    (median(&mut values), min, max)
}

/// Median, min, max of one statistic of the samples.
pub(crate) fn stat(samples: &[Sample], f: fn(&Sample) -> f64) -> (f64, f64, f64) {
    spread(&samples.iter().map(f).collect::<Vec<_>>())
}

/// CPU µs per request above bare Envoy: Envoy is CPU-bound on its core, so 1/rps is
/// its CPU time per request.
pub(crate) fn added_us(rps: f64, bare_rps: f64) -> f64 {
    if rps > 0.0 && bare_rps > 0.0 {
        1e6 / rps - 1e6 / bare_rps
    } else {
        f64::NAN
    }
}

fn report(
    filter: &str,
    scenarios: &[Scenario],
    seconds: u64,
    rounds: usize,
    check: &str,
) -> String {
    let stat = |s: &Scenario, f: fn(&Sample) -> f64| stat(&s.samples, f);
    let bare_rps = scenarios
        .first()
        .map(|s| stat(s, |x| x.rps).0)
        .unwrap_or(0.0);
    let mut out = format!(
        "## {filter} benchmark\n\nEnvoy {} with 1 worker pinned to CPU 0, direct response; wrk -t1 -c{CONNECTIONS} pinned to CPU 1; \
         {rounds} interleaved rounds of {seconds} s; median (min–max).\n\n\
         | scenario | requests/s | p50 µs | p99 µs | throughput vs bare | added CPU µs/request | throughput vs native |\n|---|---|---|---|---|---|---|\n",
        setup::ENVOY_VERSION
    );
    for scenario in scenarios {
        let rps = stat(scenario, |x| x.rps);
        let p50 = stat(scenario, |x| x.p50_us);
        let p99 = stat(scenario, |x| x.p99_us);
        let added = added_us(rps.0, bare_rps);
        let vs_native = scenario
            .native
            .and_then(|i| scenarios.get(i))
            .map(|native| stat(native, |x| x.rps).0)
            .filter(|native_rps| *native_rps > 0.0)
            .map_or("–".to_string(), |native_rps| {
                format!("{:.2}", rps.0 / native_rps)
            });
        out.push_str(&format!(
            "| {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} | {:.1} | {vs_native} |\n",
            scenario.name,
            rps.0, rps.1, rps.2,
            p50.0, p50.1, p50.2,
            p99.0, p99.1, p99.2,
            if bare_rps > 0.0 { rps.0 / bare_rps } else { 0.0 },
            added
        ));
    }
    let non_2xx: u64 = scenarios
        .iter()
        .flat_map(|s| s.samples.iter())
        .map(|s| s.non_2xx)
        .sum();
    out.push_str(&format!(
        "\nNon-2xx responses across all runs: {non_2xx}. {check}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 2s test\n  Latency Distribution\n     50%  412.00us\n     75%  1.02ms\n     99%    2.50ms\n  100 requests in 2.00s\nRequests/sec:  25123.45\nTransfer/sec: 3MB\n";
        let sample = parse_wrk(text).unwrap();
        assert_eq!(sample.rps, 25123.45);
        assert_eq!(sample.p50_us, 412.0);
        assert_eq!(sample.p99_us, 2500.0);
        assert_eq!(sample.non_2xx, 0);
    }
}
