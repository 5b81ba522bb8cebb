//! What a `RuntimeTuning` policy says (the `spec` fields besides `selector`), shared by
//! the custom resource and the policy file, and the checks on it (docs/adr/0007).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DEFAULT_MEMORY_LIMIT_RATIO: f64 = 0.9;
pub const DEFAULT_TARGET_RATIO: f64 = 0.8;
pub const DEFAULT_STEP: u32 = 10;
/// GOGC below this is refused: it would mean collecting almost continuously (and `off`,
/// −1, is never produced).
pub const MIN_GOGC: u32 = 10;
pub const MAX_GOGC: u32 = 10_000;

/// The tuning itself: GOMEMLIMIT ratio and the GOGC rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TuningSettings {
    /// GOMEMLIMIT = this ratio × the container's memory limit (none set: GOMEMLIMIT is left
    /// unset). Default 0.9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 1.0))]
    pub memory_limit_ratio: Option<f64>,
    /// GOGC: a fixed percentage, or adaptive within bounds. Never `off`. Absent: GOGC is
    /// left as the application set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gogc: Option<GogcSpec>,
}

/// Exactly one of `fixed` or `adaptive`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GogcSpec {
    /// A fixed GOGC percentage (10–10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 10000))]
    pub fixed: Option<u32>,
    /// GOGC = clamp(⌊(T − H)/H · 100⌋, min, max), T = targetRatio × limit, H = the live
    /// heap the agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveGogc>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdaptiveGogc {
    /// Lower bound (10–10000), held while the heap is near the target (no tightening
    /// beyond it; the `HeapPressure` condition is raised instead).
    #[schemars(range(min = 10, max = 10000))]
    pub min: u32,
    /// Upper bound (min–10000).
    #[schemars(range(min = 10, max = 10000))]
    pub max: u32,
    /// T = targetRatio × the memory limit. Default 0.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.1, max = 1.0))]
    pub target_ratio: Option<f64>,
    /// Re-push only when GOGC moves by at least this many points (or reaches a bound), so
    /// a wobbling heap causes no push storm. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub step: Option<u32>,
}

impl TuningSettings {
    /// Reads and checks the settings from a policy's `config`; errors name the field.
    pub fn from_config(config: &Value) -> Result<Self, String> {
        let settings: TuningSettings = serde_path_to_error::deserialize(config.clone())
            .map_err(|e| format!("spec.{}: {}", e.path(), e.inner()))?;
        settings.check()?;
        Ok(settings)
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(ratio) = self.memory_limit_ratio {
            ratio_in_range("spec.memoryLimitRatio", ratio)?;
        }
        let Some(gogc) = &self.gogc else {
            return Ok(());
        };
        match (gogc.fixed, &gogc.adaptive) {
            (Some(_), Some(_)) | (None, None) => {
                Err("spec.gogc: set exactly one of fixed or adaptive".into())
            }
            (Some(fixed), None) => gogc_in_range("spec.gogc.fixed", fixed),
            (None, Some(adaptive)) => {
                gogc_in_range("spec.gogc.adaptive.min", adaptive.min)?;
                gogc_in_range("spec.gogc.adaptive.max", adaptive.max)?;
                if adaptive.min > adaptive.max {
                    return Err(format!(
                        "spec.gogc.adaptive: min ({}) is above max ({})",
                        adaptive.min, adaptive.max
                    ));
                }
                if let Some(ratio) = adaptive.target_ratio {
                    ratio_in_range("spec.gogc.adaptive.targetRatio", ratio)?;
                }
                match adaptive.step {
                    Some(step) if !(1..=1000).contains(&step) => {
                        Err(format!("spec.gogc.adaptive.step: {step} is outside 1–1000"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

fn ratio_in_range(field: &str, ratio: f64) -> Result<(), String> {
    if (0.1..=1.0).contains(&ratio) {
        Ok(())
    } else {
        Err(format!("{field}: {ratio} is outside 0.1–1.0"))
    }
}

fn gogc_in_range(field: &str, value: u32) -> Result<(), String> {
    if (MIN_GOGC..=MAX_GOGC).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field}: {value} is outside {MIN_GOGC}–{MAX_GOGC} (GOGC is never turned off)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_settings_are_read() {
        let settings = TuningSettings::from_config(&json!({
            "memoryLimitRatio": 0.85,
            "gogc": {"adaptive": {"min": 50, "max": 400, "targetRatio": 0.7, "step": 20}}
        }))
        .unwrap();
        assert_eq!(settings.memory_limit_ratio, Some(0.85));
        assert_eq!(settings.gogc.unwrap().adaptive.unwrap().step, Some(20));
        assert_eq!(
            TuningSettings::from_config(&json!({})).unwrap(),
            TuningSettings::default()
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                json!({"memoryLimitRatio": 1.5}),
                "spec.memoryLimitRatio: 1.5 is outside",
            ),
            (json!({"gogc": {}}), "exactly one of fixed or adaptive"),
            (
                json!({"gogc": {"fixed": 100, "adaptive": {"min": 50, "max": 60}}}),
                "exactly one",
            ),
            (
                json!({"gogc": {"fixed": 0}}),
                "spec.gogc.fixed: 0 is outside 10–10000 (GOGC is never turned off)",
            ),
            (
                json!({"gogc": {"adaptive": {"min": 5, "max": 60}}}),
                "spec.gogc.adaptive.min: 5",
            ),
            (
                json!({"gogc": {"adaptive": {"min": 90, "max": 60}}}),
                "min (90) is above max (60)",
            ),
            (
                json!({"gogc": {"adaptive": {"min": 50, "max": 60, "step": 0}}}),
                "step: 0",
            ),
            (json!({"gogc": {"fixed": -1}}), "spec.gogc.fixed"),
            (json!({"gogc": {"fixd": 100}}), "unknown field `fixd`"),
        ];
        for (config, expected) in cases {
            let err = TuningSettings::from_config(&config).unwrap_err();
            assert!(err.contains(expected), "{config}: {err}");
        }
    }
}
