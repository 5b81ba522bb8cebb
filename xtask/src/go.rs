//! The Go runtime-tuning agent (`agents/go`, issue #7) in `cargo xtask test`: gofmt,
//! `go vet`, `go test`, and the probe binary the runtime-tuning e2e test runs
//! (`target/go/meshward-tuning-probe`). Go is optional on a developer machine: without
//! it the step is skipped with a loud banner (repeated in the final summary), and the
//! e2e test, finding no probe, skips loudly too. CI installs Debian's golang-go first
//! (`.ci/run`).

use std::path::PathBuf;
use std::process::Command;

use crate::run::{output, root, step};

/// Set for the rest of the run (and so for the e2e tests) when Go was not found.
pub const SKIPPED_ENV: &str = "MESHWARD_GO_AGENT_SKIPPED";

const SKIPPED: &str = "SKIPPED: Go agent tests (go not found; install golang-go)";

/// What happened to the Go step, for the summary.
#[must_use]
pub enum GoAgent {
    Tested,
    Skipped,
}

impl GoAgent {
    /// Repeats the skip banner at the end of the run, where it is read.
    pub fn repeat_warning(&self) {
        if let GoAgent::Skipped = self {
            banner(&[
                SKIPPED,
                "(see the banner above; the runtime-tuning e2e test skipped too)",
            ]);
        }
    }
}

fn agent_dir() -> PathBuf {
    root().join("agents/go")
}

/// Where the e2e test looks for the probe.
pub fn probe_path() -> PathBuf {
    root().join("target/go/meshward-tuning-probe")
}

/// Checks, tests and builds agents/go; skips (loudly, not failing) without `go`.
pub fn run() -> Result<GoAgent, String> {
    // A probe left by an earlier run must not stand in for today's sources.
    let probe = probe_path();
    if probe.exists() {
        std::fs::remove_file(&probe)
            .map_err(|e| format!("cannot remove the old {}: {e}", probe.display()))?;
    }
    let Some(version) = output("go", &["version"]) else {
        banner(&[
            SKIPPED,
            "agents/go was not vetted or tested and target/go/meshward-tuning-probe was not",
            "built, so the runtime-tuning e2e test skips too. CI installs golang-go (.ci/run).",
        ]);
        std::env::set_var(SKIPPED_ENV, "1");
        return Ok(GoAgent::Skipped);
    };
    println!("\n==> Go agent (agents/go) with {}", version.trim());

    let unformatted = Command::new("gofmt")
        .args(["-l", "."])
        .current_dir(agent_dir())
        .output()
        .map_err(|e| format!("gofmt: cannot run it (it comes with go): {e}"))?;
    let listed = String::from_utf8_lossy(&unformatted.stdout);
    if !unformatted.status.success() || !listed.trim().is_empty() {
        return Err(format!(
            "Go agent: gofmt -l lists files to format (run `gofmt -w .` in agents/go):\n{listed}{}",
            String::from_utf8_lossy(&unformatted.stderr)
        ));
    }
    println!("    gofmt: clean");

    step("Go agent: go vet", go().args(["vet", "./..."]))?;
    step("Go agent: go test", go().args(["test", "./..."]))?;
    let probe_arg = probe.to_string_lossy().into_owned();
    step(
        "Go agent: build the e2e probe",
        go().args(["build", "-o", &probe_arg, "./cmd/meshward-tuning-probe"]),
    )?;
    Ok(GoAgent::Tested)
}

/// `go` in agents/go, never reaching for the network: the module uses the standard
/// library only, and a newer go must not try to download another toolchain.
fn go() -> Command {
    let mut command = Command::new("go");
    command
        .current_dir(agent_dir())
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off");
    // Without HOME (some CI sandboxes) go has no default cache folder.
    if std::env::var_os("HOME").is_none() {
        let cache = root().join("target/go");
        if std::env::var_os("GOCACHE").is_none() {
            command.env("GOCACHE", cache.join("cache"));
        }
        if std::env::var_os("GOPATH").is_none() {
            command.env("GOPATH", cache.join("path"));
        }
    }
    command
}

fn banner(lines: &[&str]) {
    let rule = "!".repeat(86);
    println!("\n{rule}");
    for line in lines {
        println!("!! {line}");
    }
    println!("{rule}");
}
