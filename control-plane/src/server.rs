//! Wires the control plane together: the policy poller, the xDS gRPC server and the
//! HTTP endpoint, all stopped by one shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
use meshward_proto::tuning::v1::runtime_reports_server::RuntimeReportsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::http::{load_modules, router, HttpState};
use crate::kubernetes::controller::KubernetesOptions;
use crate::policy::file_source::FileSource;
use crate::policy::sources::Source;
use crate::tuning::grpc::Reports;
use crate::xds::resources::ModuleSource;
use crate::xds::service::Xds;
use crate::xds::world::World;

#[derive(Debug, Clone)]
pub struct Options {
    /// YAML policies, polled. Empty: no file source (Kubernetes mode only).
    pub policy_dir: PathBuf,
    pub xds_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Where the `.wasm` files are, to serve them (remote modules).
    pub wasm_dir: Option<PathBuf>,
    pub modules: ModuleMode,
    pub poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum ModuleMode {
    /// Envoy loads `<dir>/<module>.wasm` from its own file system.
    Local { dir: String },
    /// Envoy fetches the module from `<base_url>/modules/<module>.wasm` via `cluster`.
    Remote { cluster: String, base_url: String },
}

/// A started control plane.
pub struct Running {
    pub xds_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub world: Arc<World>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes streams, waits for the tasks.
    pub async fn stop(self) {
        self.world.close();
        let _ = self.shutdown.send(true);
        // One deadline for all tasks together.
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

/// Starts in file mode.
pub async fn start(options: Options) -> Result<Running, String> {
    start_with(options, None).await
}

/// Starts with the file source (unless `policy_dir` is empty) and, given `kubernetes`,
/// the custom resource controllers; xDS is served only once every source has loaded.
pub async fn start_with(
    options: Options,
    kubernetes: Option<KubernetesOptions>,
) -> Result<Running, String> {
    let served = match &options.wasm_dir {
        Some(dir) => load_modules(dir)?,
        None => Default::default(),
    };
    let modules = match &options.modules {
        ModuleMode::Local { dir } => ModuleSource::Local { dir: dir.clone() },
        ModuleMode::Remote { cluster, base_url } => {
            if served.is_empty() {
                return Err("remote modules need --wasm-dir with the .wasm files to serve".into());
            }
            ModuleSource::Remote {
                cluster: cluster.clone(),
                base_url: base_url.clone(),
                sha256: served
                    .iter()
                    .map(|(file, (_, sha))| {
                        (file.trim_end_matches(".wasm").to_owned(), sha.clone())
                    })
                    .collect(),
            }
        }
    };
    let world = World::new(modules);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if !options.policy_dir.as_os_str().is_empty() {
        tasks.push(start_file_source(&options, &world, shutdown_rx.clone())?);
    }
    if let Some(mut kubernetes) = kubernetes {
        if kubernetes.peer_http_port == 0 {
            kubernetes.peer_http_port = options.http_addr.port();
        }
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("Kubernetes mode: no cluster access ({e}); in a pod, check the service account; outside, KUBECONFIG")
        })?;
        let controllers = crate::kubernetes::controller::start(
            client,
            world.clone(),
            kubernetes,
            shutdown_rx.clone(),
        )
        .await?;
        eprintln!(
            "meshward-control-plane: {} policies in force after the first Kubernetes sync",
            world.policies().len()
        );
        tasks.extend(controllers);
    }

    // Forgets runtime-tuning instances that stopped reporting (bounded memory, no stale
    // series).
    let sweeper_world = world.clone();
    let mut sweeper_stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => sweeper_world.tuning.sweep(),
                _ = sweeper_stop.changed() => break,
            }
        }
    }));

    let xds_listener = TcpListener::bind(options.xds_addr)
        .await
        .map_err(|e| format!("cannot listen for xDS on {}: {e}", options.xds_addr))?;
    let xds_addr = xds_listener.local_addr().map_err(|e| e.to_string())?;
    let xds = Xds {
        world: world.clone(),
    };
    let reports = Reports {
        world: world.clone(),
    };
    let mut xds_stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(AggregatedDiscoveryServiceServer::new(xds.clone()))
            .add_service(ExtensionConfigDiscoveryServiceServer::new(xds))
            .add_service(RuntimeReportsServer::new(reports))
            .serve_with_incoming_shutdown(TcpListenerStream::new(xds_listener), async move {
                let _ = xds_stop.changed().await;
            })
            .await;
        if let Err(err) = result {
            eprintln!("meshward-control-plane: xDS server failed: {err}");
        }
    }));

    let http_listener = TcpListener::bind(options.http_addr)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", options.http_addr))?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(HttpState {
        world: world.clone(),
        modules: Arc::new(served),
    });
    let mut http_stop = shutdown_rx;
    tasks.push(tokio::spawn(async move {
        let result = axum::serve(http_listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await;
        if let Err(err) = result {
            eprintln!("meshward-control-plane: HTTP server failed: {err}");
        }
    }));

    Ok(Running {
        xds_addr,
        http_addr,
        world,
        shutdown,
        tasks,
    })
}

/// Loads the policy directory once (so its policies are in force before xDS is
/// served) and polls it.
fn start_file_source(
    options: &Options,
    world: &Arc<World>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut source = FileSource::new(&options.policy_dir);
    let first = source.poll()?;
    for error in &first.new_errors {
        eprintln!("meshward-control-plane: refused: {error}");
    }
    let (policies, errors) = source.policies();
    eprintln!(
        "meshward-control-plane: {} policies from {}",
        policies.len(),
        options.policy_dir.display()
    );
    world.set_source(Source::Files, policies, errors);
    let poller_world = world.clone();
    let interval = options.poll_interval;
    let mut poller_stop = shutdown;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = poller_stop.changed() => break,
            }
            match source.poll() {
                Ok(poll) => {
                    for error in &poll.new_errors {
                        eprintln!(
                            "meshward-control-plane: refused (last good version stays): {error}"
                        );
                    }
                    let (policies, errors) = source.policies();
                    if poll.changed {
                        eprintln!("meshward-control-plane: policies changed; pushing");
                        poller_world.set_source(Source::Files, policies, errors);
                    } else {
                        // Also clears errors of a file fixed back to its good content.
                        poller_world.set_source_errors(Source::Files, errors);
                    }
                }
                Err(error) => eprintln!("meshward-control-plane: {error}"),
            }
        }
    }))
}
