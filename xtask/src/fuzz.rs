//! `cargo xtask fuzz <filter> [--minutes N] [--target NAME]`: runs a cargo-fuzz
//! (libFuzzer) target of `filters/<filter>/fuzz` for N minutes (default 10) and prints
//! libFuzzer's final statistics. cargo-fuzz is built into .tools on first use; its `-Z`
//! flags are enabled on the stable toolchain with RUSTC_BOOTSTRAP=1.

use std::process::Command;

use crate::run::{cargo, path_with_tools, root, step};
use crate::setup::tools_bin;

pub fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: cargo xtask fuzz <filter> [--minutes N] [--target NAME]   (e.g. cargo xtask fuzz trace-inject)";
    let filter = args.first().ok_or(usage)?;
    let mut minutes: u64 = 10;
    let mut target = "headers".to_string();
    let mut rest = args.iter().skip(1);
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or(format!("{flag} needs a value\n{usage}"))?;
        match flag.as_str() {
            "--minutes" => {
                minutes = value
                    .parse()
                    .map_err(|_| format!("--minutes takes a number\n{usage}"))?
            }
            "--target" => target = value.clone(),
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    let fuzz_dir = root().join("filters").join(filter).join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        return Err(format!("{} has no fuzz targets", fuzz_dir.display()));
    }
    if !tools_bin("cargo-fuzz").is_file() {
        step(
            "build cargo-fuzz into .tools (crates.io)",
            cargo()
                .args(["install", "cargo-fuzz", "--root"])
                .arg(root().join(".tools")),
        )?;
    }
    let corpus = root().join("target/fuzz-corpus").join(filter).join(&target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("create {}: {e}", corpus.display()))?;
    let seconds = minutes.saturating_mul(60).max(1);
    step(
        &format!(
            "fuzz {filter}/{target} for {minutes} min (corpus: {})",
            corpus.display()
        ),
        Command::new(tools_bin("cargo-fuzz"))
            .current_dir(root())
            .env("PATH", path_with_tools())
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg(&target)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1"),
    )
}
