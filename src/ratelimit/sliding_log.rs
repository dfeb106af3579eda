//! Sliding window log: remember when each admitted unit went, and count
//! those younger than one period.

use super::quota::nanos;
use super::{Algorithm, Decision, Quota};
use std::collections::VecDeque;
use std::time::Duration;

/// Sliding window log: remember when each admitted unit went, and count
/// those younger than one period.
///
/// The exact sliding window (as in the classic Redis sorted-set limiter:
/// `ZREMRANGEBYSCORE` the old, `ZCARD` the rest). No window of one period,
/// wherever it starts, ever holds more than `rate` admitted units; `burst`
/// is ignored. The price is memory: up to `rate` entries per key (entries
/// of one instant are merged), where every other algorithm here keeps two
/// or three integers.
#[derive(Debug, Clone, Copy)]
pub struct SlidingLog {
    quota: Quota,
}

/// One key's log: (time admitted in ns, units), oldest first, and the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLogState {
    log: VecDeque<(u64, u64)>,
    used: u64,
}

impl SlidingLog {
    /// A sliding log admitting `quota.rate()` in any window of `quota.period()`.
    pub fn new(quota: Quota) -> SlidingLog {
        SlidingLog { quota }
    }
}

impl Algorithm for SlidingLog {
    type State = SlidingLogState;

    fn name(&self) -> &'static str {
        "sliding-log"
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    fn new_state(&self, _now: Duration) -> SlidingLogState {
        SlidingLogState::default()
    }

    // ANCHOR: decide
    fn decide(&self, state: &mut SlidingLogState, now: Duration, cost: u64) -> Decision {
        let (period, limit, now) = (self.quota.period_ns(), self.quota.rate(), nanos(now));
        // A unit admitted at `at` counts while `now < at + period`.
        while let Some(&(at, units)) = state.log.front() {
            if at.saturating_add(period) > now {
                break;
            }
            state.log.pop_front();
            state.used -= units;
        }
        let until = |at: u64| Duration::from_nanos(at.saturating_add(period).saturating_sub(now));
        let reset = state
            .log
            .back()
            .map_or(Duration::ZERO, |&(at, _)| until(at));
        if cost > limit {
            return Decision::Denied {
                retry_after: Duration::MAX,
                reset,
            };
        }
        if state.used + cost <= limit {
            // Keep the log sorted even if `now` is a little behind its back.
            let at = state.log.back().map_or(now, |&(last, _)| last.max(now));
            match state.log.back_mut() {
                Some((last, units)) if *last == at => *units += cost,
                _ => state.log.push_back((at, cost)),
            }
            state.used += cost;
            let newest = state.log.back().map_or(now, |&(at, _)| at);
            return Decision::Allowed {
                remaining: limit - state.used,
                reset: until(newest),
            };
        }
        // The request fits once the oldest `need` units have aged out.
        let mut need = state.used + cost - limit;
        let mut frees_at = now;
        for &(at, units) in &state.log {
            frees_at = at;
            if units >= need {
                break;
            }
            need -= units;
        }
        Decision::Denied {
            retry_after: until(frees_at),
            reset,
        }
    }
    // ANCHOR_END: decide

    fn is_idle(&self, state: &SlidingLogState, now: Duration) -> bool {
        let period = self.quota.period_ns();
        state
            .log
            .back()
            .is_none_or(|&(at, _)| at.saturating_add(period) <= nanos(now))
    }

    fn state_bytes(&self, state: &SlidingLogState) -> usize {
        std::mem::size_of::<SlidingLogState>()
            + state.log.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::testing::{assert_huge_times_do_not_wrap, assert_retry_exact, ms};

    fn ten_per_second() -> SlidingLog {
        SlidingLog::new(Quota::per_second(10, 3).unwrap())
    }

    #[test]
    fn no_window_of_one_period_holds_more_than_the_rate() {
        let sl = ten_per_second();
        let mut s = sl.new_state(ms(0));
        let before = (0..10).filter(|_| sl.decide(&mut s, ms(999), 1).is_admitted());
        assert_eq!(before.count(), 10);
        let after = (0..10).filter(|_| sl.decide(&mut s, ms(1000), 1).is_admitted());
        assert_eq!(after.count(), 0, "the edge is no loophole");
        assert!(!sl.decide(&mut s, ms(1998), 1).is_admitted());
        assert_eq!(
            sl.decide(&mut s, ms(1999), 1),
            Decision::Allowed {
                remaining: 9,
                reset: ms(1000)
            }
        );
    }

    #[test]
    fn retry_after_is_exact_and_counts_units_oldest_first() {
        let sl = ten_per_second();
        let mut s = sl.new_state(ms(0));
        assert!(sl.decide(&mut s, ms(100), 3).is_admitted());
        assert!(sl.decide(&mut s, ms(200), 3).is_admitted());
        assert!(sl.decide(&mut s, ms(300), 4).is_admitted());
        // 1 unit fits once the 3 from 100 ms go; 4 once those from 200 ms go too.
        assert_retry_exact(&sl, &s, ms(500), 1, ms(600));
        assert_retry_exact(&sl, &s, ms(500), 4, ms(700));
        assert_retry_exact(&sl, &s, ms(500), 10, ms(800));
    }

    #[test]
    fn memory_grows_with_the_rate_and_idle_means_empty() {
        let sl = ten_per_second();
        let mut s = sl.new_state(ms(0));
        let empty = sl.state_bytes(&s);
        assert!(sl.is_idle(&s, ms(0)));
        for t in 0..10 {
            sl.decide(&mut s, ms(t), 1);
        }
        assert!(sl.state_bytes(&s) >= empty + 10 * 16);
        assert!(!sl.is_idle(&s, ms(1008)));
        assert!(sl.is_idle(&s, ms(1009)));
        assert_eq!(
            sl.decide(&mut s, ms(0), 11),
            Decision::Denied {
                retry_after: Duration::MAX,
                reset: ms(1009)
            }
        );
    }

    #[test]
    fn huge_times_saturate_instead_of_wrapping() {
        assert_huge_times_do_not_wrap(&ten_per_second());
    }
}
