//! The order in which the bundle's stages see a stream, and where a paused stream
//! resumes. Requests go through the stages first to last, responses last to first —
//! Envoy's order for the same filters configured one after the other. A stage that
//! pauses holds the stream; when it resumes it, the stages after it run before the
//! host lets the stream go on. A new callback for the same half (the next body chunk)
//! starts again at the first stage, as each chunk does in a chain of filters.

/// Which half of the stream a callback belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Request,
    Response,
}

/// A host callback with its arguments, replayed to the stages after a resumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    RequestHeaders { headers: usize, end_of_stream: bool },
    RequestBody { size: usize, end_of_stream: bool },
    RequestTrailers { trailers: usize },
    ResponseHeaders { headers: usize, end_of_stream: bool },
    ResponseBody { size: usize, end_of_stream: bool },
    ResponseTrailers { trailers: usize },
}

impl Phase {
    pub fn half(self) -> Half {
        match self {
            Phase::RequestHeaders { .. }
            | Phase::RequestBody { .. }
            | Phase::RequestTrailers { .. } => Half::Request,
            _ => Half::Response,
        }
    }
}

/// What a stage (or the whole chain) tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Pause,
}

/// The stages of one request, by index in request order.
pub trait Stages {
    fn count(&self) -> usize;
    fn run(&mut self, stage: usize, phase: Phase) -> Step;
}

/// Where a half is held: the callback and the position (in that half's order) of the
/// stage that paused it.
#[derive(Debug, Clone, Copy)]
struct Held {
    phase: Phase,
    position: usize,
}

#[derive(Debug, Default)]
pub struct Chain {
    request: Option<Held>,
    response: Option<Held>,
}

/// The stage at `position` in `half`'s order.
fn stage_at(half: Half, count: usize, position: usize) -> usize {
    match half {
        Half::Request => position,
        Half::Response => count.saturating_sub(position + 1),
    }
}

impl Chain {
    /// A callback from the host: every stage in order until one pauses.
    pub fn enter(&mut self, stages: &mut impl Stages, phase: Phase) -> Step {
        self.run_from(stages, phase, 0)
    }

    /// `stage` let `half` go on. `Some(Continue)`: the rest of the stages ran and the
    /// host must resume the stream; `Some(Pause)`: a later stage holds it now; `None`:
    /// that stage was not holding this half (nothing to do).
    pub fn resume(&mut self, stages: &mut impl Stages, half: Half, stage: usize) -> Option<Step> {
        let held = *self.held(half);
        let held = held.filter(|h| stage_at(half, stages.count(), h.position) == stage)?;
        Some(self.run_from(stages, held.phase, held.position + 1))
    }

    fn held(&mut self, half: Half) -> &mut Option<Held> {
        match half {
            Half::Request => &mut self.request,
            Half::Response => &mut self.response,
        }
    }

