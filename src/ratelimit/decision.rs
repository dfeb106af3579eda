//! What a limiter answers.

use std::time::Duration;

// ANCHOR: decision
/// One decision for one request of some cost.
///
/// The fields map onto HTTP: `Retry-After` is `retry_after`, and the IETF
/// httpapi draft's `RateLimit-Remaining` and `RateLimit-Reset` are
/// `remaining` and `reset`. On may 0.3.51 a coroutine that waits a `wait`
/// or a `retry_after` under 1 ms must round it up to 1 ms: may keeps
/// timeouts in whole milliseconds (see [`crate::timeout`]) and very short
/// sleeps are unsafe. Fine for a limiter, whose whole job is to be late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go now. `remaining`: what could still be admitted right now; `reset`:
    /// time until the full quota is available again.
    Allowed { remaining: u64, reset: Duration },
    /// Leaky bucket as a queue: admitted, but go only after `wait`
    /// (smoothing, not rejecting).
    Queued {
        wait: Duration,
        remaining: u64,
        reset: Duration,
    },
    /// Not now: the same request would be admitted after `retry_after` if
    /// nothing else arrives (`Duration::MAX` when its cost is more than the
    /// quota holds: it never will be).
    Denied {
        retry_after: Duration,
        reset: Duration,
    },
}
// ANCHOR_END: decision

impl Decision {
    /// Allowed or Queued: the units were consumed.
    pub fn is_admitted(&self) -> bool {
        !matches!(self, Decision::Denied { .. })
    }

    /// How long the caller waits before it may go: zero when allowed, the
    /// queue wait when queued, `None` when denied.
    pub fn wait(&self) -> Option<Duration> {
        match *self {
            Decision::Allowed { .. } => Some(Duration::ZERO),
            Decision::Queued { wait, .. } => Some(wait),
            Decision::Denied { .. } => None,
        }
    }
}
