//! Choose the algorithm at run time (the gateway's `--algorithm`).

use super::{
    Algorithm, Decision, FixedWindow, Gcra, LeakyQueue, Quota, SlidingCounter, SlidingLog,
    TokenBucket,
};
use super::{
    FixedWindowState, GcraState, LeakyQueueState, SlidingCounterState, SlidingLogState,
    TokenBucketState,
};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The six algorithms, by the names the command line uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlgorithmKind {
    FixedWindow,
    SlidingLog,
    SlidingCounter,
    TokenBucket,
    Gcra,
    LeakyQueue,
}

impl AlgorithmKind {
    /// All six, in the order the chapter builds them.
    pub const ALL: [AlgorithmKind; 6] = [
        AlgorithmKind::FixedWindow,
        AlgorithmKind::SlidingLog,
        AlgorithmKind::SlidingCounter,
        AlgorithmKind::TokenBucket,
        AlgorithmKind::Gcra,
        AlgorithmKind::LeakyQueue,
    ];

    /// The command-line name: "fixed-window", ..., "leaky-bucket".
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmKind::FixedWindow => "fixed-window",
            AlgorithmKind::SlidingLog => "sliding-log",
            AlgorithmKind::SlidingCounter => "sliding-counter",
            AlgorithmKind::TokenBucket => "token-bucket",
            AlgorithmKind::Gcra => "gcra",
            AlgorithmKind::LeakyQueue => "leaky-bucket",
        }
    }
}

impl fmt::Display for AlgorithmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name that is not one of the six.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = AlgorithmKind::ALL.iter().map(|k| k.name()).collect();
        write!(
            f,
            "unknown algorithm {:?}: expected one of {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for AlgorithmKind {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlgorithmKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

/// One of the six, chosen at run time.
#[derive(Debug, Clone, Copy)]
pub enum AnyAlgorithm {
    FixedWindow(FixedWindow),
    SlidingLog(SlidingLog),
    SlidingCounter(SlidingCounter),
    TokenBucket(TokenBucket),
    Gcra(Gcra),
    LeakyQueue(LeakyQueue),
}

/// The state of whichever algorithm an [`AnyAlgorithm`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyState {
    FixedWindow(FixedWindowState),
    SlidingLog(SlidingLogState),
    SlidingCounter(SlidingCounterState),
    TokenBucket(TokenBucketState),
    Gcra(GcraState),
    LeakyQueue(LeakyQueueState),
}

impl AnyAlgorithm {
    /// The algorithm `kind` enforcing `quota`.
    pub fn new(kind: AlgorithmKind, quota: Quota) -> AnyAlgorithm {
        match kind {
            AlgorithmKind::FixedWindow => AnyAlgorithm::FixedWindow(FixedWindow::new(quota)),
            AlgorithmKind::SlidingLog => AnyAlgorithm::SlidingLog(SlidingLog::new(quota)),
            AlgorithmKind::SlidingCounter => {
                AnyAlgorithm::SlidingCounter(SlidingCounter::new(quota))
            }
            AlgorithmKind::TokenBucket => AnyAlgorithm::TokenBucket(TokenBucket::new(quota)),
            AlgorithmKind::Gcra => AnyAlgorithm::Gcra(Gcra::new(quota)),
            AlgorithmKind::LeakyQueue => AnyAlgorithm::LeakyQueue(LeakyQueue::new(quota)),
        }
    }

    /// Which of the six this is.
    pub fn kind(&self) -> AlgorithmKind {
        match self {
            AnyAlgorithm::FixedWindow(_) => AlgorithmKind::FixedWindow,
            AnyAlgorithm::SlidingLog(_) => AlgorithmKind::SlidingLog,
            AnyAlgorithm::SlidingCounter(_) => AlgorithmKind::SlidingCounter,
            AnyAlgorithm::TokenBucket(_) => AlgorithmKind::TokenBucket,
            AnyAlgorithm::Gcra(_) => AlgorithmKind::Gcra,
            AnyAlgorithm::LeakyQueue(_) => AlgorithmKind::LeakyQueue,
        }
    }
}

/// Run `$body` with `$a` bound to the inner algorithm.
macro_rules! each {
    ($self:expr, $a:ident => $body:expr) => {
        match $self {
            AnyAlgorithm::FixedWindow($a) => $body,
            AnyAlgorithm::SlidingLog($a) => $body,
            AnyAlgorithm::SlidingCounter($a) => $body,
            AnyAlgorithm::TokenBucket($a) => $body,
            AnyAlgorithm::Gcra($a) => $body,
            AnyAlgorithm::LeakyQueue($a) => $body,
        }
    };
}

impl Algorithm for AnyAlgorithm {
    type State = AnyState;

    fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn quota(&self) -> Quota {
        each!(self, a => a.quota())
    }

