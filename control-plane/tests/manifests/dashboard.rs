//! The Grafana dashboard (istio-manifests/grafana/meshward.json) is one Grafana 10+
//! loads as current: schemaVersion 39 (Grafana 10.4/11), only current panel types (no
//! `graph`), every panel with a Prometheus datasource and queries, unique ids, every
//! variable a query uses defined, and a panel for each thing operators watch. Whether
//! the queries return data is e2e/tests/observability.rs's job.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::root;

/// Grafana's own variables a query may use.
const BUILT_IN: [&str; 4] = ["__rate_interval", "__interval", "__range", "__range_s"];

pub fn dashboard() -> Value {
    let path = root().join("istio-manifests/grafana/meshward.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `$name` and `${name}` references in a query.
fn variables(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.starts_with('{');
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
        if braced {
            rest = rest.split_once('}').map_or("", |(_, r)| r);
        }
    }
    found
}

#[test]
fn dashboard_is_current_grafana_json() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39, "Grafana 10.4+ schema");
    assert_eq!(dashboard["uid"], "meshward");
    assert!(dashboard["title"].is_string());
    let templating = dashboard["templating"]["list"].as_array().unwrap();
    let defined: BTreeSet<String> = templating
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    for name in ["datasource", "namespace", "workload"] {
        assert!(defined.contains(name), "variable {name}");
    }
    let datasource = templating
        .iter()
        .find(|v| v["name"] == "datasource")
        .unwrap();
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for variable in templating.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"]["uid"], "${datasource}");
        assert!(variable["query"]["query"]
            .as_str()
            .is_some_and(|q| q.starts_with("label_values(")));
        assert_eq!(variable["includeAll"], true);
        assert_eq!(variable["allValue"], ".*");
    }

    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel without title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("numeric id")),
            "duplicate id in {title}"
        );
        let kind = panel["type"].as_str().unwrap_or_default();
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: gridPos"
        );
        match kind {
            "row" => continue,
            "timeseries" | "stat" | "table" => {}
            other => panic!("{title}: panel type {other} (graph and singlestat are deprecated)"),
        }
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no queries");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(
                refs.insert(target["refId"].as_str().unwrap().to_owned()),
                "{title}: refId"
            );
            assert_eq!(target["datasource"], panel["datasource"], "{title}");
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: expr"));
            for variable in variables(expr) {
                assert!(
                    defined.contains(&variable) || BUILT_IN.contains(&variable.as_str()),
                    "{title}: ${variable} is not defined"
                );
            }
            exprs.push(expr.to_owned());
        }
    }
    // What the dashboard is for (issue: rate-limit decisions by rule, authz denials by
    // reason, JWKS fetch health, idempotency executions/replays/conflicts, trace
    // restarts, control-plane proxies/pushes/NACKs/push latency).
    let all = exprs.join("\n");
    for needed in [
        "meshward_ratelimit_rule_limited",
        "by (meshward_rule)",
        "meshward_authz_denied",
        "by (meshward_reason)",
        "meshward_authz_provider_jwks_fetch_failed",
        "meshward_idempotency_executions",
        "meshward_idempotency_replays",
        "meshward_idempotency_conflicts",
        "meshward_trace_inject_restarted",
        "meshward_control_plane_connected_proxies",
        "meshward_control_plane_pushes_total",
        "meshward_control_plane_nacks_total",
        "meshward_control_plane_push_to_ack_seconds_bucket",
    ] {
        assert!(all.contains(needed), "no query uses {needed}");
    }
    // Every metric the dashboard reads is documented.
    let docs = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    for word in all.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("meshward_")
            && !word.starts_with("meshward_rule")
            && !word.starts_with("meshward_reason")
            && !word.starts_with("meshward_provider")
        {
            let base = word.trim_end_matches("_bucket").trim_end_matches("_total");
            assert!(docs.contains(base), "{word} is not in docs/metrics.md");
        }
    }
}

#[test]
fn variable_references_are_found() {
    assert_eq!(
        variables("a{x=~\"$namespace\"}[$__rate_interval] ${workload}"),
        ["__rate_interval", "namespace", "workload"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
