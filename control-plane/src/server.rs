//! Wires the control plane together: the policy poller, the xDS gRPC server and the
//! HTTP endpoint, all stopped by one shutdown signal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
use meshward_proto::tuning::v1::runtime_reports_server::RuntimeReportsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{load_modules, router, HttpState};
use crate::kubernetes::controller::KubernetesOptions;
use crate::policy::file_source::FileSource;
use crate::policy::sources::Source;
use crate::redis::Redis;
use crate::rls::Rls;
use crate::store::Store;
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

/// The services kept in Redis/Valkey (docs/adr/0009), served when a Redis URL is given.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    /// `redis://`, `rediss://`, `redis+cluster://h1:p1,h2:p2` ([`crate::redis`]).
    pub redis_url: String,
    /// Bounds every Redis command.
    pub redis_timeout: Duration,
    /// The rate-limit service (`envoy.service.ratelimit.v3`); `None`: not served.
    pub rls_addr: Option<SocketAddr>,
}

/// The idempotency store (`meshward.idempotency.v1.IdempotencyStore`, docs/adr/0009),
/// served next to the rate-limit service when a Redis URL is given.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub addr: SocketAddr,
    /// Largest response body stored; larger is `INVALID_ARGUMENT`.
    pub max_response_bytes: usize,
}

impl StoreOptions {
    pub fn on(addr: SocketAddr) -> StoreOptions {
        StoreOptions {
            addr,
            max_response_bytes: crate::store::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A started control plane.
pub struct Running {
    pub xds_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The rate-limit service's bound address, when served.
    pub rls_addr: Option<SocketAddr>,
    /// The idempotency store's bound address, when served.
    pub store_addr: Option<SocketAddr>,
    /// The shared Redis handle, when a Redis URL was given.
    pub redis: Option<Redis>,
    pub world: Arc<World>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes streams, waits for the tasks.
    pub async fn stop(self) {
        self.world.close();
        stop_tasks(&self.shutdown, self.tasks).await;
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
    start_full(options, kubernetes, None).await
}

/// [`start_with`], plus the Redis-backed services when `global` is given.
pub async fn start_full(
    options: Options,
    kubernetes: Option<KubernetesOptions>,
    global: Option<GlobalOptions>,
) -> Result<Running, String> {
    start_services(options, kubernetes, global, None).await
}

/// [`start_full`], plus the idempotency store when `global` and `store` are given.
pub async fn start_services(
    options: Options,
    kubernetes: Option<KubernetesOptions>,
    global: Option<GlobalOptions>,
    store: Option<StoreOptions>,
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
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(xds_listener).with_nodelay(Some(true)),
                async move {
                    let _ = xds_stop.changed().await;
                },
            )
            .await;
        if let Err(err) = result {
            eprintln!("meshward-control-plane: xDS server failed: {err}");
        }
    }));

    let (http_addr, task) =
        serve_http(options.http_addr, &world, Arc::new(served), shutdown_rx).await?;
    tasks.push(task);

    let redis = match &global {
        Some(global) => Some(connect_redis(global, &world).await?),
        None => None,
    };
    let mut rls_addr = None;
    if let (Some(global), Some(redis)) = (&global, &redis) {
        if let Some(addr) = global.rls_addr {
            let (bound, task) = serve_rls(addr, &world, redis, shutdown.subscribe()).await?;
            rls_addr = Some(bound);
            tasks.push(task);
        }
    }
    let mut store_addr = None;
    if let (Some(store), Some(redis)) = (&store, &redis) {
        let (bound, task) = serve_store(store, &world, redis, shutdown.subscribe()).await?;
        store_addr = Some(bound);
        tasks.push(task);
    }

    Ok(Running {
        xds_addr,
        http_addr,
        rls_addr,
        store_addr,
        redis,
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

async fn connect_redis(global: &GlobalOptions, world: &Arc<World>) -> Result<Redis, String> {
    let redis = Redis::connect(&global.redis_url, global.redis_timeout)
        .await?
        .with_metrics(world.metrics.redis.clone());
    // Not required at start (commands fail until Redis answers), but say so early.
    if let Err(err) = redis.ping().await {
        eprintln!(
            "meshward-control-plane: Redis not reachable yet ({err}); retrying in the background"
        );
    }
    Ok(redis)
}

/// Serves `envoy.service.ratelimit.v3.RateLimitService` on `addr` until `stop`.
async fn serve_rls(
    addr: SocketAddr,
    world: &Arc<World>,
    redis: &Redis,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for the rate-limit service on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let rls = Rls::new(world.clone(), redis.clone());
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .tcp_nodelay(true)
            .add_service(rls.server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.changed().await;
                },
            )
            .await;
        if let Err(err) = result {
            eprintln!("meshward-control-plane: rate-limit service failed: {err}");
        }
    });
    Ok((bound, task))
}

/// What `meshward-control-plane rls` runs: policies (files and/or Kubernetes custom
/// resources, read only) and the rate-limit service; no xDS, no status writing.
#[derive(Debug, Clone)]
pub struct RlsOptions {
    /// YAML policies, polled. Empty: no file source.
    pub policy_dir: PathBuf,
    pub poll_interval: Duration,
    /// Read `RateLimitPolicy` resources from the cluster.
    pub kubernetes: bool,
    /// `/metrics`, `/healthz`, `/status`; `None`: not served.
    pub http_addr: Option<SocketAddr>,
    pub global: GlobalOptions,
}

