//! `cargo xtask fuzz <filter> [--minutes N] [--target NAME]` and
//! `cargo xtask fuzz --all [--minutes N]`: runs the cargo-fuzz (libFuzzer) targets of
//! `filters/<filter>/fuzz` — one target, every target of one filter, or every target of
//! every filter — N minutes each (default 10), one after the other, and prints each
//! target's libFuzzer statistics and a summary table at the end. cargo-fuzz is built
//! into .tools on first use; its `-Z` flags are enabled on the stable toolchain with
//! RUSTC_BOOTSTRAP=1.
//!
//! Per target, libFuzzer reads `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`
//! (committed) and grows its working corpus in `target/fuzz-corpus/<filter>/<target>/`;
//! a crash is written to `fuzz/artifacts/<target>/` (keep it in `fuzz/regressions/` and
//! as a unit test of the crate). `fuzz/dicts/<target>.dict`, when present, is passed as
//! the libFuzzer dictionary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::run::{cargo, path_with_tools, root, step};
use crate::setup::tools_bin;

const USAGE: &str = "usage: cargo xtask fuzz <filter> [--minutes N] [--target NAME]
       cargo xtask fuzz --all [--minutes N]
  (N may be fractional, e.g. --minutes 0.5; default 10 minutes per target)";

/// One target to run.
struct Job {
    filter: String,
    target: String,
}

/// What one run gave.
struct RunResult {
    job: Job,
    seconds: f64,
    executions: Option<u64>,
    per_second: Option<u64>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
    /// `None`: no crash; `Some(text)`: what failed (with the artifact when written).
    failure: Option<String>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut all = false;
    let mut filter: Option<String> = None;
    let mut target: Option<String> = None;
    let mut minutes: f64 = 10.0;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--all" => all = true,
            "--minutes" | "--target" => {
                let value = rest.next().ok_or(format!("{arg} needs a value\n{USAGE}"))?;
                if arg == "--minutes" {
                    minutes = value
                        .parse()
                        .ok()
                        .filter(|m: &f64| m.is_finite() && *m > 0.0)
                        .ok_or(format!("--minutes takes a positive number\n{USAGE}"))?;
                } else {
                    target = Some(value.clone());
                }
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{USAGE}")),
            name if filter.is_none() => filter = Some(name.to_owned()),
            extra => return Err(format!("unexpected argument {extra:?}\n{USAGE}")),
        }
    }
    let jobs = match (all, filter, target) {
        (true, None, None) => {
            let mut jobs = Vec::new();
            for filter in fuzzed_filters()? {
                jobs.extend(jobs_of(&filter)?);
            }
            jobs
        }
        (true, _, _) => return Err(format!("--all takes no filter or --target\n{USAGE}")),
        (false, Some(filter), Some(target)) => {
            let jobs = jobs_of(&filter)?;
            if !jobs.iter().any(|job| job.target == target) {
                return Err(format!(
                    "{filter} has no fuzz target {target:?} (targets: {})",
                    jobs.iter()
                        .map(|j| j.target.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            vec![Job { filter, target }]
        }
        (false, Some(filter), None) => jobs_of(&filter)?,
        (false, None, _) => return Err(USAGE.to_owned()),
    };
    if !tools_bin("cargo-fuzz").is_file() {
        step(
            "build cargo-fuzz into .tools (crates.io)",
            cargo()
                .args(["install", "cargo-fuzz", "--root"])
                .arg(root().join(".tools")),
        )?;
    }
    let seconds = (minutes * 60.0).round().max(1.0) as u64;
    println!(
        "fuzzing {} target(s), {seconds} s each: {}",
        jobs.len(),
        jobs.iter()
            .map(|j| format!("{}/{}", j.filter, j.target))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut results = Vec::new();
    for job in jobs {
        results.push(fuzz_one(job, seconds)?);
    }
    print_summary(&results, seconds);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|why| format!("{}/{}: {why}", r.job.filter, r.job.target))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} fuzz target(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        ))
    }
}

fn fuzz_dir(filter: &str) -> PathBuf {
    root().join("filters").join(filter).join("fuzz")
}

