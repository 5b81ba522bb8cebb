//! The numbers: GOMEMLIMIT and GOGC for one instance from its policy settings, its
//! memory limit `L` and its live heap `H`, with the guard rails and the hysteresis of
//! docs/adr/0007. Pure functions, no state: the caller passes what was last delivered.

use crate::tuning::spec::{
    AdaptiveGogc, TuningSettings, DEFAULT_MEMORY_LIMIT_RATIO, DEFAULT_STEP, DEFAULT_TARGET_RATIO,
};

/// Go's own default GOGC, used (within the bounds) when there is nothing to compute from.
pub const GO_DEFAULT_GOGC: i64 = 100;

/// What was last delivered to the instance under the same policy (hysteresis input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Last {
    pub gc_percent: Option<i32>,
    pub heap_near_limit: bool,
}

/// The computed settings. `None` = not set by the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub memory_limit_bytes: Option<i64>,
    pub gc_percent: Option<i32>,
    pub heap_near_limit: bool,
    /// How the values were computed, for humans.
    pub reason: String,
}

/// Computes the settings. `limit`: the container memory limit (`None` or 0: none);
/// `heap`: the live heap last reported (`None` or 0: no report yet); `last`: what the
/// instance was last given under this policy (`None`: nothing yet, or another policy).
pub fn compute(
    settings: &TuningSettings,
    limit: Option<u64>,
    heap: Option<u64>,
    last: Option<Last>,
) -> Outcome {
    let limit = limit.filter(|l| *l > 0);
    let heap = heap.filter(|h| *h > 0);
    let ratio = settings
        .memory_limit_ratio
        .unwrap_or(DEFAULT_MEMORY_LIMIT_RATIO);
    let (memory_limit_bytes, memory_reason) = match limit {
        // A limit so small that ⌊r × L⌋ is 0 is no limit: GOMEMLIMIT=0 would collect
        // without pause.
        Some(l) if times(ratio, l) > 0 => {
            let bytes = to_i64(times(ratio, l));
            (
                Some(bytes),
                format!("GOMEMLIMIT = {ratio} × L {l} = {bytes}"),
            )
        }
        _ => (None, "no memory limit: GOMEMLIMIT not set".to_owned()),
    };
    let gogc = match &settings.gogc {
        None => Gogc {
            value: None,
            heap_near_limit: false,
            reason: "GOGC not set by the policy".into(),
        },
        Some(spec) => match (spec.fixed, &spec.adaptive) {
            (Some(fixed), _) => Gogc {
                value: Some(to_i32(i64::from(fixed))),
                heap_near_limit: false,
                reason: format!("GOGC fixed: {fixed}"),
            },
            (None, Some(adaptive)) => adaptive_gogc(adaptive, limit, heap, last),
            // Refused by validation; never produce a value from a malformed spec.
            (None, None) => Gogc {
                value: None,
                heap_near_limit: false,
                reason: "GOGC not set: the policy has neither fixed nor adaptive".into(),
            },
        },
    };
    Outcome {
        memory_limit_bytes,
        gc_percent: gogc.value,
        heap_near_limit: gogc.heap_near_limit,
        reason: format!("{memory_reason}; {}", gogc.reason),
    }
}

struct Gogc {
    value: Option<i32>,
    heap_near_limit: bool,
    reason: String,
}

