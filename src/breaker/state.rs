//! What a breaker tells the world: its state, each change of state with the
//! reason for it, and a snapshot of its window for a timeline.

use std::fmt;
use std::time::Duration;

// ANCHOR: state
/// The three states of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through; their outcomes fill the sliding window.
    Closed,
    /// Calls are rejected at once, until `open_for` has passed.
    Open,
    /// A few probe calls go through; their outcomes decide between closed
    /// and open.
    HalfOpen,
}
// ANCHOR_END: state

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        })
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// Closed to open: this share of the window's calls failed.
    FailureRate(f64),
    /// Closed to open: this share of the window's calls was slow.
    SlowCallRate(f64),
    /// Open to half-open: `open_for` passed and a call came.
    OpenElapsed,
    /// Half-open to closed: every probe finished, and their failure and
    /// slow-call shares were under the thresholds.
    ProbesPassed,
    /// Half-open to open: every probe finished, and their failure or
    /// slow-call share reached its threshold.
    ProbeFailed,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::FailureRate(rate) => write!(f, "failure rate {:.1}%", rate * 100.0),
            Reason::SlowCallRate(rate) => write!(f, "slow-call rate {:.1}%", rate * 100.0),
            Reason::OpenElapsed => f.write_str("open interval elapsed"),
            Reason::ProbesPassed => f.write_str("probes passed"),
            Reason::ProbeFailed => f.write_str("probes failed"),
        }
    }
}

/// One change of state, as [`Breaker::subscribe`](super::Breaker::subscribe)
/// delivers it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// When, by the breaker's clock.
    pub at: Duration,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Transition {
    /// `closed -> open (failure rate 60.0%)`; the time is left to the caller,
    /// who knows which origin it should be shown from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ({})", self.from, self.to, self.reason)
    }
}

/// A breaker's state and counts at one moment
/// ([`Breaker::snapshot`](super::Breaker::snapshot)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// When it was taken, by the breaker's clock.
    pub at: Duration,
    /// The state then.
    pub state: State,
    /// Calls recorded in the window (closed) or probes finished (half-open);
    /// 0 while open.
    pub calls: u32,
    /// How many of those failed.
    pub failures: u32,
    /// How many of those were slow.
    pub slow: u32,
    /// failures / calls (0.0 with no calls).
    pub failure_rate: f64,
    /// slow / calls (0.0 with no calls).
    pub slow_call_rate: f64,
    /// Calls rejected since the breaker was made.
    pub rejected: u64,
    /// Outcomes ignored since the breaker was made because their permit was
    /// issued before the last change of state.
    pub stale: u64,
}