/// Filters with a `fuzz/Cargo.toml`, sorted.
fn fuzzed_filters() -> Result<Vec<String>, String> {
    let filters = root().join("filters");
    let entries =
        std::fs::read_dir(&filters).map_err(|e| format!("read {}: {e}", filters.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("fuzz/Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Every target of a filter: `fuzz/fuzz_targets/*.rs`, sorted.
fn jobs_of(filter: &str) -> Result<Vec<Job>, String> {
    let dir = fuzz_dir(filter);
    if !dir.join("Cargo.toml").is_file() {
        return Err(format!(
            "{} has no fuzz targets (filters with targets: {})",
            dir.display(),
            fuzzed_filters()?.join(", ")
        ));
    }
    let targets_dir = dir.join("fuzz_targets");
    let entries = std::fs::read_dir(&targets_dir)
        .map_err(|e| format!("read {}: {e}", targets_dir.display()))?;
    let mut targets: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    targets.sort();
    Ok(targets
        .into_iter()
        .map(|target| Job {
            filter: filter.to_owned(),
            target,
        })
        .collect())
}

/// `stat::<name>: <value>` from libFuzzer's `-print_final_stats=1`.
fn stat(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix("stat::")?.strip_prefix(name)?;
    rest.strip_prefix(':')?.trim().parse().ok()
}

fn fuzz_one(job: Job, seconds: u64) -> Result<RunResult, String> {
    let dir = fuzz_dir(&job.filter);
    let corpus = root()
        .join("target/fuzz-corpus")
        .join(&job.filter)
        .join(&job.target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("create {}: {e}", corpus.display()))?;
    let mut command = Command::new(tools_bin("cargo-fuzz"));
    command
        .current_dir(root())
        .env("PATH", path_with_tools())
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(&dir)
        .arg(&job.target)
        .arg(&corpus);
    // Read-only inputs: committed seeds and crashers (libFuzzer writes only to the first).
    for extra in ["seeds", "regressions"] {
        let path = dir.join(extra).join(&job.target);
        if path.is_dir() {
            command.arg(path);
        }
    }
    command
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A unit this slow is a bug (a parser stuck on its input), reported as a crash.
        .arg("-timeout=20")
        .arg("-print_final_stats=1");
    let dict = dir.join("dicts").join(format!("{}.dict", job.target));
    if dict.is_file() {
        command.arg(format!("-dict={}", dict.display()));
    }
    println!(
        "\n==> fuzz {}/{} for {seconds} s (corpus: {})",
        job.filter,
        job.target,
        relative(&corpus)
    );
    let started = Instant::now();
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", tools_bin("cargo-fuzz").display()))?;
    let mut result = RunResult {
        job,
        seconds: 0.0,
        executions: None,
        per_second: None,
        new_units: None,
        peak_rss_mb: None,
        failure: None,
    };
    let mut artifact: Option<String> = None;
    let mut error_line: Option<String> = None;
    let mut panicked = false;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // libFuzzer's per-input progress lines (NEW, REDUCE) are noise in a log of
            // many targets; pulses, errors and the final statistics are kept.
            let progress = line.starts_with('#')
                && [" NEW ", "\tNEW ", " REDUCE ", "\tREDUCE "]
                    .iter()
                    .any(|tag| line.contains(tag));
            if !progress {
                eprintln!("{line}");
            }
            if let Some(n) = stat(&line, "number_of_executed_units") {
                result.executions = Some(n);
            }
            if let Some(n) = stat(&line, "average_exec_per_sec") {
                result.per_second = Some(n);
            }
            if let Some(n) = stat(&line, "new_units_added") {
                result.new_units = Some(n);
            }
            if let Some(n) = stat(&line, "peak_rss_mb") {
                result.peak_rss_mb = Some(n);
            }
            if let Some((_, path)) = line.split_once("Test unit written to ") {
                artifact = Some(path.trim().to_owned());
            }
            if panicked {
                // The line after `thread '…' panicked at file:line:col:` is the message.
                if let Some(error) = error_line.as_mut() {
                    error.push(' ');
                    error.push_str(line.trim());
                }
                panicked = false;
            }
            if error_line.is_none()
                && (line.contains("==ERROR: libFuzzer")
                    || line.contains("ERROR: AddressSanitizer")
                    || line.starts_with("thread '"))
            {
                panicked = line.starts_with("thread '") && line.trim_end().ends_with(':');
                error_line = Some(line.trim().to_owned());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo-fuzz: {e}"))?;
    result.seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let what = error_line.unwrap_or_else(|| format!("cargo-fuzz exited with {status}"));
        result.failure = Some(match artifact {
            Some(path) => format!("{what} (crash input: {})", relative(Path::new(&path))),
            None => what,
        });
    }
    Ok(result)
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn print_summary(results: &[RunResult], seconds: u64) {
    let show = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    println!("\n==> fuzz summary ({seconds} s of fuzzing per target)\n");
    println!(
        "| {:<28} | {:>13} | {:>8} | {:>9} | {:>7} | {:>8} | result",
        "target", "executions", "execs/s", "new units", "RSS MB", "wall s"
    );
    println!(
        "|{:-<30}|{:-<15}|{:-<10}|{:-<11}|{:-<9}|{:-<10}|--------",
        "", "", "", "", "", ""
    );
    for r in results {
        println!(
            "| {:<28} | {:>13} | {:>8} | {:>9} | {:>7} | {:>8.0} | {}",
            format!("{}/{}", r.job.filter, r.job.target),
            show(r.executions),
            show(r.per_second),
            show(r.new_units),
            show(r.peak_rss_mb),
            r.seconds,
            r.failure.as_deref().unwrap_or("ok"),
        );
    }
    let total: u64 = results.iter().filter_map(|r| r.executions).sum();
    println!("\ntotal executions: {total}");
}
