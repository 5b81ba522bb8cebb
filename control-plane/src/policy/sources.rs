//! Several policy sources at once (policy files and Kubernetes custom resources), merged
//! into the one list the compiler reads.
//!
//! Precedence (README "Policies", docs/adr/0006): both sources apply side by side and
//! the usual rule picks the policy for each workload (most specific selector, then
//! name). Only when both define the *same* policy — same kind, namespace and name — the
//! Kubernetes resource wins and the file's copy is reported as shadowed: the cluster is
//! the source of truth an operator edits with `kubectl`, files are the defaults baked
//! into the deployment.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Kind, Policy};

/// Where policies come from, in increasing precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Files,
    Kubernetes,
}

/// The last policies and errors each source reported.
#[derive(Debug, Default)]
pub struct Sources {
    by_source: BTreeMap<Source, (Vec<Policy>, Vec<String>)>,
}

impl Sources {
    pub fn set(&mut self, source: Source, policies: Vec<Policy>, errors: Vec<String>) {
        self.by_source.insert(source, (policies, errors));
    }

    /// Replaces a source's errors only (its policies did not change).
    pub fn set_errors(&mut self, source: Source, errors: Vec<String>) {
        self.by_source.entry(source).or_default().1 = errors;
    }

    /// Every policy in force, and every source's errors plus one note per shadowed policy.
    pub fn merged(&self) -> (Vec<Policy>, Vec<String>) {
        let mut taken: BTreeSet<(Kind, String, String)> = BTreeSet::new();
        let mut policies = Vec::new();
        let mut errors = Vec::new();
        // Highest precedence first, so the first definition of an identity wins.
        for (_, (list, source_errors)) in self.by_source.iter().rev() {
            for policy in list {
                let identity = (policy.kind, policy.namespace.clone(), policy.name.clone());
                if taken.insert(identity) {
                    policies.push(policy.clone());
                } else {
                    errors.push(format!(
                        "{}: shadowed by the {} {}/{} from Kubernetes (same kind, namespace and name)",
                        policy.source,
                        policy.kind.document_kind(),
                        policy.namespace,
                        policy.name
                    ));
                }
            }
            errors.extend(source_errors.iter().cloned());
        }
        (policies, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Scope, Selector};

    fn policy(name: &str, source: &str, requests: u64) -> Policy {
        Policy {
            kind: Kind::RateLimit,
            namespace: "shop".into(),
            name: name.into(),
            selector: Selector::default(),
            scope: Scope::PerReplica,
            config: serde_json::json!({"requests": requests}),
            source: source.into(),
        }
    }

    #[test]
    fn both_sources_apply_and_kubernetes_wins_on_the_same_identity() {
        let mut sources = Sources::default();
        sources.set(
            Source::Files,
            vec![
                policy("base", "a.yaml#1", 1),
                policy("orders", "a.yaml#2", 2),
            ],
            vec!["b.yaml: broken".into()],
        );
        sources.set(
            Source::Kubernetes,
            vec![policy("orders", "RateLimitPolicy/shop/orders", 3)],
            vec![],
        );
        let (policies, errors) = sources.merged();
        let names: Vec<(&str, &str)> = policies
            .iter()
            .map(|p| (p.name.as_str(), p.source.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("orders", "RateLimitPolicy/shop/orders"),
                ("base", "a.yaml#1")
            ]
        );
        assert_eq!(
            errors,
            [
                "a.yaml#2: shadowed by the RateLimitPolicy shop/orders from Kubernetes (same kind, namespace and name)",
                "b.yaml: broken"
            ]
        );
        sources.set_errors(Source::Files, vec![]);
        assert_eq!(sources.merged().1.len(), 1, "only the shadow note is left");
    }
}
