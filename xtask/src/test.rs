//! `cargo xtask test`: the whole gate CI runs — formatting, lints (native and wasm),
//! unit tests natively and as wasm32 under Node, the wasm build, the Go tuning agent
//! (`go vet`/`go test`, probe build; skipped loudly without Go), and the e2e tests
//! against real Envoy.

use std::time::Instant;

use crate::run::{cargo, output, path_with_tools, step};
use crate::{build_wasm, go, setup};

/// Crates whose core is also tested as wasm32-unknown-unknown (without proxy-wasm).
const WASM_TESTED: [&str; 6] = [
    "meshward-filter-common",
    "meshward-bundle",
    "meshward-ratelimit",
    "meshward-trace-inject",
    "meshward-idempotency",
    "meshward-authz",
];

pub fn run() -> Result<(), String> {
    let started = Instant::now();
    setup::ensure()?;
    step("format", cargo().args(["fmt", "--all", "--check"]))?;
    step(
        "clippy (native, all targets)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    for packages in build_wasm::per_invocation() {
        let mut wasm_clippy = cargo();
        wasm_clippy.args(["clippy", "--target", "wasm32-wasip1"]);
        for package in &packages {
            wasm_clippy.args(["-p", package]);
        }
        step(
            &format!("clippy (wasm32-wasip1): {}", packages.join(" ")),
            wasm_clippy.args(["--", "-D", "warnings"]),
        )?;
    }
    build_wasm::run()?;

    let mut wasm_tests = cargo();
    wasm_tests
        .env("PATH", path_with_tools())
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            setup::tools_bin("wasm-bindgen-test-runner"),
        )
        .args([
            "test",
            "--target",
            "wasm32-unknown-unknown",
            "--lib",
            "--no-default-features",
        ]);
    for package in WASM_TESTED {
        wasm_tests.args(["-p", package]);
    }
    step(
        "core unit tests as wasm32-unknown-unknown under Node",
        &mut wasm_tests,
    )?;

    // Before the e2e tests: they run the probe it builds.
    let go_agent = go::run()?;

    let mut native = cargo();
    if output("cargo-nextest", &["--version"]).is_some()
        || output("cargo", &["nextest", "--version"]).is_some()
    {
        // e2e tests each start Envoy (2 workers); two at a time keeps a 2-core box sane.
        native.args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--test-threads",
            "2",
        ]);
    } else {
        native.args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--test-threads",
            "2",
        ]);
    }
    step("unit and e2e tests (native, real Envoy)", &mut native)?;
    println!(
        "\nall checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    go_agent.repeat_warning();
    Ok(())
}
