//! `cargo xtask bench [--seconds N] [--rounds N]`: every scenario of
//! docs/bench/REPORT.md in one run — bare Envoy, the trivial one-header wasm filter
//! (the floor any wasm filter pays), Envoy's native `local_ratelimit` and `jwt_authn`
//! (RS256, with and without its cache), each Meshward filter alone, the four as
//! separate filters, and the bundle — then writes the report. Envoy (one worker) is
//! pinned to CPU 0 and answers with a direct response; wrk is pinned to CPU 1 with a
//! fixed duration and connection count; scenarios are measured in interleaved rounds
//! (A B C … A B C …) and reported as median (min–max). Every request carries the same
//! headers (an RS256 bearer token and a traceparent), so each scenario sees the same
//! traffic; a request a filter refused would show as non-2xx.

use std::path::PathBuf;
use std::process::Command;

use meshward_e2e::bootstrap::{native_local_ratelimit, wasm_filter};
use meshward_e2e::{Bootstrap, Envoy, EnvoyOptions};
use meshward_jwt_testkit::{jwks, now_secs, Alg, Signer};
use serde_json::{json, Value};

use crate::bench::{
    added_us, spread, stat, wrk, Sample, CONNECTIONS, MESHWARD_CONFIG, TRACEPARENT,
};
use crate::bench_authz::{meshward_config as authz_config, native_jwt_authn, ISSUER};
use crate::run::{cargo, root, step};
use crate::{build_wasm, setup};

const TRACE_CONFIG: &str = "{}";
const IDEMPOTENCY_CONFIG: &str = r#"{"maxEntries":100000,"maxStoredBytes":268435456}"#;
const TRIVIAL: &str = "meshward_bench_trivial";

/// What a scenario is compared with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Baseline,
    Floor,
    Native,
    Meshward,
}

struct Spec {
    name: String,
    role: Role,
    bootstrap: Bootstrap,
    /// Name of the native scenario doing the same job, if any.
    native: Option<&'static str>,
    /// Wasm modules loaded (for size), and how many distinct VMs per thread.
    modules: Vec<&'static str>,
}

struct Measured {
    spec: Spec,
    envoy: Envoy,
    samples: Vec<Sample>,
    /// Envoy's CPU µs per request in each round (from /proc, so load elsewhere on the
    /// machine does not inflate it the way it lowers throughput).
    cpu_us: Vec<f64>,
    rss_bytes: Option<u64>,
}

struct Options {
    seconds: u64,
    rounds: usize,
    /// Only scenarios whose name contains one of these (and bare Envoy); the report
    /// is then printed, not written.
    only: Vec<String>,
    /// Folders of other builds of the modules (`--compare DIR`, repeatable; e.g. a
    /// checkout's target/meshward-wasm before a change): every Meshward scenario run is
    /// measured with each of them too, in the same rounds — how the effect of a change
    /// is measured.
    compare: Vec<PathBuf>,
    /// `--host-calls`: instead of the report, the cost of each kind of host call
    /// (the trivial filter repeating one operation), to docs/bench/host-calls.md.
    host_calls: bool,
}

/// Host operations the trivial filter can repeat (its configuration; see bench/trivial).
const HOST_CALLS: [&str; 12] = [
    "all_headers",
    "one_header",
    "set_header",
    "get_property source.address",
    "get_property xds.listener_direction",
    "get_property listener_direction",
    "set_property",
    "metric",
    "log_level",
    "clock",
    "shared_data",
    "random",
];
const REPEAT: u32 = 20;

