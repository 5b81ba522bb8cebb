//! The Meshward control plane inside a test: started in-process on 127.0.0.1 with
//! kernel-chosen ports, stopped (closing every xDS stream, as a crash would) and
//! restarted on the same ports; plus the Envoy bootstrap that takes its filters from it
//! over ADS/ECDS.

use std::path::Path;
use std::time::Duration;

use meshward_control_plane::server::{start, ModuleMode, Options, Running};
use serde_json::{json, Value};

use crate::paths::wasm_dir;
use crate::Bootstrap;

pub struct ControlPlane {
    runtime: tokio::runtime::Runtime,
    running: Option<Running>,
    options: Options,
    xds_port: u16,
    http_port: u16,
}

impl ControlPlane {
    /// Serves the policies in `policy_dir` (polled every 100 ms); modules are local
    /// files in `target/meshward-wasm/`.
    pub fn start(policy_dir: &Path) -> Result<Self, String> {
        Self::start_on(policy_dir, 0, 0)
    }

    /// Like [`ControlPlane::start`], on fixed ports (0: any).
    pub fn start_on(policy_dir: &Path, xds_port: u16, http_port: u16) -> Result<Self, String> {
        let modules = ModuleMode::Local {
            dir: wasm_dir().to_string_lossy().into_owned(),
        };
        Self::start_with(policy_dir, xds_port, http_port, modules, None)
    }

    /// Envoy fetches the modules from this control plane's HTTP port through its cluster
    /// `cluster` (a `remote` data source with the sha256), as in a mesh where the
    /// proxies have no module files.
    pub fn start_serving_modules(policy_dir: &Path, cluster: &str) -> Result<Self, String> {
        Self::start_serving_modules_from(policy_dir, cluster, &wasm_dir(), 0, 0)
    }

    /// Like [`ControlPlane::start_serving_modules`], serving the `.wasm` files of `wasm`
    /// (another build of the modules, say), on fixed ports (0: any) — so that an Envoy
    /// started before the control plane can name them.
    pub fn start_serving_modules_from(
        policy_dir: &Path,
        cluster: &str,
        wasm: &Path,
        xds_port: u16,
        http_port: u16,
    ) -> Result<Self, String> {
        let http_port = match http_port {
            0 => crate::paths::free_port()?,
            port => port,
        };
        let modules = ModuleMode::Remote {
            cluster: cluster.into(),
            base_url: format!("http://127.0.0.1:{http_port}"),
        };
        Self::start_with(
            policy_dir,
            xds_port,
            http_port,
            modules,
            Some(wasm.to_path_buf()),
        )
    }

    fn start_with(
        policy_dir: &Path,
        xds_port: u16,
        http_port: u16,
        modules: ModuleMode,
        served: Option<std::path::PathBuf>,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let options = Options {
            policy_dir: policy_dir.to_path_buf(),
            xds_addr: ([127, 0, 0, 1], xds_port).into(),
            http_addr: ([127, 0, 0, 1], http_port).into(),
            wasm_dir: served,
            modules,
            poll_interval: Duration::from_millis(100),
        };
        let running = runtime.block_on(start(options.clone()))?;
        let (xds_port, http_port) = (running.xds_addr.port(), running.http_addr.port());
        Ok(Self {
            runtime,
            running: Some(running),
            options,
            xds_port,
            http_port,
        })
    }

    pub fn xds_port(&self) -> u16 {
        self.xds_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Stops serving: every stream is closed and the ports stop accepting.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }

    /// Starts again on the same ports.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let mut options = self.options.clone();
        options.xds_addr = format!("127.0.0.1:{}", self.xds_port)
            .parse()
            .map_err(|e| format!("{e}"))?;
        options.http_addr = format!("127.0.0.1:{}", self.http_port)
            .parse()
            .map_err(|e| format!("{e}"))?;
        self.running = Some(self.runtime.block_on(start(options))?);
        Ok(())
    }

    /// Starts again on the same ports, serving the `.wasm` files of `wasm` (remote
    /// modules: a control-plane upgrade that ships another build of a module).
    pub fn restart_serving_modules_from(&mut self, wasm: &Path) -> Result<(), String> {
        self.options.wasm_dir = Some(wasm.to_path_buf());
        self.restart()
    }

    /// The `/metrics` exposition (empty while stopped).
    pub fn metrics(&self) -> String {
        self.running
            .as_ref()
            .map_or_else(String::new, |r| r.world.metrics.encode())
    }

    /// The `/status` document (empty object while stopped).
    pub fn status(&self) -> Value {
        self.running
            .as_ref()
            .map_or_else(|| json!({}), |r| r.world.status())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The xDS flavour Envoy speaks on its ADS stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdsProtocol {
    /// State of the world (`api_type: GRPC`).
    Sotw,
    /// Incremental (`api_type: DELTA_GRPC`).
    Delta,
}

/// An Envoy bootstrap identifying itself as `node_id`, a replica of `namespace/workload`
/// with `labels`, whose first listener's Meshward filters (`meshward.ratelimit`, ...)
/// are configured by the control plane at `xds_port` over ADS (ECDS resources), SotW.
pub fn ecds_bootstrap(
    base: &Bootstrap,
    xds_port: u16,
    node_id: &str,
    namespace: &str,
    workload: &str,
    labels: &[(&str, &str)],
    filters: &[&str],
) -> Value {
    ecds_bootstrap_with(
        base,
        xds_port,
        node_id,
        namespace,
        workload,
        labels,
        filters,
        AdsProtocol::Sotw,
    )
}

/// [`ecds_bootstrap`] with the ADS protocol chosen.
#[allow(clippy::too_many_arguments)]
pub fn ecds_bootstrap_with(
    base: &Bootstrap,
    xds_port: u16,
    node_id: &str,
    namespace: &str,
    workload: &str,
    labels: &[(&str, &str)],
    filters: &[&str],
    protocol: AdsProtocol,
) -> Value {
    let mut base = base
        .clone()
        .grpc_cluster("meshward_control_plane", xds_port);
    for filter in filters {
        base = base.http_filter(json!({
            "name": filter,
            "config_discovery": {
                "config_source": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "20s"},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
            }
        }));
    }
    let mut config = base.to_json();
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    config["node"] = json!({
        "id": node_id,
        "cluster": workload,
        "metadata": {"NAMESPACE": namespace, "WORKLOAD_NAME": workload, "LABELS": labels}
    });
    config["dynamic_resources"] = json!({
        "ads_config": {
            "api_type": match protocol { AdsProtocol::Sotw => "GRPC", AdsProtocol::Delta => "DELTA_GRPC" },
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "meshward_control_plane"}}],
            "set_node_on_first_message_only": true
        }
    });
    config
}
