//! Running commands with visible progress: each step prints what it runs and how long
//! it took, and a failure names the command.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

pub fn root() -> PathBuf {
    meshward_e2e::paths::workspace_root()
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command with inherited output; fails with the command line when it fails.
pub fn step(title: &str, command: &mut Command) -> Result<(), String> {
    println!("\n==> {title}\n    $ {}", describe(command));
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("{title}: cannot run {}: {e}", describe(command)))?;
    let took = started.elapsed().as_secs_f64();
    if status.success() {
        println!("    ok ({took:.1}s)");
        Ok(())
    } else {
        Err(format!(
            "{title} failed ({status}) after {took:.1}s: {}",
            describe(command)
        ))
    }
}

/// Runs a command and returns its stdout, or None when it cannot run or fails.
pub fn output(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prepends the project's tool folders to PATH (node from .venv when installed there).
pub fn path_with_tools() -> std::ffi::OsString {
    let mut dirs = vec![root().join(".tools/bin"), root().join(".venv/bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}
