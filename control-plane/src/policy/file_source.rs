//! `--policy-dir`: YAML policy documents (`*.yaml`, `*.yml`, several per file with
//! `---`), polled for changes. Each file is all or nothing: a file with an error is
//! refused (the error names the file, line and field) and its last good content stays
//! in force; a deleted file's policies go away.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::model::{Kind, Policy};
use super::validate::{build_policy, Parts};

const API_VERSION: &str = "meshward.io/v1alpha1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    selector: SelectorDocument,
    scope: Option<String>,
    /// The filter's configuration (filter policies).
    config: Option<Value>,
    /// `RuntimeTuning` fields (docs/adr/0007).
    memory_limit_ratio: Option<Value>,
    gogc: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SelectorDocument {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    workloads: Vec<String>,
}

/// Parses one file's documents. `file` names it in errors.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Policy>, String> {
    let mut policies = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parsed: Document = serde_path_to_error::deserialize(document).map_err(|err| {
            let location = err
                .inner()
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            // serde_yaml's message already names the field path and ends with the
            // position, which the prefix gives in `file:line:column` form.
            let message = err.inner().to_string();
            let message = message
                .rfind(" at line ")
                .map_or(message.as_str(), |at| &message[..at])
                .to_owned();
            format!("{file}{location}: {message}")
        })?;
        let at = format!("{file} (document {})", index + 1);
        policies.push(to_policy(parsed, &at, &format!("{file}#{}", index + 1))?);
    }
    Ok(policies)
}

fn to_policy(document: Document, at: &str, source: &str) -> Result<Policy, String> {
    if document.api_version != API_VERSION {
        return Err(format!(
            "{at}: apiVersion: expected {API_VERSION}, got {:?}",
            document.api_version
        ));
    }
    let kind = Kind::from_document_kind(&document.kind).ok_or_else(|| {
        format!(
            "{at}: kind: {:?} is not one of RateLimitPolicy, AuthPolicy, IdempotencyPolicy, TracePolicy, RuntimeTuning",
            document.kind
        )
    })?;
    let spec = document.spec;
    let config = if kind == Kind::Tuning {
        if spec.config.is_some() {
            return Err(format!(
                "{at}: spec.config: a RuntimeTuning has memoryLimitRatio and gogc, not config"
            ));
        }
        let mut settings = serde_json::Map::new();
        if let Some(ratio) = spec.memory_limit_ratio {
            settings.insert("memoryLimitRatio".into(), ratio);
        }
        if let Some(gogc) = spec.gogc {
            settings.insert("gogc".into(), gogc);
        }
        Value::Object(settings)
    } else {
        if spec.memory_limit_ratio.is_some() || spec.gogc.is_some() {
            return Err(format!(
                "{at}: spec: memoryLimitRatio and gogc belong to a RuntimeTuning"
            ));
        }
        spec.config
            .ok_or_else(|| format!("{at}: spec.config: missing (the filter's configuration)"))?
    };
    build_policy(
        Parts {
            kind,
            name: document.metadata.name,
            namespace: document.metadata.namespace,
            match_labels: spec.selector.match_labels,
            workloads: spec.selector.workloads,
            scope: spec.scope,
            config,
        },
        at,
        source,
    )
}

#[derive(Debug, Clone)]
struct FileState {
    content: Vec<u8>,
    good: Vec<Policy>,
    error: Option<String>,
}

/// The directory's files with their last good policies.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Changed bytes seen once: applied only if the next poll reads the same, so a file
    /// caught half-written (truncated, then written) is never applied.
    candidates: BTreeMap<PathBuf, Vec<u8>>,
    /// The first poll applies what it reads (the control plane is starting).
    primed: bool,
    max_file_bytes: u64,
}

/// What a poll found.
#[derive(Debug, Default, PartialEq)]
pub struct Poll {
    /// The policies in force changed.
    pub changed: bool,
    /// Errors reported for the first time in this poll (one per refused file).
    pub new_errors: Vec<String>,
}

