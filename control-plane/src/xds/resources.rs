//! The ECDS resources: one `TypedExtensionConfig` per filter, wrapping Envoy's Wasm HTTP
//! filter config whose plugin `configuration` is the filter's JSON. The VM part (module,
//! `vm_id`) never changes between pushes, so Envoy keeps the VM — and the filters'
//! shared data, e.g. token buckets — and only re-runs `on_configure`.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, PluginConfig, VmConfig};
use envoy_types::pb::google::protobuf::{Any, Duration, StringValue};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::policy::model::Kind;

pub const TYPED_EXTENSION_CONFIG: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// Where Envoy gets the wasm modules.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// A path on the proxy's file system: `<dir>/<module>.wasm`.
    Local { dir: String },
    /// Fetched by Envoy from this control plane's HTTP endpoint through `cluster`,
    /// checked against the sha256.
    Remote {
        cluster: String,
        base_url: String,
        /// module → sha256 hex of the file served.
        sha256: std::collections::BTreeMap<String, String>,
    },
}

/// An encoded resource and its version (a hash of its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub any: Any,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn short_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..8])
}

fn any<M: Message>(type_url: &str, message: &M) -> Any {
    Any {
        type_url: type_url.into(),
        value: message.encode_to_vec(),
    }
}

/// The ECDS resource for `kind` with this filter JSON.
pub fn build(kind: Kind, json: &str, modules: &ModuleSource) -> Built {
    let module = kind.module();
    let code = match modules {
        ModuleSource::Local { dir } => core::AsyncDataSource {
            specifier: Some(core::async_data_source::Specifier::Local(
                core::DataSource {
                    specifier: Some(core::data_source::Specifier::Filename(format!(
                        "{}/{module}.wasm",
                        dir.trim_end_matches('/')
                    ))),
                    ..Default::default()
                },
            )),
        },
        ModuleSource::Remote {
            cluster,
            base_url,
            sha256,
        } => core::AsyncDataSource {
            specifier: Some(core::async_data_source::Specifier::Remote(
                core::RemoteDataSource {
                    http_uri: Some(core::HttpUri {
                        uri: format!("{}/modules/{module}.wasm", base_url.trim_end_matches('/')),
                        timeout: Some(Duration {
                            seconds: 30,
                            nanos: 0,
                        }),
                        http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(
                            cluster.clone(),
                        )),
                    }),
                    sha256: sha256.get(module).cloned().unwrap_or_default(),
                    ..Default::default()
                },
            )),
        },
    };
    let wasm = Wasm {
        config: Some(PluginConfig {
            name: module.into(),
            root_id: module.into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: module.into(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(code),
                ..Default::default()
            })),
            configuration: Some(any(STRING_VALUE, &StringValue { value: json.into() })),
            ..Default::default()
        }),
    };
    let typed = TypedExtensionConfig {
        name: kind.resource_name().into(),
        typed_config: Some(any(WASM_FILTER, &wasm)),
    };
    let any = any(TYPED_EXTENSION_CONFIG, &typed);
    Built {
        name: kind.resource_name().into(),
        version: short_hash(&any.value),
        any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_wraps_the_json_and_its_version_follows_the_content() {
        let modules = ModuleSource::Local {
            dir: "/etc/meshward".into(),
        };
        let a = build(Kind::RateLimit, r#"{"rules":[]}"#, &modules);
        let b = build(Kind::RateLimit, r#"{"rules":[]}"#, &modules);
        let c = build(Kind::RateLimit, r#"{"rules":[{}]}"#, &modules);
        assert_eq!(a, b);
        assert_ne!(a.version, c.version);
        let typed = TypedExtensionConfig::decode(a.any.value.as_slice()).unwrap();
        assert_eq!(typed.name, "meshward.ratelimit");
        let wasm = Wasm::decode(typed.typed_config.unwrap().value.as_slice()).unwrap();
        let plugin = wasm.config.unwrap();
        assert_eq!(plugin.root_id, "meshward_ratelimit");
        let json = StringValue::decode(plugin.configuration.unwrap().value.as_slice()).unwrap();
        assert_eq!(json.value, r#"{"rules":[]}"#);
    }
}