fn parse_args(args: &[String]) -> Result<Options, String> {
    let usage =
        "usage: cargo xtask bench [--seconds N] [--rounds N] [--only NAME,NAME] [--compare DIR] [--host-calls]";
    let mut options = Options {
        seconds: 10,
        rounds: 5,
        only: Vec::new(),
        compare: Vec::new(),
        host_calls: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--host-calls" {
            options.host_calls = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{usage}"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} needs a number\n{usage}"))
        };
        match flag.as_str() {
            "--seconds" => options.seconds = number()?.max(1),
            "--rounds" => options.rounds = usize::try_from(number()?.max(1)).unwrap_or(5),
            "--only" => options.only = value.split(',').map(str::to_owned).collect(),
            "--compare" => options.compare.push(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    Ok(options)
}

/// Where the Meshward modules of a set of scenarios come from.
struct Modules {
    dir: PathBuf,
}

impl Modules {
    /// The HTTP filter entry for module `name` of this folder.
    fn filter(&self, name: &str, config: &str) -> Result<Value, String> {
        let path = self.dir.join(format!("{name}.wasm"));
        if !path.is_file() {
            return Err(format!("{} is missing", path.display()));
        }
        Ok(wasm_filter(&path, name, config))
    }
}

/// The four Meshward filters, each as its own module, in the bundle's order.
fn separate_filters(modules: &Modules, document: &str) -> Result<Vec<Value>, String> {
    Ok(vec![
        modules.filter("meshward_trace_inject", TRACE_CONFIG)?,
        modules.filter("meshward_authz", &authz_config(document, 1024))?,
        modules.filter("meshward_ratelimit", MESHWARD_CONFIG)?,
        modules.filter("meshward_idempotency", IDEMPOTENCY_CONFIG)?,
    ])
}

fn bundle_config(document: &str) -> String {
    format!(
        r#"{{"traceInject": {TRACE_CONFIG}, "authz": {}, "ratelimit": {MESHWARD_CONFIG}, "idempotency": {IDEMPOTENCY_CONFIG}}}"#,
        authz_config(document, 1024)
    )
}

fn specs(
    document: &str,
    trivial: &std::path::Path,
    modules: &Modules,
) -> Result<Vec<Spec>, String> {
    let base = Bootstrap::new(1).direct_response();
    let with = |filters: Vec<Value>| {
        filters.into_iter().fold(base.clone(), |bootstrap, filter| {
            bootstrap.http_filter(filter)
        })
    };
    let mut native_uncached = native_jwt_authn(document);
    if let Some(provider) = native_uncached.pointer_mut("/typed_config/providers/bench") {
        if let Some(object) = provider.as_object_mut() {
            object.remove("jwt_cache_config");
        }
    }
    let spec = |name: &str, role, bootstrap, native, modules: &[&'static str]| Spec {
        name: name.to_owned(),
        role,
        bootstrap,
        native,
        modules: modules.to_vec(),
    };
    let native_rl = native_local_ratelimit(1_000_000_000, 1_000_000_000, "1s");
    Ok(vec![
        spec("bare Envoy", Role::Baseline, base.clone(), None, &[]),
        spec(
            "trivial wasm filter (1 header read, 1 added)",
            Role::Floor,
            with(vec![wasm_filter(trivial, TRIVIAL, "")]),
            None,
            &[TRIVIAL],
        ),
        spec(
            "native local_ratelimit",
            Role::Native,
            with(vec![native_rl.clone()]),
            None,
            &[],
        ),
        spec(
            "native jwt_authn RS256, cache on",
            Role::Native,
            with(vec![native_jwt_authn(document)]),
            None,
            &[],
        ),
        spec(
            "native jwt_authn RS256, no cache",
            Role::Native,
            with(vec![native_uncached]),
            None,
            &[],
        ),
        spec(
            "native jwt_authn (cache) + local_ratelimit",
            Role::Native,
            with(vec![native_jwt_authn(document), native_rl]),
            None,
            &[],
        ),
        spec(
            "meshward trace-inject",
            Role::Meshward,
            with(vec![modules.filter("meshward_trace_inject", TRACE_CONFIG)?]),
            None,
            &["meshward_trace_inject"],
        ),
        spec(
            "meshward authz RS256, cache on",
            Role::Meshward,
            with(vec![
                modules.filter("meshward_authz", &authz_config(document, 1024))?
            ]),
            Some("native jwt_authn RS256, cache on"),
            &["meshward_authz"],
        ),
        spec(
            "meshward ratelimit",
            Role::Meshward,
            with(vec![modules.filter("meshward_ratelimit", MESHWARD_CONFIG)?]),
            Some("native local_ratelimit"),
            &["meshward_ratelimit"],
        ),
        spec(
            "meshward idempotency (GET, no key)",
            Role::Meshward,
            with(vec![
                modules.filter("meshward_idempotency", IDEMPOTENCY_CONFIG)?
            ]),
            None,
            &["meshward_idempotency"],
        ),
        spec(
            "four separate Meshward filters",
            Role::Meshward,
            with(separate_filters(modules, document)?),
            Some("native jwt_authn (cache) + local_ratelimit"),
            &[
                "meshward_trace_inject",
                "meshward_authz",
                "meshward_ratelimit",
                "meshward_idempotency",
            ],
        ),
        spec(
            "meshward bundle (all four)",
            Role::Meshward,
            with(vec![
                modules.filter("meshward_bundle", &bundle_config(document))?
            ]),
            Some("native jwt_authn (cache) + local_ratelimit"),
            &["meshward_bundle"],
        ),
    ])
}

/// Bare Envoy, the trivial filter, and the trivial filter repeating each host call.
fn host_call_specs(trivial: &std::path::Path) -> Vec<Spec> {
    let base = Bootstrap::new(1).direct_response();
    let mut specs = vec![
        Spec {
            name: "bare Envoy".into(),
            role: Role::Baseline,
            bootstrap: base.clone(),
            native: None,
            modules: Vec::new(),
        },
        Spec {
            name: "trivial".into(),
            role: Role::Floor,
            bootstrap: base.clone().http_filter(wasm_filter(trivial, TRIVIAL, "")),
            native: None,
            modules: vec![TRIVIAL],
        },
    ];
    for operation in HOST_CALLS {
        specs.push(Spec {
            name: operation.into(),
            role: Role::Meshward,
            bootstrap: base.clone().http_filter(wasm_filter(
                trivial,
                TRIVIAL,
                &match operation.split_once(' ') {
                    Some((op, path)) => format!("{op} {REPEAT} {path}"),
                    None => format!("{operation} {REPEAT}"),
                },
            )),
            native: None,
            modules: vec![TRIVIAL],
        });
    }
    specs
}

fn render_host_calls(measured: &[Measured], seconds: u64, rounds: usize) -> String {
    let cpu = |m: &Measured| spread(&m.cpu_us).0;
    let floor = measured.get(1).map_or(f64::NAN, cpu);
    let bare = measured.first().map_or(f64::NAN, cpu);
    let mut out = format!(
        "# Cost of proxy-wasm host calls in Envoy {} (V8)\n\n\
         Generated by `cargo xtask bench --host-calls --seconds {seconds} --rounds {rounds}`. \
         Machine: {}.\n\n\
         The trivial filter (bench/trivial) repeats one host operation {REPEAT} times per request; \
         Envoy (one worker, pinned to CPU 0, direct response) is loaded by wrk on CPU 1. Cost per call = \
         (Envoy CPU µs/request with the repetitions − without) / {REPEAT}, Envoy's CPU time read from /proc; \
         median of {rounds} interleaved rounds.\n\n\
         Bare Envoy: {bare:.1} µs/request; trivial filter: {floor:.1} µs/request ({:.1} µs added).\n\n\
         | host call | µs per call |\n|---|---|\n",
        setup::ENVOY_VERSION,
        machine(),
        floor - bare
    );
    for m in measured.iter().skip(2) {
        out.push_str(&format!(
            "| {} | {:.2} |\n",
            m.spec.name,
            (cpu(m) - floor) / f64::from(REPEAT)
        ));
    }
    out
}

/// The trivial filter, built for this run only (it is not a shipped module).
fn build_trivial() -> Result<PathBuf, String> {
    step(
        "build the trivial benchmark filter (wasm32-wasip1, release)",
        cargo().args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "meshward-bench-trivial",
        ]),
    )?;
    let built = root().join("target/wasm32-wasip1/release/meshward_bench_trivial.wasm");
    let target = meshward_e2e::paths::wasm_dir().join(format!("{TRIVIAL}.wasm"));
    std::fs::copy(&built, &target).map_err(|e| format!("copy {}: {e}", built.display()))?;
    Ok(target)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let Options {
        seconds,
        rounds,
        only,
        compare,
        host_calls,
    } = parse_args(args)?;
    setup::ensure()?;
    setup::require_debian_tool("wrk", "wrk")?;
    setup::require_debian_tool("taskset", "util-linux")?;
    build_wasm::run()?;
    let trivial = build_trivial()?;
    let signer = Signer::generate(Alg::RS256, "bench-key");
    let document = jwks(&[&signer]);
    let claims = json!({"iss": ISSUER, "sub": "bench-user", "exp": now_secs() + 86_400});
    let headers = vec![
        "-H".to_string(),
        format!("authorization: Bearer {}", signer.sign(&claims)),
        "-H".to_string(),
        TRACEPARENT.to_string(),
    ];
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warn".into(),
        pin_cpus: Some("0".into()),
    };
    let ours = Modules {
        dir: meshward_e2e::paths::wasm_dir(),
    };
    let mut specs = if host_calls {
        host_call_specs(&trivial)
    } else {
        specs(&document, &trivial, &ours)?
    };
    for dir in &compare {
        let other = Modules {
            dir: dir
                .canonicalize()
                .map_err(|e| format!("--compare {}: {e}", dir.display()))?,
        };
        let label = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let twins = self::specs(&document, &trivial, &other)?
            .into_iter()
            .filter(|spec| spec.role == Role::Meshward)
            .map(|spec| Spec {
                name: format!("{} [{label}]", spec.name),
                modules: Vec::new(),
                ..spec
            });
        specs.extend(twins);
    }
    let mut measured = Vec::new();
    for spec in specs {
        if spec.role != Role::Baseline
            && !only.is_empty()
            && !only.iter().any(|o| spec.name.contains(o.as_str()))
        {
            continue;
        }
        println!("starting Envoy for {}", spec.name);
        let envoy = Envoy::start(&spec.bootstrap, &options)?;
        measured.push(Measured {
            spec,
            envoy,
            samples: Vec::new(),
            cpu_us: Vec::new(),
            rss_bytes: None,
        });
    }
    let total = measured.len() as u64 * (rounds as u64 * seconds + 2);
    println!(
        "\nwarm-up 2 s each, then {rounds} interleaved rounds of {seconds} s (about {} min)",
        total.div_ceil(60)
    );
    for scenario in &measured {
        wrk(scenario.envoy.port(), 2, &headers)?;
    }
    for round in 1..=rounds {
        for scenario in &mut measured {
            let cpu_before = scenario.envoy.cpu_seconds()?;
            let sample = wrk(scenario.envoy.port(), seconds, &headers)?;
            let cpu = scenario.envoy.cpu_seconds()? - cpu_before;
            let cpu_us = cpu * 1e6 / (sample.rps * seconds as f64).max(1.0);
            println!(
                "round {round}/{rounds}  {:<46} {:>8.0} req/s  p50 {:>6.1} µs  p99 {:>7.1} µs  CPU {:>5.1} µs/req  non-2xx {}",
                scenario.spec.name, sample.rps, sample.p50_us, sample.p99_us, cpu_us, sample.non_2xx
            );
            scenario.samples.push(sample);
            scenario.cpu_us.push(cpu_us);
        }
    }
    for scenario in &mut measured {
        scenario.rss_bytes = scenario.envoy.rss_bytes().ok();
    }
    if host_calls {
        let report = render_host_calls(&measured, seconds, rounds);
        println!("\n{report}");
        let path = root().join("docs/bench/host-calls.md");
        std::fs::write(&path, &report).map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("written to {}", path.display());
        return Ok(());
    }
    let report = render(&measured, seconds, rounds, &headers);
    println!("\n{report}");
    if !only.is_empty() || !compare.is_empty() {
        println!("(--only/--compare: report not written)");
        return Ok(());
    }
    let path = root().join("docs/bench/REPORT.md");
    std::fs::write(&path, &report).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

