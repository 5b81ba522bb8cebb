//! `cargo xtask demo`: builds the filters, starts the control plane on
//! examples/policies/, the echo upstream and a real Envoy bootstrapped from
//! examples/envoy/control-plane-demo.yaml (its filters configured over ECDS), prints curl
//! lines to try, and stops everything on Ctrl-C. Editing a policy file while it runs
//! changes the behaviour live.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::run::root;
use crate::{build_wasm, setup};

use meshward_e2e::control_plane::ControlPlane;
use meshward_e2e::demo::{
    ADMIN_PORT as ADMIN, CONTROL_PLANE_CONFIG as CONFIG, CONTROL_PLANE_HTTP_PORT, CURL_LINES,
    LISTENER_PORT as LISTENER, POLICY_DIR, UPSTREAM_PORT, XDS_PORT,
};

fn ensure_free(port: u16) -> Result<(), String> {
    TcpListener::bind(("127.0.0.1", port)).map(drop).map_err(|e| {
        format!("port {port} on 127.0.0.1 is busy ({e}); stop whatever uses it (another demo?) and retry")
    })
}

pub fn run() -> Result<(), String> {
    setup::ensure()?;
    build_wasm::run()?;
    ensure_free(LISTENER)?;
    ensure_free(ADMIN)?;
    ensure_free(XDS_PORT)?;
    ensure_free(CONTROL_PLANE_HTTP_PORT)?;
    let control =
        ControlPlane::start_on(&root().join(POLICY_DIR), XDS_PORT, CONTROL_PLANE_HTTP_PORT)?;
    println!(
        "\ncontrol plane serving {POLICY_DIR}/: xDS on 127.0.0.1:{XDS_PORT}, status on http://127.0.0.1:{CONTROL_PLANE_HTTP_PORT}/status"
    );
    let upstream = meshward_e2e::RecordingUpstream::start_on(&format!("127.0.0.1:{UPSTREAM_PORT}"))
        .map_err(|e| format!("{e}; is port {UPSTREAM_PORT} busy (another demo?)"))?;
    println!("\necho upstream listening on 127.0.0.1:{UPSTREAM_PORT}");

    let log_path = root().join("target/demo-envoy.log");
    let mut envoy = Command::new(setup::venv_bin("envoy"))
        .current_dir(root())
        .args([
            "-c",
            CONFIG,
            "--concurrency",
            "2",
            "-l",
            "info",
            "--log-path",
        ])
        .arg(&log_path)
        .stdin(Stdio::null())
        // Own process group: Ctrl-C reaches only xtask, which then stops Envoy in order.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start Envoy: {e}"))?;
    println!(
        "Envoy starting: .venv/bin/envoy -c {CONFIG} --concurrency 2 (log: {})",
        log_path.display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("install Ctrl-C handler: {e}"))?;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = envoy.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "Envoy exited ({status}). Last log lines:\n{}",
                tail.join("\n")
            ));
        }
        let ready = meshward_e2e::Request::get("/ready")
            .send(ADMIN)
            .is_ok_and(|r| r.status == 200);
        if ready {
            break;
        }
        if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
            let _ = envoy.kill();
            return Err("Envoy did not become ready within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    println!("\nMeshward demo is up: Envoy on 127.0.0.1:{LISTENER}, admin on 127.0.0.1:{ADMIN}.");
    println!("Paste these into another terminal:\n{CURL_LINES}");
    println!(
        "# 8. Live policy edit: change `burst: 5` to `burst: 2` in {POLICY_DIR}/ratelimit.yaml, save,\n\
         #    then repeat line 1 from a fresh client (curl --interface 127.0.0.2 ...): 2 × 200, then 429.\n\
         #    What each proxy acknowledged: curl -s http://127.0.0.1:{CONTROL_PLANE_HTTP_PORT}/status\n"
    );
    println!("Press Ctrl-C to stop.");
    while !stop.load(Ordering::SeqCst) {
        if let Ok(Some(status)) = envoy.try_wait() {
            drop(upstream);
            return Err(format!(
                "Envoy exited unexpectedly ({status}); see {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping Envoy, the control plane and the echo upstream...");
    let _ = envoy.kill();
    let _ = envoy.wait();
    drop(control);
    println!("echo upstream served {} request(s)", upstream.hits());
    drop(upstream);
    println!("stopped.");
    Ok(())
}
