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
    /// The remote module it makes Envoy load (and possibly fetch); `None` for local
    /// modules and for other resource types.
    pub code: Option<RemoteCode>,
}

/// A remote wasm module as Envoy's code cache knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteCode {
    /// The plugin name (the module name): what Envoy names in its NACK.
    pub plugin: String,
    /// The code cache key.
    pub sha256: String,
}

/// (name, version) of each resource.
pub fn pairs(resources: &[Built]) -> Vec<(String, String)> {
    resources
        .iter()
        .map(|b| (b.name.clone(), b.version.clone()))
        .collect()
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
    // Remote code: on a code-cache miss Envoy NACKs and fetches in the background (the
    // streams re-send: `super::code_cache`). Without it Envoy downloads only while a
    // listener warms; later it ACKs and the plugin never loads (the filter does nothing).
    let mut remote = None;
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
        } => {
            let sha256 = sha256.get(module).cloned().unwrap_or_default();
            remote = Some(RemoteCode {
                plugin: module.into(),
                sha256: sha256.clone(),
            });
            core::AsyncDataSource {
                specifier: Some(core::async_data_source::Specifier::Remote(
                    core::RemoteDataSource {
                        http_uri: Some(core::HttpUri {
                            uri: format!(
                                "{}/modules/{module}.wasm",
                                base_url.trim_end_matches('/')
                            ),
                            timeout: Some(Duration {
                                seconds: 30,
                                nanos: 0,
                            }),
                            http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(
                                cluster.clone(),
                            )),
                        }),
                        sha256,
                        ..Default::default()
                    },
                )),
            }
        }
    };
    let wasm = Wasm {
        config: Some(PluginConfig {
            name: module.into(),
            root_id: module.into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: module.into(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(code),
                nack_on_code_cache_miss: remote.is_some(),
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
        code: remote,
    }
}

/// `built` as re-send `attempt` after a code-cache miss (`super::code_cache`): the same
/// version and configuration, its remote `http_uri.timeout` `attempt` nanoseconds longer
/// (Envoy reads that timeout in whole milliseconds). Envoy 1.40 keeps the hash of a
/// filter configuration it failed to create and takes the same bytes again for
/// "unchanged": ACKed, never applied. So a re-send must differ in its bytes; this is the
/// smallest difference that changes nothing else (the VM, its `vm_id`, configuration and
/// code, stays the same, and so do the filters' shared data). `None` when `built` is no
/// Wasm filter with a remote module.
pub fn resend(built: &Built, attempt: u32) -> Option<Built> {
    built.code.as_ref()?;
    let mut typed = TypedExtensionConfig::decode(built.any.value.as_slice()).ok()?;
    let wasm_any = typed.typed_config.as_mut()?;
    let mut wasm = Wasm::decode(wasm_any.value.as_slice()).ok()?;
    let Some(plugin_config::Vm::VmConfig(vm)) = wasm.config.as_mut()?.vm.as_mut() else {
        return None;
    };
    let Some(core::async_data_source::Specifier::Remote(remote)) =
        vm.code.as_mut()?.specifier.as_mut()
    else {
        return None;
    };
    let timeout = remote
        .http_uri
        .as_mut()?
        .timeout
        .get_or_insert_with(Default::default);
    timeout.nanos = i32::try_from(attempt % 1_000_000).unwrap_or(0);
    wasm_any.value = wasm.encode_to_vec();
    Some(Built {
        any: any(TYPED_EXTENSION_CONFIG, &typed),
        ..built.clone()
    })
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
        assert!(resend(&a, 1).is_none(), "local modules are never fetched");
    }

    fn vm(built: &Built) -> VmConfig {
        let typed = TypedExtensionConfig::decode(built.any.value.as_slice()).unwrap();
        let wasm = Wasm::decode(typed.typed_config.unwrap().value.as_slice()).unwrap();
        let plugin_config::Vm::VmConfig(vm) = wasm.config.unwrap().vm.unwrap();
        vm
    }

    #[test]
    fn remote_modules_nack_on_a_cache_miss_and_a_resend_differs_only_in_nanoseconds() {
        let modules = ModuleSource::Remote {
            cluster: "meshward_modules".into(),
            base_url: "http://cp:18001/".into(),
            sha256: [("meshward_ratelimit".to_owned(), "ab".repeat(32))].into(),
        };
        let built = build(Kind::RateLimit, r#"{"rules":[]}"#, &modules);
        assert_eq!(
            built.code,
            Some(RemoteCode {
                plugin: "meshward_ratelimit".into(),
                sha256: "ab".repeat(32)
            })
        );
        let original = vm(&built);
        assert!(original.nack_on_code_cache_miss);
        let again = resend(&built, 3).unwrap();
        assert_eq!((&again.name, &again.version), (&built.name, &built.version));
        assert_ne!(again.any, built.any, "Envoy must not see the same bytes");
        let mut resent = vm(&again);
        let Some(core::async_data_source::Specifier::Remote(remote)) =
            resent.code.as_mut().unwrap().specifier.as_mut()
        else {
            panic!("not remote")
        };
        let uri = remote.http_uri.as_mut().unwrap();
        assert_eq!(uri.uri, "http://cp:18001/modules/meshward_ratelimit.wasm");
        let timeout = uri.timeout.as_mut().unwrap();
        assert_eq!((timeout.seconds, timeout.nanos), (30, 3));
        timeout.nanos = 0;
        assert_eq!(resent, original, "nothing else differs");
    }
}