fn module_size(name: &str) -> u64 {
    std::fs::metadata(meshward_e2e::paths::wasm_dir().join(format!("{name}.wasm")))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The hardware line of the control-plane benchmark, plus the software measured.
fn machine() -> String {
    let rustc = crate::run::output("rustc", &["-V"]).unwrap_or_default();
    let wrk_version = Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "{}; Envoy {} (V8); {}; {}",
        crate::bench_control_plane::machine(),
        setup::ENVOY_VERSION,
        rustc.trim(),
        wrk_version.trim()
    )
}

fn render(measured: &[Measured], seconds: u64, rounds: usize, headers: &[String]) -> String {
    let rps_of = |i: usize| {
        measured
            .get(i)
            .map_or(f64::NAN, |m| stat(&m.samples, |s| s.rps).0)
    };
    let bare_rps = rps_of(0);
    let bare_rss = measured.first().and_then(|m| m.rss_bytes);
    let added_of = |i: usize| added_us(rps_of(i), bare_rps);
    let floor = measured
        .iter()
        .position(|m| m.spec.role == Role::Floor)
        .map_or(f64::NAN, added_of);
    let mut out = String::new();
    out.push_str("# Meshward benchmark report\n\n");
    out.push_str(&format!(
        "Generated by `cargo xtask bench --seconds {seconds} --rounds {rounds}` (every figure below comes from that one run).\n\n"
    ));
    out.push_str(&format!("**Machine:** {}.\n\n", machine()));
    out.push_str(&format!(
        "**Method:** each scenario is its own Envoy (`taskset -c 0 envoy --concurrency 1 -l warn`, one worker, \
         listener with a direct 200 response, so the figures are Envoy plus filters); load from \
         `taskset -c 1 wrk -t1 -c{CONNECTIONS} -d{seconds}s --latency {} http://127.0.0.1:<port>/`. \
         After a 2 s warm-up per scenario, the scenarios are measured in {rounds} interleaved rounds \
         (A B C … A B C …); each cell is the median with (min–max). Envoy's core is saturated, so \
         1/throughput is its CPU time per request and *µs added* = 1/rps − 1/rps(bare); \
         *Envoy CPU µs/req* is measured directly (user + system time of the Envoy process from \
         /proc over the round, divided by the requests served) as a cross-check. \
         *× floor* divides that by the trivial filter's µs added. *vs native*: throughput ratio to the \
         native filter doing the same job (≥ 1 means faster). *RSS added*: Envoy's resident memory \
         after the run minus bare Envoy's, and per wasm VM (one per module per thread: the main \
         thread and the worker).\n\n",
        headers
            .chunks(2)
            .map(|pair| format!("{} '{}'", pair[0], shorten(&pair[1])))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.push_str("| scenario | module size | requests/s | p50 µs | p99 µs | Envoy CPU µs/req | µs added | × floor | vs native | RSS added (per VM) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, m) in measured.iter().enumerate() {
        let rps = stat(&m.samples, |s| s.rps);
        let p50 = stat(&m.samples, |s| s.p50_us);
        let p99 = stat(&m.samples, |s| s.p99_us);
        let cpu = spread(&m.cpu_us);
        let added = added_of(i);
        let size: u64 = m.spec.modules.iter().map(|name| module_size(name)).sum();
        let size = if m.spec.modules.is_empty() {
            "–".to_string()
        } else {
            format!("{:.0} KiB", size as f64 / 1024.0)
        };
        let times_floor = match m.spec.role {
            Role::Baseline => "–".to_string(),
            _ => format!("{:.2}", added / floor),
        };
        let vs_native = m
            .spec
            .native
            .and_then(|name| measured.iter().position(|n| n.spec.name == name))
            .map(rps_of)
            .filter(|native| *native > 0.0)
            .map_or("–".to_string(), |native| format!("{:.2}", rps.0 / native));
        let vms = (m.spec.modules.len() * 2).max(1);
        let rss = match (m.rss_bytes, bare_rss, m.spec.role) {
            (_, _, Role::Baseline) => m.rss_bytes.map_or("–".into(), |b| {
                format!("{:.1} MiB total", b as f64 / 1048576.0)
            }),
            (Some(rss), Some(bare), _) => {
                let added = rss as f64 - bare as f64;
                if m.spec.modules.is_empty() {
                    format!("{:.1} MiB", added / 1048576.0)
                } else {
                    format!(
                        "{:.1} MiB ({:.1})",
                        added / 1048576.0,
                        added / 1048576.0 / vms as f64
                    )
                }
            }
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {size} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.1} ({:.1}–{:.1}) | {} | {times_floor} | {vs_native} | {rss} |\n",
            m.spec.name,
            rps.0, rps.1, rps.2,
            p50.0, p50.1, p50.2,
            p99.0, p99.1, p99.2,
            cpu.0, cpu.1, cpu.2,
            if m.spec.role == Role::Baseline { "–".to_string() } else { format!("{added:.1}") },
        ));
    }
    let non_2xx: u64 = measured
        .iter()
        .flat_map(|m| m.samples.iter())
        .map(|s| s.non_2xx)
        .sum();
    out.push_str(&format!(
        "\nNon-2xx responses across all runs: {non_2xx}.\n"
    ));
    out.push_str(&headline(measured, &added_of, floor));
    out.push_str(&checks(measured));
    out.push_str(SEE_ALSO);
    out
}