    fn run_from(&mut self, stages: &mut impl Stages, phase: Phase, first: usize) -> Step {
        let half = phase.half();
        *self.held(half) = None;
        let count = stages.count();
        for position in first..count {
            if stages.run(stage_at(half, count, position), phase) == Step::Pause {
                *self.held(half) = Some(Held { phase, position });
                return Step::Pause;
            }
        }
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Stages that record each call and pause where told.
    struct Recorder {
        count: usize,
        pause: Vec<(usize, Half)>,
        calls: Vec<(usize, Phase)>,
    }

    impl Stages for Recorder {
        fn count(&self) -> usize {
            self.count
        }
        fn run(&mut self, stage: usize, phase: Phase) -> Step {
            self.calls.push((stage, phase));
            if let Some(at) = self.pause.iter().position(|p| *p == (stage, phase.half())) {
                self.pause.remove(at);
                Step::Pause
            } else {
                Step::Continue
            }
        }
    }

    fn recorder(count: usize, pause: &[(usize, Half)]) -> Recorder {
        Recorder {
            count,
            pause: pause.to_vec(),
            calls: Vec::new(),
        }
    }

    const HEADERS: Phase = Phase::RequestHeaders {
        headers: 5,
        end_of_stream: true,
    };
    const RESPONSE: Phase = Phase::ResponseHeaders {
        headers: 3,
        end_of_stream: false,
    };

    fn stages(calls: &[(usize, Phase)]) -> Vec<usize> {
        calls.iter().map(|(stage, _)| *stage).collect()
    }

    #[test]
    fn requests_run_first_to_last_and_responses_last_to_first() {
        let mut chain = Chain::default();
        let mut stages_ = recorder(4, &[]);
        assert_eq!(chain.enter(&mut stages_, HEADERS), Step::Continue);
        assert_eq!(chain.enter(&mut stages_, RESPONSE), Step::Continue);
        assert_eq!(stages(&stages_.calls), [0, 1, 2, 3, 3, 2, 1, 0]);
        assert!(stages_.calls[..4].iter().all(|(_, p)| *p == HEADERS));
    }

    #[test]
    fn a_paused_request_resumes_at_the_next_stage_with_the_same_arguments() {
        let mut chain = Chain::default();
        let mut stages_ = recorder(4, &[(1, Half::Request)]);
        assert_eq!(chain.enter(&mut stages_, HEADERS), Step::Pause);
        assert_eq!(stages(&stages_.calls), [0, 1]);
        // A resumption by a stage that is not holding the request changes nothing.
        assert_eq!(chain.resume(&mut stages_, Half::Request, 2), None);
        assert_eq!(chain.resume(&mut stages_, Half::Response, 1), None);
        assert_eq!(
            chain.resume(&mut stages_, Half::Request, 1),
            Some(Step::Continue)
        );
        assert_eq!(stages(&stages_.calls), [0, 1, 2, 3]);
        assert!(stages_.calls.iter().all(|(_, p)| *p == HEADERS));
        // Resumed once: a second resumption is ignored.
        assert_eq!(chain.resume(&mut stages_, Half::Request, 1), None);
    }

    #[test]
    fn a_later_stage_can_hold_the_request_again_after_a_resumption() {
        let mut chain = Chain::default();
        let mut stages_ = recorder(4, &[(1, Half::Request), (3, Half::Request)]);
        assert_eq!(chain.enter(&mut stages_, HEADERS), Step::Pause);
        assert_eq!(
            chain.resume(&mut stages_, Half::Request, 1),
            Some(Step::Pause)
        );
        assert_eq!(
            chain.resume(&mut stages_, Half::Request, 3),
            Some(Step::Continue)
        );
        assert_eq!(stages(&stages_.calls), [0, 1, 2, 3]);
    }

    #[test]
    fn a_held_response_resumes_towards_the_first_stage() {
        let mut chain = Chain::default();
        let mut stages_ = recorder(4, &[(3, Half::Response)]);
        assert_eq!(chain.enter(&mut stages_, RESPONSE), Step::Pause);
        assert_eq!(stages(&stages_.calls), [3]);
        assert_eq!(
            chain.resume(&mut stages_, Half::Response, 3),
            Some(Step::Continue)
        );
        assert_eq!(stages(&stages_.calls), [3, 2, 1, 0]);
    }

    #[test]
    fn a_new_callback_of_a_held_half_starts_again_at_the_first_stage() {
        let body = |size, end_of_stream| Phase::RequestBody {
            size,
            end_of_stream,
        };
        let mut chain = Chain::default();
        let mut stages_ = recorder(3, &[(2, Half::Request)]);
        assert_eq!(chain.enter(&mut stages_, body(10, false)), Step::Pause);
        assert_eq!(chain.enter(&mut stages_, body(20, true)), Step::Continue);
        assert_eq!(stages(&stages_.calls), [0, 1, 2, 0, 1, 2]);
        assert_eq!(stages_.calls[5].1, body(20, true));
        // The earlier hold is gone with the new callback.
        assert_eq!(chain.resume(&mut stages_, Half::Request, 2), None);
    }

    #[test]
    fn the_halves_are_held_independently() {
        let mut chain = Chain::default();
        let mut stages_ = recorder(2, &[(0, Half::Request), (1, Half::Response)]);
        assert_eq!(chain.enter(&mut stages_, HEADERS), Step::Pause);
        assert_eq!(chain.enter(&mut stages_, RESPONSE), Step::Pause);
        assert_eq!(
            chain.resume(&mut stages_, Half::Response, 1),
            Some(Step::Continue)
        );
        assert_eq!(
            chain.resume(&mut stages_, Half::Request, 0),
            Some(Step::Continue)
        );
        assert_eq!(stages(&stages_.calls), [0, 1, 0, 1]);
    }
}
