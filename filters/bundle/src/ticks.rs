//! One root tick for several stages. Each stage asks for its own period (as it would
//! from Envoy as a filter of its own); the host ticks at the shortest period asked
//! for, and a stage's `on_tick` runs once its own period has passed.

/// Nanoseconds; 0 means "no tick".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Schedule {
    period: u64,
    due: u64,
}

#[derive(Debug, Default)]
pub struct Ticks {
    stages: Vec<Schedule>,
    host_period: u64,
}

impl Ticks {
    pub fn new(stages: usize) -> Self {
        Self {
            stages: vec![Schedule::default(); stages],
            host_period: 0,
        }
    }

    /// `stage` asked for `period`; returns the host's new period when it changes.
    pub fn set(&mut self, stage: usize, period: u64, now: u64) -> Option<u64> {
        if let Some(schedule) = self.stages.get_mut(stage) {
            *schedule = Schedule {
                period,
                due: now.saturating_add(period),
            };
        }
        let shortest = self
            .stages
            .iter()
            .map(|s| s.period)
            .filter(|p| *p > 0)
            .min()
            .unwrap_or(0);
        (shortest != self.host_period).then(|| {
            self.host_period = shortest;
            shortest
        })
    }

    /// The stages whose tick is due at `now` (within a quarter of the host period:
    /// host ticks are not exactly on time), each rescheduled one period on.
    pub fn due(&mut self, now: u64) -> Vec<usize> {
        let slack = self.host_period / 4;
        let mut due = Vec::new();
        for (stage, schedule) in self.stages.iter_mut().enumerate() {
            if schedule.period > 0 && now.saturating_add(slack) >= schedule.due {
                schedule.due = now.saturating_add(schedule.period);
                due.push(stage);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_host_ticks_at_the_shortest_period_and_each_stage_at_its_own() {
        let mut ticks = Ticks::new(3);
        assert_eq!(ticks.set(0, 1000 * MS, 0), Some(1000 * MS));
        assert_eq!(ticks.set(2, 100 * MS, 0), Some(100 * MS));
        // Unchanged shortest period: nothing to tell the host.
        assert_eq!(ticks.set(1, 0, 0), None);
        let mut runs = [0; 3];
        for tick in 1..=20 {
            for stage in ticks.due(tick * 100 * MS) {
                runs[stage] += 1;
            }
        }
        assert_eq!(runs, [2, 0, 20]);
    }

    #[test]
    fn a_stage_stopping_its_tick_gives_the_host_the_next_shortest_or_none() {
        let mut ticks = Ticks::new(2);
        ticks.set(0, 1000 * MS, 0);
        ticks.set(1, 20 * MS, 0);
        assert_eq!(ticks.set(1, 0, 5 * MS), Some(1000 * MS));
        assert!(ticks.due(500 * MS).is_empty());
        assert_eq!(ticks.due(1000 * MS), [0]);
        assert_eq!(ticks.set(0, 0, 0), Some(0));
        assert!(ticks.due(u64::MAX).is_empty());
    }

    #[test]
    fn a_tick_a_little_early_still_counts() {
        let mut ticks = Ticks::new(1);
        ticks.set(0, 100 * MS, 0);
        assert_eq!(ticks.due(100 * MS - 3), [0]);
        assert!(ticks.due(150 * MS).is_empty());
        assert_eq!(ticks.due(199 * MS), [0]);
    }

    #[test]
    fn an_unknown_stage_is_ignored() {
        let mut ticks = Ticks::new(1);
        assert_eq!(ticks.set(5, 10, 0), None);
        assert!(ticks.due(100).is_empty());
    }
}
