//! `meshward-control-plane`: see README.md for flags and the Envoy side.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshward_control_plane::kubernetes::controller::KubernetesOptions;
use meshward_control_plane::server::{
    start_rls, start_services, start_store, GlobalOptions, ModuleMode, Options, RlsOptions,
    RlsRunning, Running, StoreOptions, StoreRunning, StoreServiceOptions,
};

const USAGE: &str = "\
usage: meshward-control-plane --policy-dir DIR [options]
       meshward-control-plane --kubernetes [--policy-dir DIR] [options]
       meshward-control-plane rls (--policy-dir DIR | --kubernetes) --redis-url URL
                              [--rls-addr ADDR] [--redis-timeout DUR]
                              [--http-addr ADDR] [--poll-interval DUR]
       meshward-control-plane store --redis-url URL [--store-addr ADDR]
                              [--redis-timeout DUR] [--store-max-response-bytes N]
                              [--http-addr ADDR]

  --policy-dir DIR        YAML policies, watched (required without --kubernetes)
  --kubernetes            also read meshward.io custom resources from the cluster
                          (in-cluster service account, or KUBECONFIG) and write
                          their status; precedence: README, Policies
  --namespace NS          where the status Lease lives [$POD_NAMESPACE, else
                          meshward-system]
  --identity NAME         this replica in the Lease [$POD_NAME, else $HOSTNAME]
  --lease-duration DUR    how long a status writer's claim lasts [15s]
  --peer-selector LABELS  the control plane's own pod labels (k=v,...): the status
                          writer adds the proxies of these peers (GET /delivery on
                          the same HTTP port) to Programmed [none: one replica]
  --xds-addr ADDR         gRPC xDS (ADS + ECDS) listen address   [127.0.0.1:18000]
  --http-addr ADDR        /status, /metrics, /modules, /healthz   [127.0.0.1:18001]
  --module-dir DIR        modules are local files on the proxies: DIR/<module>.wasm
                          [/etc/meshward/wasm]
  --module-cluster NAME   instead, Envoy fetches them from this control plane through
                          its cluster NAME ...
  --module-base-url URL   ... at URL/modules/<module>.wasm (checked by sha256)
  --wasm-dir DIR          the .wasm files to serve (needed with --module-cluster)
  --poll-interval DUR     how often the policy directory is read [200ms]
  --redis-url URL         Redis/Valkey for global rate limits and the idempotency
                          store (redis://host:6379, rediss://...,
                          redis+cluster://h1:p1,h2:p2); with it the rate-limit
                          service is served on --rls-addr, the store on --store-addr
  --redis-timeout DUR     bound on every Redis command [50ms]
  --rls-addr ADDR         envoy.service.ratelimit.v3 gRPC listen address
                          [127.0.0.1:18002]
  --store-addr ADDR       idempotency store (meshward.idempotency.v1) gRPC listen
                          address, served with --redis-url [127.0.0.1:18003]
  --store-max-response-bytes N
                          largest response body the store keeps [1048576]

  rls: the rate-limit service alone (no xDS, no status writing); --kubernetes reads
  RateLimitPolicy resources only; HTTP (/metrics, /healthz) only with --http-addr.
  store: the idempotency store alone (no policies, no xDS); HTTP only with --http-addr.
";

fn parse_global(
    redis_url: Option<String>,
    redis_timeout_ms: u64,
    rls_addr: &str,
) -> Result<Option<GlobalOptions>, String> {
    let Some(redis_url) = redis_url else {
        return Ok(None);
    };
    Ok(Some(GlobalOptions {
        redis_url,
        redis_timeout: Duration::from_millis(redis_timeout_ms),
        rls_addr: Some(
            rls_addr
                .parse()
                .map_err(|e| format!("--rls-addr {rls_addr}: {e}"))?,
        ),
    }))
}

/// `meshward-control-plane rls ...`
fn parse_rls(args: &[String]) -> Result<RlsOptions, String> {
    let mut policy_dir = PathBuf::new();
    let mut kubernetes = false;
    let mut rls_addr = "127.0.0.1:18002".to_owned();
    let mut http_addr = None;
    let mut redis_url = None;
    let mut redis_timeout_ms = 50u64;
    let mut poll_ms = 200u64;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--policy-dir" => policy_dir = PathBuf::from(value()?),
            "--kubernetes" => kubernetes = true,
            "--rls-addr" => rls_addr = value()?,
            "--http-addr" => {
                let addr = value()?;
                http_addr = Some(
                    addr.parse()
                        .map_err(|e| format!("--http-addr {addr}: {e}"))?,
                );
            }
            "--redis-url" => redis_url = Some(value()?),
            "--redis-timeout" => redis_timeout_ms = parse_duration_ms(flag, &value()?)?,
            "--poll-interval" => poll_ms = parse_duration_ms(flag, &value()?)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("rls: unknown option {other}")),
        }
    }
    if policy_dir.as_os_str().is_empty() && !kubernetes {
        return Err("rls: --policy-dir or --kubernetes is required".into());
    }
    let global = parse_global(redis_url, redis_timeout_ms, &rls_addr)?
        .ok_or("rls: --redis-url is required")?;
    Ok(RlsOptions {
        policy_dir,
        poll_interval: Duration::from_millis(poll_ms),
        kubernetes,
        http_addr,
        global,
    })
}