/// A started standalone rate-limit service.
pub struct RlsRunning {
    pub rls_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub world: Arc<World>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RlsRunning {
    pub async fn stop(self) {
        stop_tasks(&self.shutdown, self.tasks).await;
    }
}

/// Starts the rate-limit service alone (`meshward-control-plane rls`).
pub async fn start_rls(options: RlsOptions) -> Result<RlsRunning, String> {
    let rls_addr = options
        .global
        .rls_addr
        .ok_or("the rate-limit service needs an address")?;
    let world = World::new(ModuleSource::Local { dir: String::new() });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if !options.policy_dir.as_os_str().is_empty() {
        let file_options = Options {
            policy_dir: options.policy_dir.clone(),
            xds_addr: rls_addr,
            http_addr: rls_addr,
            wasm_dir: None,
            modules: ModuleMode::Local { dir: String::new() },
            poll_interval: options.poll_interval,
        };
        tasks.push(start_file_source(
            &file_options,
            &world,
            shutdown_rx.clone(),
        )?);
    }
    if options.kubernetes {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("Kubernetes mode: no cluster access ({e}); in a pod, check the service account; outside, KUBECONFIG")
        })?;
        tasks
            .push(crate::rls::kubernetes::start(client, world.clone(), shutdown_rx.clone()).await?);
    }
    let redis = connect_redis(&options.global, &world).await?;
    let (rls_addr, task) = serve_rls(rls_addr, &world, &redis, shutdown_rx.clone()).await?;
    tasks.push(task);
    let mut http_addr = None;
    if let Some(addr) = options.http_addr {
        let (bound, task) = serve_http(addr, &world, Arc::default(), shutdown_rx).await?;
        http_addr = Some(bound);
        tasks.push(task);
    }
    Ok(RlsRunning {
        rls_addr,
        http_addr,
        world,
        shutdown,
        tasks,
    })
}

/// Serves `meshward.idempotency.v1.IdempotencyStore` on `options.addr` until `stop`.
async fn serve_store(
    options: &StoreOptions,
    world: &Arc<World>,
    redis: &Redis,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let addr = options.addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for the idempotency store on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let store = Store::new(
        redis.clone(),
        world.metrics.store.clone(),
        options.max_response_bytes,
    );
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(store.server())
            // No Nagle on the accepted connections (the builder's `tcp_nodelay` does
            // not reach an incoming stream): a reply written in two pieces (a replayed
            // response, then the trailers) would wait ~40 ms for a delayed ACK.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.changed().await;
                },
            )
            .await;
        if let Err(err) = result {
            eprintln!("meshward-control-plane: idempotency store failed: {err}");
        }
    });
    Ok((bound, task))
}

/// What `meshward-control-plane store` runs: the idempotency store alone (no policies,
/// no xDS).
#[derive(Debug, Clone)]
pub struct StoreServiceOptions {
    pub redis_url: String,
    pub redis_timeout: Duration,
    pub store: StoreOptions,
    /// `/metrics`, `/healthz`; `None`: not served.
    pub http_addr: Option<SocketAddr>,
}

/// A started standalone idempotency store.
pub struct StoreRunning {
    pub store_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub world: Arc<World>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StoreRunning {
    pub async fn stop(self) {
        stop_tasks(&self.shutdown, self.tasks).await;
    }
}

/// Starts the idempotency store alone (`meshward-control-plane store`).
pub async fn start_store(options: StoreServiceOptions) -> Result<StoreRunning, String> {
    // Only for its metrics (and /metrics): no policies here.
    let world = World::new(ModuleSource::Local { dir: String::new() });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let global = GlobalOptions {
        redis_url: options.redis_url.clone(),
        redis_timeout: options.redis_timeout,
        rls_addr: None,
    };
    let redis = connect_redis(&global, &world).await?;
    let (store_addr, task) =
        serve_store(&options.store, &world, &redis, shutdown_rx.clone()).await?;
    let mut tasks = vec![task];
    let mut http_addr = None;
    if let Some(addr) = options.http_addr {
        let (bound, task) = serve_http(addr, &world, Arc::default(), shutdown_rx).await?;
        http_addr = Some(bound);
        tasks.push(task);
    }
    Ok(StoreRunning {
        store_addr,
        http_addr,
        world,
        shutdown,
        tasks,
    })
}

/// Signals shutdown and waits for `tasks`, with one 5 s deadline for all of them
/// together (then the rest are aborted): shutdown never hangs on a stuck stream.
async fn stop_tasks(shutdown: &watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    let _ = shutdown.send(true);
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .is_err()
    {
        for abort in aborts {
            abort.abort();
        }
    }
}

/// Serves the HTTP endpoint (`/status`, `/metrics`, `/modules`, tuning, ...) on `addr`
/// until `stop`.
async fn serve_http(
    addr: SocketAddr,
    world: &Arc<World>,
    modules: Arc<BTreeMap<String, (Vec<u8>, String)>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(HttpState {
        world: world.clone(),
        modules,
    });
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(err) = result {
            eprintln!("meshward-control-plane: HTTP server failed: {err}");
        }
    });
    Ok((bound, task))
}
