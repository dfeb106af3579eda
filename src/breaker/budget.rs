//! A retry budget: retries may add at most a fixed share to the calls a
//! dependency sees, plus a small floor so a quiet client can still retry.
//!
//! This is Finagle's `RetryBudget` (`ttl`, `minRetriesPerSec`,
//! `percentCanRetry`; by default 10 s, 10 a second and 20%: "Retry Budgets",
//! <https://finagle.github.io/blog/2016/02/08/retry-budgets>), which tower's
//! `retry::budget` copies, and the idea behind Envoy's `retry_budget`. A retry policy alone
//! multiplies the load on a failing backend by up to `1 + max_retries`; with
//! a budget of 20% it is at most 1.2 times the calls (plus the floor),
//! however many retries each call may make.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::config::ConfigError;
use super::window::TimeWindow;
use crate::clock::{Clock, MonotonicClock};

/// A bucket's calls and retries.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u64,
    retries: u64,
}

// ANCHOR: budget
/// Allows a retry while the retries in the last `window` stay within
/// `ratio * calls + min_per_sec * window` (both counted over that window).
/// `Send + Sync`; its std mutex is held for a few additions, never across a
/// yield.
///
/// The window is ten buckets of `window / 10`, like a breaker's time window
/// ([`Window::Time`](super::Window::Time)): a call or retry leaves it when
/// its whole bucket does.
pub struct RetryBudget<C: Clock = MonotonicClock> {
    ratio: f64,
    /// `min_per_sec * window`, in retries.
    floor: f64,
    clock: C,
    inner: Mutex<Inner>,
}
// ANCHOR_END: budget

struct Inner {
    window: TimeWindow<Tally>,
    denied: u64,
}

impl RetryBudget<MonotonicClock> {
    /// A budget on the real clock: `ratio` retries per call (0.2 = 20%),
    /// at least `min_per_sec` retries a second, over the last `window`.
    pub fn new(ratio: f64, min_per_sec: f64, window: Duration) -> Result<Self, ConfigError> {
        RetryBudget::with_clock(ratio, min_per_sec, window, MonotonicClock::new())
    }
}

impl<C: Clock> RetryBudget<C> {
    /// A budget that reads time from `clock`.
    pub fn with_clock(
        ratio: f64,
        min_per_sec: f64,
        window: Duration,
        clock: C,
    ) -> Result<Self, ConfigError> {
        for (name, value) in [("ratio", ratio), ("min_per_sec", min_per_sec)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Budget { name, value });
            }
        }
        if window < Duration::from_nanos(10) {
            return Err(ConfigError::ZeroDuration("the retry budget's window"));
        }
        Ok(RetryBudget {
            ratio,
            floor: min_per_sec * window.as_secs_f64(),
            clock,
            inner: Mutex::new(Inner {
                window: TimeWindow::new(window),
                denied: 0,
            }),
        })
    }

    /// Count one first attempt (not a retry): it earns `ratio` retries.
    pub fn record_call(&self) {
        let mut inner = self.lock();
        let now = self.clock.now();
        inner.window.current(now).calls += 1;
    }

    // ANCHOR: try_retry
    /// `true` (and the retry is counted) if one more retry stays within the
    /// budget; `false` means give up now instead.
    pub fn try_retry(&self) -> bool {
        let mut inner = self.lock();
        let now = self.clock.now();
        let (calls, retries) = inner
            .window
            .live(now)
            .fold((0, 0), |(c, r), t| (c + t.calls, r + t.retries));
        let allowed = self.ratio * calls as f64 + self.floor;
        // A hair of slack so 0.29 * 100 calls (28.999999999999996 in f64)
        // allows the 29th retry.
        if (retries + 1) as f64 <= allowed + 1e-9 {
            inner.window.current(now).retries += 1;
            true
        } else {
            inner.denied += 1;
            false
        }
    }
    // ANCHOR_END: try_retry

    /// Retries refused since the budget was made.
    pub fn denied(&self) -> u64 {
        self.lock().denied
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held, so the data is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn budget(ratio: f64, min_per_sec: f64) -> (RetryBudget<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let budget =
            RetryBudget::with_clock(ratio, min_per_sec, Duration::from_secs(10), clock.clone())
                .unwrap();
        (budget, clock)
    }

    fn retries_allowed(budget: &RetryBudget<ManualClock>) -> usize {
        std::iter::from_fn(|| budget.try_retry().then_some(()))
            .take(10_000)
            .count()
    }

    #[test]
    fn retries_are_a_share_of_calls() {
        let (budget, _) = budget(0.2, 0.0);
        assert!(!budget.try_retry(), "no calls, no floor: no retry");
        for _ in 0..50 {
            budget.record_call();
        }
        assert_eq!(retries_allowed(&budget), 10, "20% of 50");
        budget.record_call();
        budget.record_call();
        budget.record_call();
        budget.record_call();
        assert_eq!(retries_allowed(&budget), 0, "54 calls earn 10.8: still 10");
        budget.record_call();
        assert_eq!(retries_allowed(&budget), 1, "55 calls earn 11");
        assert_eq!(budget.denied(), 4);
    }

    #[test]
    fn the_floor_lets_a_quiet_client_retry() {
        let (budget, _) = budget(0.2, 1.0); // 1 a second over 10 s: 10
        assert_eq!(retries_allowed(&budget), 10);
        for _ in 0..10 {
            budget.record_call();
        }
        assert_eq!(retries_allowed(&budget), 2, "10 + 20% of 10 = 12");
    }

    #[test]
    fn a_ratio_that_is_not_exact_in_binary_still_allows_its_last_retry() {
        let (budget, _) = budget(0.29, 0.0);
        for _ in 0..100 {
            budget.record_call();
        }
        assert_eq!(retries_allowed(&budget), 29);
    }

    #[test]
    fn calls_and_retries_leave_the_window_with_their_bucket() {
        let (budget, clock) = budget(0.5, 0.0);
        for _ in 0..10 {
            budget.record_call();
        }
        assert_eq!(retries_allowed(&budget), 5);
        clock.advance(Duration::from_secs(5));
        for _ in 0..10 {
            budget.record_call();
        }
        assert_eq!(retries_allowed(&budget), 5, "20 calls, 5 retries used");
        // At 10 s the first bucket (10 calls, 5 retries) has left.
        clock.advance(Duration::from_secs(5));
        assert_eq!(retries_allowed(&budget), 0, "10 calls earn 5, 5 used");
        clock.advance(Duration::from_secs(5));
        assert_eq!(retries_allowed(&budget), 0, "an empty window earns none");
    }

    #[test]
    fn bad_settings_get_a_sentence() {
        let err = |ratio, min, window| {
            RetryBudget::new(ratio, min, window)
                .err()
                .unwrap()
                .to_string()
        };
        let s = Duration::from_secs(1);
        assert_eq!(
            err(-0.1, 1.0, s),
            "ratio must be a finite number >= 0, not -0.1"
        );
        assert_eq!(
            err(0.2, f64::NAN, s),
            "min_per_sec must be a finite number >= 0, not NaN"
        );
        assert_eq!(
            err(0.2, 1.0, Duration::ZERO),
            "the retry budget's window must be longer than zero"
        );
    }
}
