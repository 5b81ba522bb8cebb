//! The status a policy resource should have: `Accepted` (the same checks as a policy
//! file; the message says what is wrong) and `Programmed` (how many selected proxies
//! ACKed the current version; NACK messages surfaced), plus `HeapPressure` for a
//! `RuntimeTuning`. Pure functions: the reconciler supplies the facts and the time.

use super::crds::{PolicyCondition, PolicyStatus};
use super::delivery::Delivery;

pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";
pub const HEAP_PRESSURE: &str = "HeapPressure";

/// NACK messages are Envoy's and can be long; the status stays readable.
const MAX_MESSAGE: usize = 1024;

/// What is known about a policy when its status is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Facts {
    /// The resource failed validation with this message.
    Invalid(String),
    /// A filter policy and its delivery.
    Filter(Delivery),
    /// A runtime tuning policy: instances it configures, how many fetched/ACKed their
    /// current settings, and the node ids whose heap is near the limit.
    Tuning {
        instances: usize,
        delivered: usize,
        heap_near_limit: Vec<String>,
        /// Control-plane replicas that did not answer (their agents are not counted).
        unanswered_replicas: Vec<String>,
    },
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> PolicyCondition {
    PolicyCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: truncate(message),
        observed_generation: None,
        last_transition_time: None,
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

fn proxies(n: usize) -> String {
    format!("{n} prox{}", if n == 1 { "y" } else { "ies" })
}

/// The conditions for `facts`, without generation or times (see [`status`]).
pub fn conditions(facts: &Facts) -> Vec<PolicyCondition> {
    match facts {
        Facts::Invalid(message) => vec![
            condition(ACCEPTED, "False", "Invalid", message.clone()),
            condition(
                PROGRAMMED,
                "False",
                "Invalid",
                "not pushed: the policy is not accepted".into(),
            ),
        ],
        Facts::Filter(delivery) => vec![
            condition(ACCEPTED, "True", "Accepted", "the policy is valid".into()),
            filter_programmed(delivery),
        ],
        Facts::Tuning {
            instances,
            delivered,
            heap_near_limit,
            unanswered_replicas,
        } => {
            let programmed = if !unanswered_replicas.is_empty() {
                condition(
                    PROGRAMMED,
                    "Unknown",
                    "ReplicasUnanswered",
                    format!(
                        "{delivered}/{instances} agents have the current settings; {}",
                        unanswered(unanswered_replicas)
                    ),
                )
            } else if *instances == 0 {
                condition(
                    PROGRAMMED,
                    "Unknown",
                    "NoAgents",
                    "no connected agent is configured by this policy".into(),
                )
            } else if delivered == instances {
                condition(
                    PROGRAMMED,
                    "True",
                    "Programmed",
                    format!("{delivered}/{instances} agents have the current settings"),
                )
            } else {
                condition(
                    PROGRAMMED,
                    "False",
                    "Pending",
                    format!("{delivered}/{instances} agents have the current settings"),
                )
            };
            let pressure = if heap_near_limit.is_empty() {
                condition(
                    HEAP_PRESSURE,
                    "False",
                    "HeapBelowTarget",
                    "no agent's live heap is near its target".into(),
                )
            } else {
                condition(
                    HEAP_PRESSURE,
                    "True",
                    "HeapNearLimit",
                    format!(
                        "GOGC held at its minimum (not tightened further) for: {}",
                        heap_near_limit.join(", ")
                    ),
                )
            };
            vec![
                condition(ACCEPTED, "True", "Accepted", "the policy is valid".into()),
                programmed,
                pressure,
            ]
        }
    }
}

fn unanswered(replicas: &[String]) -> String {
    format!(
        "not counted: no answer from control-plane replica{} {}",
        if replicas.len() == 1 { "" } else { "s" },
        replicas.join(", ")
    )
}

fn filter_programmed(delivery: &Delivery) -> PolicyCondition {
    let Delivery {
        selected,
        acked,
        rejected,
        unanswered_replicas,
    } = delivery;
    if *selected == 0 && unanswered_replicas.is_empty() {
        return condition(
            PROGRAMMED,
            "Unknown",
            "NoProxies",
            "no connected proxy is configured by this policy (none selected, or a more specific policy wins)".into(),
        );
    }
    if let Some((node, message)) = rejected.first() {
        return condition(
            PROGRAMMED,
            "False",
            "Rejected",
            format!(
                "{}/{selected} rejected the current version ({node}: {message})",
                rejected.len()
            ),
        );
    }
    let summary = format!("{acked}/{} ACKed the current version", proxies(*selected));
    if !unanswered_replicas.is_empty() {
        // What was counted may be complete or not: do not claim either.
        return condition(
            PROGRAMMED,
            "Unknown",
            "ReplicasUnanswered",
            format!("{summary}; {}", unanswered(unanswered_replicas)),
        );
    }
    if acked == selected {
        condition(PROGRAMMED, "True", "Programmed", summary)
    } else {
        condition(PROGRAMMED, "False", "Pending", summary)
    }
}

/// The full status for `generation`: conditions whose status did not change keep their
/// `lastTransitionTime` from `previous`, the others get `now`.
pub fn status(
    facts: &Facts,
    generation: Option<i64>,
    previous: Option<&PolicyStatus>,
    now: &str,
) -> PolicyStatus {
    let conditions = conditions(facts)
        .into_iter()
        .map(|mut condition| {
            let before =
                previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == condition.type_));
            condition.observed_generation = generation;
            condition.last_transition_time = match before {
                Some(b) if b.status == condition.status && b.last_transition_time.is_some() => {
                    b.last_transition_time.clone()
                }
                _ => Some(now.to_owned()),
            };
            condition
        })
        .collect();
    PolicyStatus {
        observed_generation: generation,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-11-21T10:00:00Z";
    const T1: &str = "2026-11-21T10:05:00Z";

    fn find<'a>(status: &'a PolicyStatus, type_: &str) -> &'a PolicyCondition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn programmed_counts_acks_and_surfaces_nacks() {
        let pending = Facts::Filter(Delivery {
            selected: 3,
            acked: 2,
            rejected: vec![],
            unanswered_replicas: vec![],
        });
        let status = status(&pending, Some(4), None, T0);
        assert_eq!(status.observed_generation, Some(4));
        let programmed = find(&status, PROGRAMMED);
        assert_eq!(
            (
                programmed.status.as_str(),
                programmed.reason.as_str(),
                programmed.message.as_str()
            ),
            ("False", "Pending", "2/3 proxies ACKed the current version")
        );
        assert_eq!(programmed.observed_generation, Some(4));
        let rejected = Facts::Filter(Delivery {
            selected: 2,
            acked: 1,
            rejected: vec![(
                "node-b".into(),
                "rules[0].limit.requests: must be > 0".into(),
            )],
            unanswered_replicas: vec![],
        });
        let programmed = find(&super::status(&rejected, Some(4), None, T0), PROGRAMMED).clone();
        assert_eq!(programmed.reason, "Rejected");
        assert_eq!(
            programmed.message,
            "1/2 rejected the current version (node-b: rules[0].limit.requests: must be > 0)"
        );
        let done = Facts::Filter(Delivery {
            selected: 1,
            acked: 1,
            rejected: vec![],
            unanswered_replicas: vec![],
        });
        let programmed = find(&super::status(&done, Some(4), None, T0), PROGRAMMED).clone();
        assert_eq!(
            (programmed.status.as_str(), programmed.message.as_str()),
            ("True", "1/1 proxy ACKed the current version")
        );
    }

    #[test]
    fn transition_times_move_only_when_a_condition_changes() {
        let first = status(
            &Facts::Filter(Delivery {
                selected: 1,
                acked: 0,
                rejected: vec![],
                unanswered_replicas: vec![],
            }),
            Some(1),
            None,
            T0,
        );
        let second = status(
            &Facts::Filter(Delivery {
                selected: 1,
                acked: 1,
                rejected: vec![],
                unanswered_replicas: vec![],
            }),
            Some(1),
            Some(&first),
            T1,
        );
        assert_eq!(
            find(&second, ACCEPTED).last_transition_time.as_deref(),
            Some(T0)
        );
        assert_eq!(
            find(&second, PROGRAMMED).last_transition_time.as_deref(),
            Some(T1)
        );
        let again = status(
            &Facts::Filter(Delivery {
                selected: 1,
                acked: 1,
                rejected: vec![],
                unanswered_replicas: vec![],
            }),
            Some(1),
            Some(&second),
            "later",
        );
        assert_eq!(
            again, second,
            "nothing changed: an equal status, so no write"
        );
    }

    #[test]
    fn invalid_and_tuning_conditions() {
        let invalid = status(
            &Facts::Invalid("spec.scope: expected perReplica, workload or global".into()),
            Some(2),
            None,
            T0,
        );
        let accepted = find(&invalid, ACCEPTED);
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(accepted.message.contains("spec.scope"));
        assert_eq!(find(&invalid, PROGRAMMED).status, "False");

        let tuning = status(
            &Facts::Tuning {
                instances: 2,
                delivered: 2,
                heap_near_limit: vec!["orders-1.shop".into()],
                unanswered_replicas: vec![],
            },
            Some(1),
            None,
            T0,
        );
        assert_eq!(
            find(&tuning, PROGRAMMED).message,
            "2/2 agents have the current settings"
        );
        let pressure = find(&tuning, HEAP_PRESSURE);
        assert_eq!(
            (pressure.status.as_str(), pressure.reason.as_str()),
            ("True", "HeapNearLimit")
        );
        assert!(pressure.message.ends_with("for: orders-1.shop"));
    }

    #[test]
    fn an_unanswering_replica_makes_programmed_unknown() {
        let facts = Facts::Filter(Delivery {
            selected: 2,
            acked: 2,
            rejected: vec![],
            unanswered_replicas: vec!["cp-1".into()],
        });
        let programmed = find(&status(&facts, Some(1), None, T0), PROGRAMMED).clone();
        assert_eq!(
            (programmed.status.as_str(), programmed.reason.as_str(), programmed.message.as_str()),
            (
                "Unknown",
                "ReplicasUnanswered",
                "2/2 proxies ACKed the current version; not counted: no answer from control-plane replica cp-1"
            )
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let facts = Facts::Invalid("é".repeat(2000));
        let written = status(&facts, None, None, T0);
        let message = &find(&written, ACCEPTED).message;
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(message.ends_with('…'));
    }
}
