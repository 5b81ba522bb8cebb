//! `cargo xtask build-wasm`: every filter crate for wasm32-wasip1 in release, copied to
//! target/meshward-wasm/ with its size printed.

use std::path::PathBuf;

use crate::run::{cargo, root, step};

/// (cargo package, module file name without `.wasm`)
pub const FILTERS: [(&str, &str); 4] = [
    ("meshward-ratelimit", "meshward_ratelimit"),
    ("meshward-authz", "meshward_authz"),
    ("meshward-trace-inject", "meshward_trace_inject"),
    ("meshward-idempotency", "meshward_idempotency"),
];

pub fn run() -> Result<Vec<PathBuf>, String> {
    let mut command = cargo();
    command.args(["build", "--release", "--target", "wasm32-wasip1"]);
    for (package, _) in FILTERS {
        command.args(["-p", package]);
    }
    step("build wasm modules (wasm32-wasip1, release)", &mut command)?;
    let out_dir = meshward_e2e::paths::wasm_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let mut modules = Vec::new();
    println!("\nwasm modules in {}:", out_dir.display());
    for (_, module) in FILTERS {
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