fn parse_duration_ms(flag: &str, text: &str) -> Result<u64, String> {
    text.strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .or_else(|| {
            text.strip_suffix('s')
                .and_then(|n| n.parse::<u64>().ok())
                .map(|s| s * 1000)
        })
        .filter(|ms| *ms > 0)
        .ok_or(format!("{flag}: expected e.g. 200ms or 1s, got {text:?}"))
}

/// `app=meshward-control-plane,tier=x` → labels.
fn parse_labels(
    flag: &str,
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or(format!(
                    "{flag}: expected key=value[,key=value], got {text:?}"
                ))
        })
        .collect()
}

type Parsed = (
    Options,
    Option<KubernetesOptions>,
    Option<GlobalOptions>,
    Option<StoreOptions>,
);

fn parse_store_options(addr: &str, max_response_bytes: &str) -> Result<StoreOptions, String> {
    Ok(StoreOptions {
        addr: addr
            .parse()
            .map_err(|e| format!("--store-addr {addr}: {e}"))?,
        max_response_bytes: max_response_bytes
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(format!(
                "--store-max-response-bytes: expected a number of bytes, got {max_response_bytes:?}"
            ))?,
    })
}

/// `meshward-control-plane store ...`
fn parse_store(args: &[String]) -> Result<StoreServiceOptions, String> {
    let mut store_addr = "127.0.0.1:18003".to_owned();
    let mut max_response_bytes = DEFAULT_STORE_MAX_RESPONSE_BYTES.to_owned();
    let mut http_addr = None;
    let mut redis_url = None;
    let mut redis_timeout_ms = 50u64;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--store-addr" => store_addr = value()?,
            "--store-max-response-bytes" => max_response_bytes = value()?,
            "--http-addr" => {
                let addr = value()?;
                http_addr = Some(
                    addr.parse()
                        .map_err(|e| format!("--http-addr {addr}: {e}"))?,
                );
            }
            "--redis-url" => redis_url = Some(value()?),
            "--redis-timeout" => redis_timeout_ms = parse_duration_ms(flag, &value()?)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("store: unknown option {other}")),
        }
    }
    Ok(StoreServiceOptions {
        redis_url: redis_url.ok_or("store: --redis-url is required")?,
        redis_timeout: Duration::from_millis(redis_timeout_ms),
        store: parse_store_options(&store_addr, &max_response_bytes)?,
        http_addr,
    })
}

const DEFAULT_STORE_MAX_RESPONSE_BYTES: &str = "1048576";

fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut policy_dir = None;
    let mut xds_addr = "127.0.0.1:18000".to_owned();
    let mut http_addr = "127.0.0.1:18001".to_owned();
    let mut module_dir = "/etc/meshward/wasm".to_owned();
    let mut module_cluster = None;
    let mut module_base_url = None;
    let mut wasm_dir = None;
    let mut poll_ms = 200u64;
    let mut kubernetes = false;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut namespace = env("POD_NAMESPACE").unwrap_or_else(|| "meshward-system".into());
    let mut identity = env("POD_NAME").or_else(|| env("HOSTNAME"));
    let mut lease_ms = 15_000u64;
    let mut peer_selector = std::collections::BTreeMap::new();
    let mut rls_addr = "127.0.0.1:18002".to_owned();
    let mut redis_url = None;
    let mut redis_timeout_ms = 50u64;
    let mut store_addr = "127.0.0.1:18003".to_owned();
    let mut store_max_response_bytes = DEFAULT_STORE_MAX_RESPONSE_BYTES.to_owned();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--policy-dir" => policy_dir = Some(PathBuf::from(value()?)),
            "--xds-addr" => xds_addr = value()?,
            "--http-addr" => http_addr = value()?,
            "--module-dir" => module_dir = value()?,
            "--module-cluster" => module_cluster = Some(value()?),
            "--module-base-url" => module_base_url = Some(value()?),
            "--wasm-dir" => wasm_dir = Some(PathBuf::from(value()?)),
            "--poll-interval" => poll_ms = parse_duration_ms(flag, &value()?)?,
            "--kubernetes" => kubernetes = true,
            "--namespace" => namespace = value()?,
            "--identity" => identity = Some(value()?),
            "--peer-selector" => peer_selector = parse_labels(flag, &value()?)?,
            "--lease-duration" => lease_ms = parse_duration_ms(flag, &value()?)?.max(1000),
            "--rls-addr" => rls_addr = value()?,
            "--redis-url" => redis_url = Some(value()?),
            "--redis-timeout" => redis_timeout_ms = parse_duration_ms(flag, &value()?)?,
            "--store-addr" => store_addr = value()?,
            "--store-max-response-bytes" => store_max_response_bytes = value()?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let modules = match (module_cluster, module_base_url) {
        (None, None) => ModuleMode::Local { dir: module_dir },
        (Some(cluster), Some(base_url)) => ModuleMode::Remote { cluster, base_url },
        _ => return Err("--module-cluster and --module-base-url go together".into()),
    };
    let kubernetes = if kubernetes {
        Some(KubernetesOptions {
            namespace,
            identity: identity.ok_or("--kubernetes needs --identity (or $POD_NAME / $HOSTNAME)")?,
            lease_duration: Duration::from_millis(lease_ms),
            sync_timeout: Duration::from_secs(60),
            peer_selector,
            peer_http_port: 0,
        })
    } else {
        None
    };
    let policy_dir = match (policy_dir, &kubernetes) {
        (Some(dir), _) => dir,
        // Kubernetes alone: no file source.
        (None, Some(_)) => PathBuf::new(),
        (None, None) => return Err("--policy-dir is required (or --kubernetes)".into()),
    };
    let options = Options {
        policy_dir,
        xds_addr: xds_addr
            .parse()
            .map_err(|e| format!("--xds-addr {xds_addr}: {e}"))?,
        http_addr: http_addr
            .parse()
            .map_err(|e| format!("--http-addr {http_addr}: {e}"))?,
        wasm_dir,
        modules,
        poll_interval: Duration::from_millis(poll_ms),
    };
    let global = parse_global(redis_url, redis_timeout_ms, &rls_addr)?;
    let store = match global {
        Some(_) => Some(parse_store_options(&store_addr, &store_max_response_bytes)?),
        None => None,
    };
    Ok((options, kubernetes, global, store))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("rls") => match parse_rls(&args[1..]) {
            Ok(options) => serve(start_rls(options)),
            Err(message) => usage_error(&message),
        },
        Some("store") => match parse_store(&args[1..]) {
            Ok(options) => serve(start_store(options)),
            Err(message) => usage_error(&message),
        },
        _ => match parse(&args) {
            Ok((options, kubernetes, global, store)) => {
                serve(start_services(options, kubernetes, global, store))
            }
            Err(message) => usage_error(&message),
        },
    }
}

fn usage_error(message: &str) -> ExitCode {
    if !message.is_empty() {
        eprintln!("meshward-control-plane: {message}\n");
    }
    eprint!("{USAGE}");
    if message.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// What `serve` runs: the full control plane, or one service alone.
trait Served {
    /// `kind address` lines, printed on stdout: tests and scripts read the bound
    /// addresses from them (ports may be 0).
    fn addresses(&self) -> Vec<String>;
    fn stop(self) -> impl std::future::Future<Output = ()>;
}

impl Served for Running {
    fn addresses(&self) -> Vec<String> {
        let mut lines = vec![
            format!("xds {}", self.xds_addr),
            format!("http {}", self.http_addr),
        ];
        lines.extend(self.rls_addr.map(|a| format!("rls {a}")));
        lines.extend(self.store_addr.map(|a| format!("store {a}")));
        lines
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        Running::stop(self)
    }
}

impl Served for RlsRunning {
    fn addresses(&self) -> Vec<String> {
        let mut lines = vec![format!("rls {}", self.rls_addr)];
        lines.extend(self.http_addr.map(|a| format!("http {a}")));
        lines
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        RlsRunning::stop(self)
    }
}

impl Served for StoreRunning {
    fn addresses(&self) -> Vec<String> {
        let mut lines = vec![format!("store {}", self.store_addr)];
        lines.extend(self.http_addr.map(|a| format!("http {a}")));
        lines
    }
    fn stop(self) -> impl std::future::Future<Output = ()> {
        StoreRunning::stop(self)
    }
}

/// Starts on a fresh runtime, prints the addresses, runs until SIGTERM or Ctrl-C, stops.
fn serve<S: Served>(start: impl std::future::Future<Output = Result<S, String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("meshward-control-plane: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match start.await {
            Ok(running) => running,
            Err(err) => {
                eprintln!("meshward-control-plane: {err}");
                return ExitCode::FAILURE;
            }
        };
        for line in running.addresses() {
            println!("{line}");
        }
        wait_for_signal().await;
        eprintln!("meshward-control-plane: shutting down");
        running.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