const SEE_ALSO: &str =
    "\nEach optimisation and its measured effect, the opt-level comparison and where the \
remaining cost goes: [optimisations.md](optimisations.md); the cost of each kind of host call: \
[host-calls.md](host-calls.md).\n";

fn shorten(header: &str) -> String {
    match header.split_once("Bearer ") {
        Some((name, token)) => format!("{name}Bearer <RS256 JWT, {} bytes>", token.len()),
        None => header.to_string(),
    }
}

/// The ratios the targets are stated in.
fn headline(measured: &[Measured], added_of: &dyn Fn(usize) -> f64, floor: f64) -> String {
    let find = |name: &str| measured.iter().position(|m| m.spec.name == name);
    let ratio = |name: &str| find(name).map_or(f64::NAN, |i| added_of(i) / floor);
    let mut out = String::from("\n## Headline\n\n");
    out.push_str(&format!(
        "- Floor (trivial wasm filter): {floor:.1} µs per request.\n"
    ));
    out.push_str(&format!(
        "- Bundle with all four features: {:.2}× the floor (target ≤ 1.5×); the four as separate filters: {:.2}×.\n",
        ratio("meshward bundle (all four)"),
        ratio("four separate Meshward filters")
    ));
    for name in [
        "meshward trace-inject",
        "meshward authz RS256, cache on",
        "meshward ratelimit",
        "meshward idempotency (GET, no key)",
    ] {
        out.push_str(&format!(
            "- {name} alone: {:.2}× the floor (target ≤ 1.25×).\n",
            ratio(name)
        ));
    }
    if let (Some(authz), Some(native)) = (
        find("meshward authz RS256, cache on"),
        find("native jwt_authn RS256, no cache"),
    ) {
        out.push_str(&format!(
            "- authz with its cache adds {:.1} µs; native jwt_authn without cache adds {:.1} µs: {:.1}× less (target ≥ 3×). With its cache jwt_authn adds {:.1} µs.\n",
            added_of(authz),
            added_of(native),
            added_of(native) / added_of(authz),
            find("native jwt_authn RS256, cache on").map_or(f64::NAN, added_of)
        ));
    }
    out
}