impl FileSource {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            candidates: BTreeMap::new(),
            primed: false,
            max_file_bytes: 1024 * 1024,
        }
    }

    /// Reads the directory again; only files whose bytes changed are parsed.
    pub fn poll(&mut self) -> Result<Poll, String> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|err| format!("cannot read policy directory {}: {err}", self.dir.display()))?;
        let mut seen = HashSet::new();
        let mut poll = Poll::default();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_yaml = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml");
            if !is_yaml || !path.is_file() {
                continue;
            }
            let too_big = std::fs::metadata(&path).is_ok_and(|m| m.len() > self.max_file_bytes);
            let content = match std::fs::read(&path) {
                _ if too_big => {
                    seen.insert(path.clone());
                    let error = format!(
                        "{}: larger than {} bytes; refused",
                        path.display(),
                        self.max_file_bytes
                    );
                    if let Some(state) = self.files.get_mut(&path) {
                        if state.error.as_deref() != Some(error.as_str()) {
                            poll.new_errors.push(error.clone());
                            state.error = Some(error);
                        }
                    } else {
                        poll.new_errors.push(error.clone());
                        self.files.insert(
                            path.clone(),
                            FileState {
                                content: Vec::new(),
                                good: Vec::new(),
                                error: Some(error),
                            },
                        );
                    }
                    continue;
                }
                Ok(content) => content,
                // Gone between listing and reading: the next poll sees it missing.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                // Unreadable for now: keep its last good policies rather than drop them
                // (dropping an auth policy would open the workload).
                Err(_) => {
                    seen.insert(path.clone());
                    continue;
                }
            };
            seen.insert(path.clone());
            if self
                .files
                .get(&path)
                .is_some_and(|state| state.content == content)
            {
                self.candidates.remove(&path);
                continue;
            }
            if self.primed && self.candidates.get(&path) != Some(&content) {
                self.candidates.insert(path.clone(), content);
                continue; // applied when the next poll reads the same bytes
            }
            self.candidates.remove(&path);
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let parsed = std::str::from_utf8(&content)
                .map_err(|_| format!("{name}: not UTF-8 text"))
                .and_then(|text| parse_file(&name, text));
            let previous = self.files.remove(&path);
            let state = match parsed {
                Ok(good) => {
                    poll.changed |= previous.as_ref().is_none_or(|p| p.good != good);
                    FileState {
                        content,
                        good,
                        error: None,
                    }
                }
                Err(error) => {
                    poll.new_errors.push(error.clone());
                    FileState {
                        content,
                        good: previous.map(|p| p.good).unwrap_or_default(),
                        error: Some(error),
                    }
                }
            };
            self.files.insert(path, state);
        }
        self.primed = true;
        self.candidates.retain(|path, _| seen.contains(path));
        let before = self.files.len();
        self.files.retain(|path, _| seen.contains(path));
        poll.changed |= self.files.len() != before;
        Ok(poll)
    }

    /// The policies in force. A policy defined twice (same kind, namespace and name)
    /// keeps its first definition in file-name order; the duplicate is reported.
    pub fn policies(&self) -> (Vec<Policy>, Vec<String>) {
        let mut policies: Vec<Policy> = Vec::new();
        let mut errors: Vec<String> = self
            .files
            .values()
            .filter_map(|f| f.error.clone())
            .collect();
        for policy in self.files.values().flat_map(|f| f.good.iter()) {
            let duplicate = policies.iter().find(|p| {
                p.kind == policy.kind && p.namespace == policy.namespace && p.name == policy.name
            });
            match duplicate {
                Some(first) => errors.push(format!(
                    "{}: {} {}/{} is already defined in {}; ignored",
                    policy.source,
                    policy.kind.document_kind(),
                    policy.namespace,
                    policy.name,
                    first.source
                )),
                None => policies.push(policy.clone()),
            }
        }
        (policies, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Scope;

    const GOOD: &str = r#"
apiVersion: meshward.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders-limit, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  scope: workload
  config:
    rules:
      - {name: per-client, limit: {algorithm: tokenBucket, requests: 10, per: 1s}}
---
apiVersion: meshward.io/v1alpha1
kind: AuthPolicy
metadata: {name: orders-auth}
spec:
  config: {providers: []}
"#;

    #[test]
    fn parses_multi_document_files() {
        let policies = parse_file("p.yaml", GOOD).unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0].kind, Kind::RateLimit);
        assert_eq!(policies[0].scope, Scope::Workload);
        assert_eq!(policies[0].selector.match_labels["app"], "orders");
        assert_eq!(policies[0].config["rules"][0]["limit"]["requests"], 10);
        assert_eq!(policies[1].namespace, "default");
        assert_eq!(policies[1].source, "p.yaml#2");
    }

    #[test]
    fn runtime_tuning_documents_carry_their_settings() {
        let text = r#"
apiVersion: meshward.io/v1alpha1
kind: RuntimeTuning
metadata: {name: orders-gc, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  memoryLimitRatio: 0.85
  gogc: {adaptive: {min: 50, max: 400}}
"#;
        let policies = parse_file("t.yaml", text).unwrap();
        assert_eq!(policies[0].kind, Kind::Tuning);
        assert_eq!(
            policies[0].config,
            serde_json::json!({"memoryLimitRatio": 0.85, "gogc": {"adaptive": {"min": 50, "max": 400}}})
        );
        let err = parse_file("t.yaml", &text.replace("min: 50", "min: 0")).unwrap_err();
        assert!(
            err.contains("t.yaml (document 1): spec.gogc.adaptive.min: 0 is outside"),
            "{err}"
        );
        let err = parse_file("t.yaml", &text.replace("RuntimeTuning", "TracePolicy")).unwrap_err();
        assert!(
            err.contains("memoryLimitRatio and gogc belong to a RuntimeTuning"),
            "{err}"
        );
        let err = parse_file("t.yaml", &GOOD.replace("  config: {providers: []}", "")).unwrap_err();
        assert!(err.contains("spec.config: missing"), "{err}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD.replace("scope: workload", "scope: workload\n  colour: blue");
        let err = parse_file("p.yaml", &bad).unwrap_err();
        assert!(err.starts_with("p.yaml:"), "{err}");
        assert!(err.contains("spec:") || err.contains("colour"), "{err}");
        assert!(err.contains("unknown field `colour`"), "{err}");
        let line = err.split(':').nth(1).unwrap();
        assert_eq!(line, "8", "{err}");

        let err = parse_file("q.yaml", &GOOD.replace("RateLimitPolicy", "RatePolicy")).unwrap_err();
        assert!(
            err.starts_with("q.yaml (document 1): kind: \"RatePolicy\" is not one of"),
            "{err}"
        );
        let err = parse_file(
            "q.yaml",
            &GOOD.replace("scope: workload", "scope: everywhere"),
        )
        .unwrap_err();
        assert!(
            err.contains("spec.scope: expected perReplica, workload or global"),
            "{err}"
        );
        let err = parse_file("q.yaml", "apiVersion: [").unwrap_err();
        assert!(err.starts_with("q.yaml:"), "{err}");
    }

    #[test]
    fn a_bad_edit_keeps_the_last_good_file_and_deletion_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("limits.yaml");
        std::fs::write(&file, GOOD).unwrap();
        let mut source = FileSource::new(dir.path());
        let poll = source.poll().unwrap();
        assert!(poll.changed, "the first poll applies what it reads");
        assert_eq!(source.policies().0.len(), 2);
        assert!(
            !source.poll().unwrap().changed,
            "unchanged bytes: nothing to do"
        );

        // An envelope error (the filter's own config is validated by the filter).
        std::fs::write(
            &file,
            GOOD.replace("requests: 10", "requests: 99")
                .replace("scope: workload", "scope: sometimes"),
        )
        .unwrap();
        let seen_once = source.poll().unwrap();
        assert_eq!(
            seen_once,
            Poll::default(),
            "changed bytes wait for a second read"
        );
        let poll = source.poll().unwrap();
        assert!(!poll.changed);
        assert_eq!(poll.new_errors.len(), 1, "{:?}", poll.new_errors);
        let (policies, errors) = source.policies();
        assert_eq!(policies[0].config["rules"][0]["limit"]["requests"], 10);
        assert_eq!(errors.len(), 1);

        std::fs::write(&file, GOOD.replace("requests: 10", "requests: 20")).unwrap();
        assert!(!source.poll().unwrap().changed);
        assert!(source.poll().unwrap().changed);
        assert_eq!(
            source.policies().0[0].config["rules"][0]["limit"]["requests"],
            20
        );
        assert!(source.policies().1.is_empty());

        std::fs::write(dir.path().join("copy.yml"), GOOD).unwrap();
        source.poll().unwrap();
        source.poll().unwrap();
        let (policies, errors) = source.policies();
        assert_eq!(policies.len(), 2);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("already defined in"), "{errors:?}");

        std::fs::remove_file(&file).unwrap();
        std::fs::remove_file(dir.path().join("copy.yml")).unwrap();
        assert!(source.poll().unwrap().changed);
        assert!(source.policies().0.is_empty());
    }

    #[test]
    fn a_file_caught_half_written_is_never_applied() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.yaml");
        std::fs::write(&file, GOOD).unwrap();
        let mut source = FileSource::new(dir.path());
        source.poll().unwrap();
        // A writer truncates, the poll reads the empty file, then the writer finishes.
        std::fs::write(&file, "").unwrap();
        assert!(!source.poll().unwrap().changed);
        std::fs::write(&file, GOOD.replace("requests: 10", "requests: 11")).unwrap();
        assert!(
            !source.poll().unwrap().changed,
            "a different read: not stable yet"
        );
        assert_eq!(
            source.policies().0.len(),
            2,
            "the empty read never removed them"
        );
        assert!(source.poll().unwrap().changed);
        assert_eq!(
            source.policies().0[0].config["rules"][0]["limit"]["requests"],
            11
        );
    }
}
