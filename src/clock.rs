//! Time for the control blocks ([`ratelimit`](crate::ratelimit) and
//! [`breaker`](crate::breaker)), behind a trait so tests can drive it.
//!
//! A limiter or a breaker decides from "now": a test that reads the real
//! clock can only check that a decision is roughly right, and flakes on a busy
//! machine. Every decision here takes its time from a [`Clock`]; programs use
//! [`MonotonicClock`], tests use [`ManualClock`] and move time by hand, so
//! they can assert exact counts and exact `Retry-After` values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of monotonic time, as a [`Duration`] since the clock's own
/// origin. Reading it must be cheap (a limiter reads it on every request) and
/// must never block.
pub trait Clock: Send + Sync + 'static {
    /// Time since this clock's origin. Never goes backwards.
    fn now(&self) -> Duration;
}

/// The real clock: [`Instant`] since the moment it was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to. Clones share one time, so a test
/// keeps a clone and advances the clock a limiter or breaker reads.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads zero until advanced.
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Move time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(as_nanos(by), Ordering::SeqCst);
    }

    /// Set the time to `to`; panics if that would move it backwards, since no
    /// [`Clock`] may.
    pub fn set(&self, to: Duration) {
        let to = as_nanos(to);
        let before = self.nanos.swap(to, Ordering::SeqCst);
        assert!(before <= to, "a ManualClock never goes backwards");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl<C: Clock> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// 2^64 ns is 584 years: saturate rather than wrap on absurd inputs.
fn as_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::new();
        let seen_by_limiter = clock.clone();
        assert_eq!(seen_by_limiter.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(250));
        assert_eq!(seen_by_limiter.now(), Duration::from_millis(250));
        clock.set(Duration::from_secs(2));
        assert_eq!(seen_by_limiter.now(), Duration::from_secs(2));
    }

    #[test]
    #[should_panic(expected = "never goes backwards")]
    fn a_manual_clock_refuses_to_go_backwards() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(1));
        clock.set(Duration::from_millis(1));
    }

    #[test]
    fn the_monotonic_clock_starts_near_zero_and_does_not_go_back() {
        let clock = MonotonicClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(a < Duration::from_secs(1) && b >= a);
    }
}
