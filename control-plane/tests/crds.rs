//! The committed CRD manifests are exactly what the Rust types generate: change a type,
//! run `cargo xtask crds`, commit both.

use meshward_control_plane::kubernetes::crds::{all_crds, crds_kustomization};

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio-manifests/crds");
    let mut files = all_crds().unwrap();
    files.push(crds_kustomization().unwrap());
    for (file, generated) in files {
        let path = dir.join(&file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crds`", path.display()));
        assert!(
            committed == generated,
            "{} differs from the Rust types in control-plane/src/kubernetes/crds.rs; run `cargo xtask crds` and commit the result",
            path.display()
        );
    }
}