/// Proof from each Envoy's counters that the filters did their work.
fn checks(measured: &[Measured]) -> String {
    let counter = |name: &str, stat: &str| {
        measured
            .iter()
            .find(|m| m.spec.name == name)
            .map_or(0, |m| m.envoy.counter(stat))
    };
    let verified = "wasmcustom.meshward.authz.provider.bench.verified";
    let allowed = "wasmcustom.meshward.ratelimit.rule.bench.allowed";
    let propagated = "wasmcustom.meshward.trace_inject.propagated";
    let mut out = String::from("\n## Checks\n\n");
    for name in [
        "four separate Meshward filters",
        "meshward bundle (all four)",
    ] {
        out.push_str(&format!(
            "- {name}: traces propagated {}, tokens verified {}, rate-limit allowed {}.\n",
            counter(name, propagated),
            counter(name, verified),
            counter(name, allowed)
        ));
    }
    out.push_str(&format!(
        "- jwt_authn allowed: cache on {}, no cache {}; Meshward authz alone verified {}.\n",
        counter(
            "native jwt_authn RS256, cache on",
            "http.ingress.jwt_authn.allowed"
        ),
        counter(
            "native jwt_authn RS256, no cache",
            "http.ingress.jwt_authn.allowed"
        ),
        counter("meshward authz RS256, cache on", verified)
    ));
    out
}
