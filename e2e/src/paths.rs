//! Where the harness finds things: the workspace root, Envoy, built wasm modules, a
//! free port.

use std::path::PathBuf;

/// The workspace root (this crate lives in `<root>/e2e`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Envoy from the project venv, or `MESHWARD_ENVOY` when set.
pub fn envoy_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("MESHWARD_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "Envoy not found at {}; run `cargo xtask setup` first",
            path.display()
        ))
    }
}

/// Folder `cargo xtask build-wasm` writes the modules to.
pub fn wasm_dir() -> PathBuf {
    workspace_root().join("target/meshward-wasm")
}

/// A built filter module, e.g. `wasm_module("meshward_ratelimit")`.
pub fn wasm_module(name: &str) -> Result<PathBuf, String> {
    let path = wasm_dir().join(format!("{name}.wasm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing; run `cargo xtask build-wasm` first",
            path.display()
        ))
    }
}

/// A port of 127.0.0.1 that was free a moment ago, for configs that must name a port up
/// front (prefer port 0 plus reading the bound port back wherever Envoy allows it).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}
