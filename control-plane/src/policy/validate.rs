//! The checks every policy source applies (files, Kubernetes custom resources), so one
//! policy means the same wherever it was written: names, namespace, scope, and that
//! `config` is an object (its content is the filter's to validate).

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{Kind, Policy, Scope, Selector};

/// A policy as a source read it, not yet checked.
#[derive(Debug, Clone)]
pub struct Parts {
    pub kind: Kind,
    pub name: String,
    pub namespace: Option<String>,
    pub match_labels: BTreeMap<String, String>,
    pub workloads: Vec<String>,
    pub scope: Option<String>,
    pub config: Value,
}

/// Checks `parts`; errors start with `at` (where the policy was read).
pub fn build_policy(parts: Parts, at: &str, source: &str) -> Result<Policy, String> {
    let Parts {
        kind,
        name,
        namespace,
        match_labels,
        workloads,
        scope,
        config,
    } = parts;
    if !is_dns_label(&name) {
        return Err(format!(
            "{at}: metadata.name: {name:?} must be a DNS label (lowercase letters, digits, '-')"
        ));
    }
    let namespace = namespace.unwrap_or_else(|| "default".into());
    if !is_dns_label(&namespace) {
        return Err(format!(
            "{at}: metadata.namespace: {namespace:?} must be a DNS label"
        ));
    }
    let scope = match (kind, scope.as_deref()) {
        (_, None) => Scope::PerReplica,
        (Kind::RateLimit, Some("perReplica")) => Scope::PerReplica,
        (Kind::RateLimit, Some("workload")) => Scope::Workload,
        (Kind::RateLimit, Some("global")) => Scope::Global,
        (Kind::RateLimit, Some(other)) => {
            return Err(format!(
                "{at}: spec.scope: expected perReplica, workload or global, got {other:?}"
            ))
        }
        (_, Some(_)) => {
            return Err(format!(
                "{at}: spec.scope: only RateLimitPolicy has a scope"
            ))
        }
    };
    if !config.is_object() {
        return Err(format!(
            "{at}: spec.config: expected an object (the filter's JSON configuration)"
        ));
    }
    if kind == Kind::Tuning {
        // No filter validates these: the control plane is the authority.
        crate::tuning::spec::TuningSettings::from_config(&config)
            .map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(Policy {
        kind,
        namespace,
        name,
        selector: Selector {
            match_labels,
            workloads,
        },
        scope,
        config,
        source: source.into(),
    })
}

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}
