//! `cargo xtask package [--base-url URL]`: the release artifacts of the wasm modules for
//! installs without the control plane (istio-manifests/wasmplugin/): the four modules
//! and the bundle, their sha256 list (`sha256sum -c SHA256SUMS` checks it), and a
//! kustomize overlay of the four filters' WasmPlugins pointing at `URL/<module>.wasm`
//! with each module's sha256. Pushing
//! the modules as OCI artifacts is documented (docs/istio.md), not done here.

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::build_wasm;
use crate::run::root;

const DEFAULT_BASE_URL: &str = "https://modules.example.com/meshward";

pub fn run(args: &[String]) -> Result<(), String> {
    let base_url = match args {
        [] => format!("{DEFAULT_BASE_URL}/{}", env!("CARGO_PKG_VERSION")),
        [flag, url] if flag == "--base-url" => url.trim_end_matches('/').to_owned(),
        _ => return Err("usage: cargo xtask package [--base-url https://HOST/PATH]".into()),
    };
    if !base_url.starts_with("https://") && !base_url.starts_with("http://") {
        return Err(format!(
            "--base-url {base_url}: Istio fetches modules over http(s); give an https:// URL"
        ));
    }
    let modules = build_wasm::run()?;
    let out = root().join("target/meshward-package");
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let mut sums = String::new();
    let mut entries = Vec::new();
    for module in &modules {
        let name = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{}: no file name", module.display()))?;
        let bytes = std::fs::read(module).map_err(|e| format!("read {}: {e}", module.display()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        std::fs::write(out.join(&name), &bytes).map_err(|e| format!("write {name}: {e}"))?;
        let _ = writeln!(sums, "{sha256}  {name}");
        entries.push((name, sha256));
    }
    write(&out.join("SHA256SUMS"), &sums)?;
    // istio-manifests/wasmplugin/ installs the four filters; the bundle is packaged
    // (file and checksum) for a WasmPlugin of one's own, but has none there to patch.
    let bundle = format!("{}.wasm", build_wasm::BUNDLE.1);
    entries.retain(|(name, _)| *name != bundle);
    write(
        &out.join("kustomization.yaml"),
        &kustomization(&entries, &base_url)?,
    )?;
    println!("\npackage in {}:", out.display());
    print!("{sums}");
    println!(
        "  kustomization.yaml  the WasmPlugins of istio-manifests/wasmplugin/ with url {base_url}/<module>.wasm + sha256\n\
         \nnext: upload the .wasm files to {base_url}/, then `kubectl apply -k {}`\n\
         or push them as OCI artifacts (docs/istio.md, \"Without the control plane\"), e.g.\n  \
         oras push REGISTRY/meshward/meshward_ratelimit:{} meshward_ratelimit.wasm:application/vnd.module.wasm.content.layer.v1+wasm",
        out.display(),
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The WasmPlugin filter name of a module file: `meshward_trace_inject.wasm` →
/// `meshward-trace-inject` (istio-manifests/wasmplugin/wasmplugin-trace-inject.yaml).
fn plugin_name(file: &str) -> Result<String, String> {
    file.strip_suffix(".wasm")
        .map(|stem| stem.replace('_', "-"))
        .ok_or_else(|| format!("{file}: not a .wasm file"))
}

/// An overlay of istio-manifests/wasmplugin/ (target/meshward-package/ is two levels
/// below the repository root) setting each plugin's url and sha256.
fn kustomization(entries: &[(String, String)], base_url: &str) -> Result<String, String> {
    let mut yaml = String::from(
        "# Written by `cargo xtask package`: the WasmPlugins of istio-manifests/wasmplugin/\n\
         # fetching the modules of this package over https, checked by sha256.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../../istio-manifests/wasmplugin\npatches:\n",
    );
    for (file, sha256) in entries {
        let _ = write!(
            yaml,
            "  - target:\n      group: extensions.istio.io\n      kind: WasmPlugin\n      name: {}\n    patch: |-\n      \
             - op: replace\n        path: /spec/url\n        value: {base_url}/{file}\n      \
             - op: add\n        path: /spec/sha256\n        value: \"{sha256}\"\n",
            plugin_name(file)?
        );
    }
    Ok(yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hex_and_overlay() {
        assert_eq!(
            plugin_name("meshward_trace_inject.wasm").unwrap(),
            "meshward-trace-inject"
        );
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        let yaml = kustomization(
            &[("meshward_authz.wasm".into(), "ab".repeat(32))],
            "https://h/m",
        )
        .unwrap();
        assert!(yaml.contains("name: meshward-authz\n"));
        assert!(yaml.contains("value: https://h/m/meshward_authz.wasm\n"));
        assert!(yaml.contains(&format!("value: \"{}\"\n", "ab".repeat(32))));
    }
}
