//! Fixed window: count per window of one period, reset at each window edge.

use super::quota::nanos;
use super::{Algorithm, Decision, Quota};
use std::time::Duration;

/// Fixed window: count per window of one period, reset at each window edge.
///
/// The textbook first limiter (one Redis `INCR` on a key named after the
/// current minute, with an expiry). The windows are aligned to the clock's
/// origin: window `n` is `[n × period, (n + 1) × period)`. The limit is the
/// quota's `rate` per window; `burst` is ignored, because a fixed window
/// already lets a whole window's rate arrive at once. Its flaw is the edge:
/// `rate` units just before an edge and `rate` just after are all admitted,
/// twice the limit within a moment (step 1 shows it).
#[derive(Debug, Clone, Copy)]
pub struct FixedWindow {
    quota: Quota,
}

/// One key's window: which window, and how much it has admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindowState {
    window: u64,
    count: u64,
}

impl FixedWindow {
    /// A fixed window admitting `quota.rate()` per `quota.period()`.
    pub fn new(quota: Quota) -> FixedWindow {
        FixedWindow { quota }
    }
}

impl Algorithm for FixedWindow {
    type State = FixedWindowState;

    fn name(&self) -> &'static str {
        "fixed-window"
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    fn new_state(&self, now: Duration) -> FixedWindowState {
        FixedWindowState {
            window: nanos(now) / self.quota.period_ns(),
            count: 0,
        }
    }

    // ANCHOR: decide
    fn decide(&self, state: &mut FixedWindowState, now: Duration, cost: u64) -> Decision {
        let (period, limit, now) = (self.quota.period_ns(), self.quota.rate(), nanos(now));
        let window = now / period;
        // A new window forgets the old count. (A `now` behind the state, read
        // by a caller that lost a race for the lock, counts in the newer window.)
        if window > state.window {
            *state = FixedWindowState { window, count: 0 };
        }
        let to_edge = Duration::from_nanos(
            (state.window.saturating_add(1))
                .saturating_mul(period)
                .saturating_sub(now),
        );
        if cost > limit {
            return Decision::Denied {
                retry_after: Duration::MAX,
                reset: to_edge,
            };
        }
        if state.count + cost <= limit {
            state.count += cost;
            let reset = if state.count == 0 {
                Duration::ZERO
            } else {
                to_edge
            };
            Decision::Allowed {
                remaining: limit - state.count,
                reset,
            }
        } else {
            // Nothing frees up before the edge; at the edge everything does.
            Decision::Denied {
                retry_after: to_edge,
                reset: to_edge,
            }
        }
    }
    // ANCHOR_END: decide

    fn is_idle(&self, state: &FixedWindowState, now: Duration) -> bool {
        state.count == 0 || nanos(now) / self.quota.period_ns() > state.window
    }

    fn state_bytes(&self, _: &FixedWindowState) -> usize {
        std::mem::size_of::<FixedWindowState>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::testing::{assert_huge_times_do_not_wrap, assert_retry_exact, ms};

    fn ten_per_second() -> FixedWindow {
        FixedWindow::new(Quota::per_second(10, 3).unwrap())
    }

    #[test]
    fn admits_the_rate_per_window_and_ignores_burst() {
        let fw = ten_per_second();
        let mut s = fw.new_state(ms(0));
        for i in 0..10 {
            assert_eq!(
                fw.decide(&mut s, ms(100), 1),
                Decision::Allowed {
                    remaining: 9 - i,
                    reset: ms(900)
                }
            );
        }
        assert_eq!(
            fw.decide(&mut s, ms(100), 1),
            Decision::Denied {
                retry_after: ms(900),
                reset: ms(900)
            }
        );
    }

    #[test]
    fn admits_twice_the_limit_across_an_edge() {
        let fw = ten_per_second();
        let mut s = fw.new_state(ms(0));
        let before = (0..10).filter(|_| fw.decide(&mut s, ms(999), 1).is_admitted());
        assert_eq!(before.count(), 10);
        let after = (0..10).filter(|_| fw.decide(&mut s, ms(1000), 1).is_admitted());
        assert_eq!(after.count(), 10, "20 admitted within 1 ms");
    }

    #[test]
    fn retry_after_is_exact() {
        let fw = ten_per_second();
        let mut s = fw.new_state(ms(0));
        assert!(fw.decide(&mut s, ms(250), 7).is_admitted());
        assert_retry_exact(&fw, &s, ms(400), 4, ms(600));
    }

    #[test]
    fn a_cost_over_the_limit_never_fits_and_idle_means_a_new_window() {
        let fw = ten_per_second();
        let mut s = fw.new_state(ms(0));
        assert_eq!(
            fw.decide(&mut s, ms(0), 11),
            Decision::Denied {
                retry_after: Duration::MAX,
                reset: ms(1000)
            }
        );
        assert!(fw.is_idle(&s, ms(0)));
        fw.decide(&mut s, ms(0), 1);
        assert!(!fw.is_idle(&s, ms(999)));
        assert!(fw.is_idle(&s, ms(1000)));
        assert_eq!(fw.state_bytes(&s), 16);
    }

    #[test]
    fn huge_times_saturate_instead_of_wrapping() {
        assert_huge_times_do_not_wrap(&ten_per_second());
    }
}
