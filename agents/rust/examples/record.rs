//! Runs the tuning agent and prints what it receives as JSON lines, one per event —
//! a stand-in for an application, which would apply the numbers to its allocator or
//! concurrency knobs in the callback instead (Rust has no GC to tune).
//!
//! ```text
//! cargo run -p meshward-tuning-agent --example record -- \
//!     --control-plane http://127.0.0.1:18000 --node-id orders-1.shop \
//!     --namespace shop --workload orders --labels app=orders \
//!     [--pod P --container C] [--memory-limit-bytes N] [--report-interval-ms N]
//! ```
//!
//! stdin: `heap N` sets the live heap to N bytes (reported at once if it moved > 10 %),
//! `report` reports now, `quit` (or end of input) stops.

use std::collections::HashMap;
use std::time::Duration;

use meshward_tuning_agent::{Agent, Event, RuntimeTuning};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

fn tuning_json(tuning: &RuntimeTuning) -> Value {
    json!({
        "nodeId": tuning.node_id,
        "policy": tuning.policy,
        "version": tuning.version,
        "memoryLimitBytes": tuning.memory_limit_bytes,
        "gcPercent": tuning.gc_percent,
        "heapNearLimit": tuning.heap_near_limit,
        "reason": tuning.reason,
    })
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::Connected => json!({"event": "connected"}),
        Event::Disconnected { error, retry_in } => {
            json!({"event": "disconnected", "error": error, "retryInMs": retry_in.as_millis() as u64})
        }
        Event::Nacked { version, error } => {
            json!({"event": "nacked", "version": version, "error": error})
        }
        Event::Reported {
            live_heap_bytes,
            current,
        } => json!({
            "event": "reported",
            "liveHeapBytes": live_heap_bytes,
            "current": current.as_ref().map(tuning_json),
        }),
        Event::ReportFailed { error } => json!({"event": "error", "message": error}),
        other => json!({"event": "other", "debug": format!("{other:?}")}),
    }
}

fn parse_args() -> Result<HashMap<String, String>, String> {
    let mut args = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        args.insert(name.to_owned(), value);
    }
    Ok(args)
}

fn build(args: &HashMap<String, String>) -> Result<Agent, String> {
    let get = |name: &str| args.get(name).cloned().unwrap_or_default();
    let labels: Vec<(String, String)> = get("labels")
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--labels: {pair:?} is not key=value"))
        })
        .collect::<Result<_, _>>()?;
    let mut builder = Agent::builder(get("control-plane"))
        .node(get("node-id"), get("namespace"), get("workload"), labels)
        .pod(get("pod"), get("container"))
        .on_event(|event| println!("{}", event_json(event)));
    if let Some(limit) = args.get("memory-limit-bytes") {
        let limit = limit
            .parse()
            .map_err(|e| format!("--memory-limit-bytes {limit:?}: {e}"))?;
        builder = builder.memory_limit(limit);
    }
    if let Some(ms) = args.get("report-interval-ms") {
        let ms = ms
            .parse()
            .map_err(|e| format!("--report-interval-ms {ms:?}: {e}"))?;
        builder = builder.report_interval(Duration::from_millis(ms));
    }
    builder.build().map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let agent = match parse_args().and_then(|args| build(&args)) {
        Ok(agent) => agent,
        Err(error) => {
            eprintln!("record: {error}");
            std::process::exit(2);
        }
    };
    println!(
        "{}",
        json!({"event": "started", "nodeId": agent.node_id(), "memoryLimitBytes": agent.memory_limit()})
    );
    let reporter = agent.reporter();
    // Stops on `quit`, end of input or Ctrl-C; meanwhile `heap N` feeds the reporter.
    let stdin = async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split_whitespace();
            match (words.next(), words.next().map(str::parse::<u64>)) {
                (Some("heap"), Some(Ok(bytes))) => reporter.report_heap(bytes),
                (Some("report"), None) => reporter.report_now(),
                (Some("quit"), None) => return,
                (None, _) => {}
                _ => println!(
                    "{}",
                    json!({"event": "error", "message": format!("unknown command {line:?}")})
                ),
            }
        }
    };
    let shutdown = async {
        tokio::select! {
            () = stdin => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    agent
        .run(
            |tuning| {
                println!(
                    "{}",
                    json!({"event": "applied", "tuning": tuning_json(tuning)})
                )
            },
            shutdown,
        )
        .await;
}
