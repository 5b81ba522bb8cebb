//! `meshward-control-plane`: see README.md for flags and the Envoy side.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use meshward_control_plane::kubernetes::controller::KubernetesOptions;
use meshward_control_plane::server::{start_with, ModuleMode, Options};

const USAGE: &str = "\
usage: meshward-control-plane --policy-dir DIR [options]
       meshward-control-plane --kubernetes [--policy-dir DIR] [options]

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
";

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

fn parse(args: &[String]) -> Result<(Options, Option<KubernetesOptions>), String> {
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
    Ok((options, kubernetes))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, kubernetes) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("meshward-control-plane: {message}\n");
            }
            eprint!("{USAGE}");
            return if message.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
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
        let running = match start_with(options, kubernetes).await {
            Ok(running) => running,
            Err(err) => {
                eprintln!("meshward-control-plane: {err}");
                return ExitCode::FAILURE;
            }
        };
        // Tests and scripts read the bound addresses from these lines (ports may be 0).
        println!("xds {}", running.xds_addr);
        println!("http {}", running.http_addr);
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
