//! The WasmPlugin install (istio-manifests/wasmplugin/): the same four filters, in the
//! same order and with the same fail-open/closed choice as the EnvoyFilters, each
//! plugin's static configuration accepted by its filter in real Envoy.

use meshward_control_plane::policy::model::Kind;
use serde_json::Value;

use crate::examples::wasm_listener_bootstrap;
use crate::mesh::{envoy_filters, CHAIN};
use crate::objects::rendered;
use crate::support::{envoy_binary, str_at, validate};

/// Istio's filter order: AUTHN, then AUTHZ, then STATS plugins, then unspecified (right
/// before the router); within a phase, higher priority first.
fn position(plugin: &Value) -> (usize, i64) {
    let phase = match plugin["spec"]["phase"]
        .as_str()
        .unwrap_or("UNSPECIFIED_PHASE")
    {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        _ => 3,
    };
    (phase, -plugin["spec"]["priority"].as_i64().unwrap_or(0))
}

#[test]
fn wasm_plugins_mirror_the_envoy_filters_and_their_configs_are_accepted() {
    let mut plugins = rendered("istio-manifests/wasmplugin");
    plugins.sort_by_key(position);
    let base = rendered("istio-manifests");
    let filters = envoy_filters(&base);
    assert_eq!(plugins.len(), CHAIN.len());
    let mut configs = Vec::new();
    for ((plugin, kind), filter) in plugins.iter().zip(CHAIN).zip(filters) {
        let at = format!("WasmPlugin {}", plugin["metadata"]["name"]);
        assert_eq!(
            str_at(plugin, "/metadata/name"),
            str_at(filter, "/metadata/name"),
            "{at}: chain order differs from the EnvoyFilters'"
        );
        assert_eq!(str_at(plugin, "/spec/pluginName"), kind.module(), "{at}");
        let url = str_at(plugin, "/spec/url");
        assert!(
            url.starts_with("oci://") || url.starts_with("https://"),
            "{at}: {url}"
        );
        assert!(
            url.contains(kind.module()),
            "{at}: {url} is not {}",
            kind.module()
        );
        // The same fail-open/closed choice as the EnvoyFilter of that filter.
        let expected = match str_at(filter, "/metadata/annotations/meshward.io~1failure-mode") {
            "closed" => "FAIL_CLOSE",
            _ => "FAIL_OPEN",
        };
        assert_eq!(str_at(plugin, "/spec/failStrategy"), expected, "{at}");
        let mode = str_at(plugin, "/spec/match/0/mode");
        assert_eq!(
            mode,
            if kind == Kind::Trace {
                "CLIENT_AND_SERVER"
            } else {
                "SERVER"
            },
            "{at}"
        );
        configs.push((kind, plugin["spec"]["pluginConfig"].clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = validate(
        &envoy_binary(),
        dir.path(),
        "wasmplugins.json",
        &wasm_listener_bootstrap(&configs),
    );
    assert!(
        ok,
        "a WasmPlugin's pluginConfig was refused by its filter:\n{log}"
    );
}