/// `GOGC = clamp(⌊(T − H)/H · 100⌋, min, max)`, `T = t × L`, with the guard rail (held at
/// `min` and flagged when the raw value is below it) and the hysteresis (a move smaller
/// than `step` keeps the last value unless the new one is a bound).
fn adaptive_gogc(
    adaptive: &AdaptiveGogc,
    limit: Option<u64>,
    heap: Option<u64>,
    last: Option<Last>,
) -> Gogc {
    let min = i64::from(adaptive.min);
    // Validation guarantees min ≤ max; a bad spec must still never yield GOGC < min.
    let max = i64::from(adaptive.max).max(min);
    let bounds = format!("min {min}, max {max}");
    let (Some(l), Some(h)) = (limit, heap) else {
        let value = GO_DEFAULT_GOGC.clamp(min, max);
        let why = if limit.is_none() {
            "no memory limit"
        } else {
            "no heap report yet"
        };
        return Gogc {
            value: Some(to_i32(value)),
            heap_near_limit: false,
            reason: format!("GOGC adaptive: {why} → {value} (Go's default within {bounds})"),
        };
    };
    let target_ratio = adaptive.target_ratio.unwrap_or(DEFAULT_TARGET_RATIO);
    let step = i64::from(adaptive.step.unwrap_or(DEFAULT_STEP)).max(1);
    let target = times(target_ratio, l);
    let raw = raw_gogc(target, h);
    let clamped = raw.clamp(i128::from(min), i128::from(max));
    let clamped = i64::try_from(clamped).unwrap_or(min);
    let last_value = last.and_then(|l| l.gc_percent).map(i64::from);
    let last_flagged = last.is_some_and(|l| l.heap_near_limit);
    // A flag raised at `min` stays while GOGC is held there (raw within `step` above
    // min): a heap wobbling at the threshold must not toggle it on every report.
    let heap_near_limit = raw < i128::from(min)
        || (last_flagged && last_value == Some(min) && raw < i128::from(min + step));
    let computed = format!("GOGC adaptive: T={target} H={h} → {raw}");
    if heap_near_limit {
        return Gogc {
            value: Some(to_i32(min)),
            heap_near_limit,
            reason: format!("{computed}, held at min {min} (heap near the target; {bounds})"),
        };
    }
    let is_bound = clamped == min || clamped == max;
    let value = match last_value {
        Some(previous)
            if !is_bound
                && (min..=max).contains(&previous)
                && (clamped - previous).abs() < step =>
        {
            return Gogc {
                value: Some(to_i32(previous)),
                heap_near_limit,
                reason: format!(
                    "{computed}, kept at {previous} (moved less than step {step}; {bounds})"
                ),
            };
        }
        _ => clamped,
    };
    let shown = if i128::from(value) == raw {
        format!("{computed} ({bounds})")
    } else {
        format!("{computed}, clamped to {value} ({bounds})")
    };
    Gogc {
        value: Some(to_i32(value)),
        heap_near_limit,
        reason: shown,
    }
}

/// `⌊(T − H)/H · 100⌋`, exact (integers), negative when the heap is over the target.
fn raw_gogc(target: u64, heap: u64) -> i128 {
    let heap = i128::from(heap.max(1));
    ((i128::from(target) - heap) * 100).div_euclid(heap)
}

