//! `cargo xtask build-wasm`: every filter crate and the bundle for wasm32-wasip1 in
//! release, copied to target/meshward-wasm/ with its size printed.

use std::path::PathBuf;

use crate::run::{cargo, root, step};

/// (cargo package, module file name without `.wasm`): the filters, a module each.
pub const FILTERS: [(&str, &str); 4] = [
    ("meshward-ratelimit", "meshward_ratelimit"),
    ("meshward-authz", "meshward_authz"),
    ("meshward-trace-inject", "meshward_trace_inject"),
    ("meshward-idempotency", "meshward_idempotency"),
];

/// The bundle links the four filters as libraries without their entry points. It is
/// built by a cargo invocation of its own: built together with the filters, cargo
/// would unify their `module` feature into it and link five entry points.
pub const BUNDLE: (&str, &str) = ("meshward-bundle", "meshward_bundle");

/// Every module: the four filters, then the bundle.
pub fn modules() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILTERS.into_iter().chain([BUNDLE])
}

/// The cargo invocations that build (or lint) every module for wasm32-wasip1: the
/// filters together, the bundle alone.
pub fn per_invocation() -> [Vec<&'static str>; 2] {
    [
        FILTERS.iter().map(|(package, _)| *package).collect(),
        vec![BUNDLE.0],
    ]
}

pub fn run() -> Result<Vec<PathBuf>, String> {
    for packages in per_invocation() {
        let mut command = cargo();
        command.args(["build", "--release", "--target", "wasm32-wasip1"]);
        for package in &packages {
            command.args(["-p", package]);
        }
        step(
            &format!(
                "build wasm modules (wasm32-wasip1, release): {}",
                packages.join(" ")
            ),
            &mut command,
        )?;
    }
    let out_dir = meshward_e2e::paths::wasm_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let mut modules = Vec::new();
    println!("\nwasm modules in {}:", out_dir.display());
    for (_, module) in self::modules() {
        let built = root()
            .join("target/wasm32-wasip1/release")
            .join(format!("{module}.wasm"));
        let target = out_dir.join(format!("{module}.wasm"));
        std::fs::copy(&built, &target).map_err(|e| format!("copy {}: {e}", built.display()))?;
        let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        println!("  {module}.wasm  {:>8.1} KiB", size as f64 / 1024.0);
        modules.push(target);
    }
    Ok(modules)
}
