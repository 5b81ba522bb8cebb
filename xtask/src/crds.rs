//! `cargo xtask crds`: writes the `meshward.io` CustomResourceDefinitions, generated from
//! the Rust types in control-plane/src/kubernetes/crds.rs, to istio-manifests/crds/ (a
//! test fails when the committed files differ from what this would write), with the
//! folder's kustomization.yaml.

use meshward_control_plane::kubernetes::crds::{all_crds, crds_kustomization};

use crate::run::root;

pub fn run() -> Result<(), String> {
    let dir = root().join("istio-manifests/crds");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut files = all_crds()?;
    files.push(crds_kustomization()?);
    for (file, yaml) in files {
        let path = dir.join(&file);
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == yaml);
        if !unchanged {
            std::fs::write(&path, &yaml).map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        println!(
            "{} istio-manifests/crds/{file}",
            if unchanged { "unchanged" } else { "wrote    " }
        );
    }
    Ok(())
}