/// `⌊ratio × bytes⌋`.
fn times(ratio: f64, bytes: u64) -> u64 {
    // `as` saturates; the ratio is within 0.1–1.0, so the product fits.
    (ratio * bytes as f64).floor() as u64
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::spec::GogcSpec;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    fn adaptive(min: u32, max: u32) -> TuningSettings {
        TuningSettings {
            memory_limit_ratio: None,
            gogc: Some(GogcSpec {
                fixed: None,
                adaptive: Some(AdaptiveGogc {
                    min,
                    max,
                    target_ratio: None,
                    step: None,
                }),
            }),
        }
    }

    fn fixed(n: u32) -> TuningSettings {
        TuningSettings {
            memory_limit_ratio: Some(0.5),
            gogc: Some(GogcSpec {
                fixed: Some(n),
                adaptive: None,
            }),
        }
    }

    fn last(gc: i32) -> Option<Last> {
        Some(Last {
            gc_percent: Some(gc),
            heap_near_limit: false,
        })
    }

    #[test]
    fn the_adr_worked_example() {
        // L = 512 MiB, r = 0.9, t = 0.8 → T = ⌊429496729.6⌋; H = 0.32 L.
        let out = compute(&adaptive(50, 400), Some(512 * MIB), Some(171_798_691), None);
        assert_eq!(out.memory_limit_bytes, Some(483_183_820)); // ⌊0.9 × 536870912⌋
        assert_eq!(out.gc_percent, Some(150)); // ⌊(429496729 − 171798691)/171798691 · 100⌋
        assert!(!out.heap_near_limit);
        assert!(
            out.reason
                .contains("GOGC adaptive: T=429496729 H=171798691 → 150 (min 50, max 400)"),
            "{}",
            out.reason
        );
        assert!(
            out.reason
                .contains("GOMEMLIMIT = 0.9 × L 536870912 = 483183820"),
            "{}",
            out.reason
        );
    }

    #[test]
    fn more_worked_examples() {
        // H = L/4: ⌊(429496729 − 134217728)/134217728 · 100⌋ = ⌊219.99…⌋ = 219.
        let out = compute(&adaptive(50, 400), Some(512 * MIB), Some(128 * MIB), None);
        assert_eq!(out.gc_percent, Some(219));
        // H = T/2: exactly 100.
        let out = compute(&adaptive(50, 400), Some(1000), Some(400), None);
        assert_eq!(out.gc_percent, Some(100));
        // Custom ratios: r = 0.5 → 500; t = 0.6 → T = 600, H = 200 → 200.
        let mut settings = adaptive(10, 1000);
        settings.memory_limit_ratio = Some(0.5);
        if let Some(a) = settings.gogc.as_mut().and_then(|g| g.adaptive.as_mut()) {
            a.target_ratio = Some(0.6);
        }
        let out = compute(&settings, Some(1000), Some(200), None);
        assert_eq!(out.memory_limit_bytes, Some(500));
        assert_eq!(out.gc_percent, Some(200));
        // r = 1.0 → GOMEMLIMIT = L.
        let mut settings = adaptive(10, 1000);
        settings.memory_limit_ratio = Some(1.0);
        let out = compute(&settings, Some(GIB), Some(GIB / 4), None);
        assert_eq!(out.memory_limit_bytes, Some(1_073_741_824));
    }

    #[test]
    fn values_are_clamped_to_min_and_max() {
        // L = 1 GiB, T = ⌊858993459.2⌋, H = 100 MiB → 719 → max 400.
        let out = compute(&adaptive(50, 400), Some(GIB), Some(100 * MIB), None);
        assert_eq!(out.gc_percent, Some(400));
        assert!(
            out.reason.contains("→ 719, clamped to 400"),
            "{}",
            out.reason
        );
        assert!(!out.heap_near_limit);
        // A tiny heap: a huge raw value, still max.
        let out = compute(&adaptive(50, 400), Some(GIB), Some(1), None);
        assert_eq!(out.gc_percent, Some(400));
        // Exactly at min is not "near the limit": raw 50 with min 50.
        let out = compute(&adaptive(50, 400), Some(1000), Some(533), None);
        assert_eq!(out.gc_percent, Some(50)); // ⌊(800 − 533)/533 · 100⌋ = 50
        assert!(!out.heap_near_limit);
    }

    #[test]
    fn heap_at_or_over_the_target_holds_min_and_flags() {
        for heap in [800, 801, 1000, 5000, 100 * GIB] {
            // T = 800: raw 0, negative, far negative.
            let out = compute(&adaptive(50, 400), Some(1000), Some(heap), None);
            assert_eq!(out.gc_percent, Some(50), "H={heap}");
            assert!(out.heap_near_limit, "H={heap}");
            assert!(out.reason.contains("held at min 50"), "{}", out.reason);
        }
        // Raw 49 < min 50: flagged too (H = 537: ⌊263/537 · 100⌋ = 48).
        let out = compute(&adaptive(50, 400), Some(1000), Some(537), None);
        assert_eq!(out.gc_percent, Some(50));
        assert!(out.heap_near_limit);
    }

    #[test]
    fn never_below_min_never_off() {
        for min in [10, 25, 50, 100] {
            for limit in [1, 7, 1000, 512 * MIB, GIB, 64 * GIB, u64::MAX] {
                for heap in [1, 2, 999, 10 * MIB, 700 * MIB, GIB, 10 * GIB, u64::MAX] {
                    let out = compute(&adaptive(min, 400), Some(limit), Some(heap), None);
                    let gc = out.gc_percent.unwrap_or(-1);
                    assert!(
                        gc >= i32::try_from(min).unwrap() && gc <= 400,
                        "min {min} L={limit} H={heap}: {gc}"
                    );
                }
            }
        }
    }

    #[test]
    fn without_a_limit_there_is_no_gomemlimit_and_gogc_is_go_default_bounded() {
        let out = compute(&adaptive(50, 400), None, Some(100 * MIB), None);
        assert_eq!(out.memory_limit_bytes, None);
        assert_eq!(out.gc_percent, Some(100));
        assert!(out.reason.contains("no memory limit"), "{}", out.reason);
        // 0 = none, as the agents report it.
        assert_eq!(
            compute(&adaptive(50, 400), Some(0), Some(1), None),
            compute(&adaptive(50, 400), None, Some(1), None)
        );
        // clamp(100, min, max).
        let out = compute(&adaptive(150, 400), None, None, None);
        assert_eq!(out.gc_percent, Some(150));
        let out = compute(&adaptive(10, 80), None, None, None);
        assert_eq!(out.gc_percent, Some(80));
    }

    #[test]
    fn without_a_heap_report_gogc_is_go_default_bounded() {
        for heap in [None, Some(0)] {
            let out = compute(&adaptive(50, 400), Some(GIB), heap, None);
            assert_eq!(out.memory_limit_bytes, Some(966_367_641)); // ⌊0.9 × 2³⁰⌋
            assert_eq!(out.gc_percent, Some(100));
            assert!(!out.heap_near_limit);
            assert!(out.reason.contains("no heap report yet"), "{}", out.reason);
        }
        // Not subject to hysteresis: the default is delivered as is.
        let out = compute(&adaptive(50, 400), Some(GIB), None, last(105));
        assert_eq!(out.gc_percent, Some(100));
    }

    #[test]
    fn fixed_gogc_ignores_the_heap() {
        for heap in [None, Some(1), Some(GIB), Some(100 * GIB)] {
            let out = compute(&fixed(75), Some(GIB), heap, last(300));
            assert_eq!(out.gc_percent, Some(75));
            assert_eq!(out.memory_limit_bytes, Some(536_870_912));
            assert!(!out.heap_near_limit);
            assert!(out.reason.contains("GOGC fixed: 75"), "{}", out.reason);
        }
    }

    #[test]
    fn no_gogc_sets_only_the_memory_limit() {
        let settings = TuningSettings {
            memory_limit_ratio: Some(0.8),
            gogc: None,
        };
        let out = compute(&settings, Some(1000), Some(900), None);
        assert_eq!(out.memory_limit_bytes, Some(800));
        assert_eq!(out.gc_percent, None);
        assert!(!out.heap_near_limit);
        let out = compute(&TuningSettings::default(), None, Some(900), None);
        assert_eq!((out.memory_limit_bytes, out.gc_percent), (None, None));
    }

    /// Deterministic ±3 % wobble: no new value over 100 reports.
    #[test]
    fn a_wobbling_heap_changes_nothing() {
        let settings = adaptive(50, 400);
        // T = ⌊0.8 × 2³⁰⌋ = 858993459; H0 = T/2.5 → GOGC 150.
        let h0 = 343_597_383u64;
        let first = compute(&settings, Some(GIB), Some(h0), None);
        assert_eq!(first.gc_percent, Some(150));
        let mut delivered = first.gc_percent;
        let mut seed = 12345u64;
        for i in 0..100 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // −3 % … +3 %, including both extremes once.
            let permille = match i {
                0 => -30,
                1 => 30,
                _ => i64::try_from(seed >> 58).unwrap() - 30, // 0…63 → −30…33, capped
            }
            .min(30);
            let heap =
                u64::try_from(i64::try_from(h0).unwrap() * (1000 + permille) / 1000).unwrap();
            let out = compute(
                &settings,
                Some(GIB),
                Some(heap),
                Some(Last {
                    gc_percent: delivered,
                    heap_near_limit: false,
                }),
            );
            assert_eq!(
                out.gc_percent,
                Some(150),
                "report {i}: H={heap} {}",
                out.reason
            );
            assert!(!out.heap_near_limit);
            delivered = out.gc_percent;
        }
    }

    #[test]
    fn a_real_move_is_delivered() {
        let settings = adaptive(50, 400);
        let h0 = 343_597_383u64; // 150
                                 // −30 %: ⌊(858993459 − 240518168)/240518168 · 100⌋ = 257.
        let out = compute(&settings, Some(GIB), Some(h0 * 7 / 10), last(150));
        assert_eq!(out.gc_percent, Some(257));
        // A new limit moves GOMEMLIMIT and GOGC together.
        let out = compute(&settings, Some(2 * GIB), Some(h0), last(150));
        assert_eq!(out.memory_limit_bytes, Some(1_932_735_283)); // ⌊0.9 × 2³¹⌋
        assert_eq!(out.gc_percent, Some(400)); // ⌊(1717986918 − h0)/h0 · 100⌋ = 400
    }

    #[test]
    fn hysteresis_threshold_is_step() {
        let settings = adaptive(50, 400);
        // T = 800. H = 320 → 150; H = 307 → ⌊493/307·100⌋ = 160; H = 308 → 159.
        assert_eq!(
            compute(&settings, Some(1000), Some(308), last(150)).gc_percent,
            Some(150)
        );
        assert_eq!(
            compute(&settings, Some(1000), Some(307), last(150)).gc_percent,
            Some(160)
        );
        let kept = compute(&settings, Some(1000), Some(308), last(150));
        assert!(
            kept.reason.contains("kept at 150 (moved less than step 10"),
            "{}",
            kept.reason
        );
        // A last value outside the (new) bounds is never kept.
        assert_eq!(
            compute(&settings, Some(1000), Some(308), last(45)).gc_percent,
            Some(159)
        );
    }

    #[test]
    fn reaching_a_bound_is_always_delivered() {
        let settings = adaptive(50, 400);
        // To max from 395 (5 points): delivered.
        let out = compute(&settings, Some(GIB), Some(100 * MIB), last(395));
        assert_eq!(out.gc_percent, Some(400));
        // To min from 55 (raw exactly 50): delivered, not flagged.
        let out = compute(&settings, Some(1000), Some(533), last(55));
        assert_eq!(out.gc_percent, Some(50));
        assert!(!out.heap_near_limit);
        // Below min from 55: min, flagged.
        let out = compute(&settings, Some(1000), Some(600), last(55));
        assert_eq!(out.gc_percent, Some(50));
        assert!(out.heap_near_limit);
        // Near but above min from 55 (raw 52): kept at 55, not a bound.
        let out = compute(&settings, Some(1000), Some(526), last(55)); // ⌊274/526·100⌋ = 52
        assert_eq!(out.gc_percent, Some(55));
    }

    #[test]
    fn the_flag_does_not_toggle_at_the_threshold() {
        let settings = adaptive(50, 400);
        let flagged = Some(Last {
            gc_percent: Some(50),
            heap_near_limit: true,
        });
        // raw 52 (< min + step): still held and flagged.
        let out = compute(&settings, Some(1000), Some(526), flagged);
        assert_eq!(out.gc_percent, Some(50));
        assert!(out.heap_near_limit, "{}", out.reason);
        // raw 60 (= min + step): released.
        let out = compute(&settings, Some(1000), Some(500), flagged); // ⌊300/500·100⌋ = 60
        assert_eq!(out.gc_percent, Some(60));
        assert!(!out.heap_near_limit);
    }
}