    fn new_state(&self, now: Duration) -> AnyState {
        match self {
            AnyAlgorithm::FixedWindow(a) => AnyState::FixedWindow(a.new_state(now)),
            AnyAlgorithm::SlidingLog(a) => AnyState::SlidingLog(a.new_state(now)),
            AnyAlgorithm::SlidingCounter(a) => AnyState::SlidingCounter(a.new_state(now)),
            AnyAlgorithm::TokenBucket(a) => AnyState::TokenBucket(a.new_state(now)),
            AnyAlgorithm::Gcra(a) => AnyState::Gcra(a.new_state(now)),
            AnyAlgorithm::LeakyQueue(a) => AnyState::LeakyQueue(a.new_state(now)),
        }
    }

    fn decide(&self, state: &mut AnyState, now: Duration, cost: u64) -> Decision {
        match (self, &mut *state) {
            (AnyAlgorithm::FixedWindow(a), AnyState::FixedWindow(s)) => a.decide(s, now, cost),
            (AnyAlgorithm::SlidingLog(a), AnyState::SlidingLog(s)) => a.decide(s, now, cost),
            (AnyAlgorithm::SlidingCounter(a), AnyState::SlidingCounter(s)) => {
                a.decide(s, now, cost)
            }
            (AnyAlgorithm::TokenBucket(a), AnyState::TokenBucket(s)) => a.decide(s, now, cost),
            (AnyAlgorithm::Gcra(a), AnyState::Gcra(s)) => a.decide(s, now, cost),
            (AnyAlgorithm::LeakyQueue(a), AnyState::LeakyQueue(s)) => a.decide(s, now, cost),
            // Another algorithm's state: start this key afresh rather than panic.
            _ => {
                *state = self.new_state(now);
                self.decide(state, now, cost)
            }
        }
    }

    fn is_idle(&self, state: &AnyState, now: Duration) -> bool {
        match (self, state) {
            (AnyAlgorithm::FixedWindow(a), AnyState::FixedWindow(s)) => a.is_idle(s, now),
            (AnyAlgorithm::SlidingLog(a), AnyState::SlidingLog(s)) => a.is_idle(s, now),
            (AnyAlgorithm::SlidingCounter(a), AnyState::SlidingCounter(s)) => a.is_idle(s, now),
            (AnyAlgorithm::TokenBucket(a), AnyState::TokenBucket(s)) => a.is_idle(s, now),
            (AnyAlgorithm::Gcra(a), AnyState::Gcra(s)) => a.is_idle(s, now),
            (AnyAlgorithm::LeakyQueue(a), AnyState::LeakyQueue(s)) => a.is_idle(s, now),
            // A mismatched state is replaced on its next decision anyway.
            _ => true,
        }
    }

    fn state_bytes(&self, state: &AnyState) -> usize {
        // The enum's own size, plus the sliding log's heap.
        std::mem::size_of::<AnyState>()
            + match (self, state) {
                (AnyAlgorithm::SlidingLog(a), AnyState::SlidingLog(s)) => {
                    a.state_bytes(s) - std::mem::size_of::<SlidingLogState>()
                }
                _ => 0,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_the_six() {
        for kind in AlgorithmKind::ALL {
            assert_eq!(kind.name().parse::<AlgorithmKind>(), Ok(kind));
            let quota = Quota::per_second(10, 5).unwrap();
            assert_eq!(AnyAlgorithm::new(kind, quota).name(), kind.name());
        }
        assert_eq!(
            "token_bucket"
                .parse::<AlgorithmKind>()
                .unwrap_err()
                .to_string(),
            "unknown algorithm \"token_bucket\": expected one of fixed-window, \
             sliding-log, sliding-counter, token-bucket, gcra, leaky-bucket"
        );
    }

    #[test]
    fn any_decides_as_the_algorithm_it_holds() {
        let quota = Quota::per_second(10, 5).unwrap();
        let any = AnyAlgorithm::new(AlgorithmKind::Gcra, quota);
        let gcra = Gcra::new(quota);
        let (mut a, mut g) = (
            any.new_state(Duration::ZERO),
            gcra.new_state(Duration::ZERO),
        );
        for ms in 0..100 {
            let now = Duration::from_millis(ms * 7);
            assert_eq!(any.decide(&mut a, now, 1), gcra.decide(&mut g, now, 1));
        }
    }

    #[test]
    fn a_state_of_another_algorithm_is_started_afresh() {
        let quota = Quota::per_second(10, 5).unwrap();
        let fixed = AnyAlgorithm::new(AlgorithmKind::FixedWindow, quota);
        let gcra = AnyAlgorithm::new(AlgorithmKind::Gcra, quota);
        let mut state = gcra.new_state(Duration::ZERO);
        assert!(fixed.is_idle(&state, Duration::ZERO));
        assert!(fixed.decide(&mut state, Duration::ZERO, 10).is_admitted());
        assert!(matches!(state, AnyState::FixedWindow(_)));
    }
}
