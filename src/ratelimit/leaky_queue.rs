//! Leaky bucket as a queue: requests join a queue `burst` deep that drains
//! one unit per interval; a request is told how long to wait for its turn,
//! and refused only when the queue is full.

use super::quota::nanos;
use super::{Algorithm, Decision, Quota};
use std::time::Duration;

/// Leaky bucket as a queue: requests join a queue `burst` deep that drains
/// one unit per interval; a request is told how long to wait for its turn,
/// and refused only when the queue is full.
///
/// The leaky bucket has two textbook readings (Tanenbaum, *Computer
/// Networks*; ATM's "leaky bucket as a meter" is GCRA). As a meter it
/// rejects what overflows and lets the rest through at once, and is the
/// same rule as [`Gcra`](super::Gcra). As a queue, this one, it admits the
/// same requests but delays each until its departure slot, so what leaves
/// is smooth: one unit per [`Quota::interval`], never a burst. The state is
/// one `u64`: when the queue will be empty. The caller sleeps the
/// [`Decision::Queued`] `wait` (on may, rounded up to at least 1 ms).
#[derive(Debug, Clone, Copy)]
pub struct LeakyQueue {
    quota: Quota,
}

/// One key's queue: the time its last admitted unit has left, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyQueueState {
    empty_at: u64,
}

impl LeakyQueue {
    /// A queue `quota.burst()` units deep draining `quota.rate()` per
    /// `quota.period()`.
    pub fn new(quota: Quota) -> LeakyQueue {
        LeakyQueue { quota }
    }
}

impl Algorithm for LeakyQueue {
    type State = LeakyQueueState;

    fn name(&self) -> &'static str {
        "leaky-bucket"
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    fn new_state(&self, _now: Duration) -> LeakyQueueState {
        LeakyQueueState { empty_at: 0 }
    }

    // ANCHOR: decide
    fn decide(&self, state: &mut LeakyQueueState, now: Duration, cost: u64) -> Decision {
        let (t, burst, now) = (self.quota.interval_ns(), self.quota.burst(), nanos(now));
        let depth = burst * t; // the queue's capacity in time; Quota::new checked it fits
                               // This request leaves when everything before it has.
        let departs = state.empty_at.max(now);
        let backlog = departs - now;
        let reset = Duration::from_nanos(backlog);
        if cost > burst {
            return Decision::Denied {
                retry_after: Duration::MAX,
                reset,
            };
        }
        if backlog + cost * t > depth {
            // It fits once the queue has drained to depth − cost.
            let fits_at = departs - (depth - cost * t);
            return Decision::Denied {
                retry_after: Duration::from_nanos(fits_at - now),
                reset,
            };
        }
        state.empty_at = departs.saturating_add(cost * t);
        let remaining = (depth - backlog - cost * t) / t;
        let reset = Duration::from_nanos(backlog + cost * t);
        match backlog {
            0 => Decision::Allowed { remaining, reset },
            _ => Decision::Queued {
                wait: Duration::from_nanos(backlog),
                remaining,
                reset,
            },
        }
    }
    // ANCHOR_END: decide

    fn is_idle(&self, state: &LeakyQueueState, now: Duration) -> bool {
        state.empty_at <= nanos(now)
    }

    fn state_bytes(&self, _: &LeakyQueueState) -> usize {
        std::mem::size_of::<LeakyQueueState>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::testing::{assert_huge_times_do_not_wrap, assert_retry_exact, ms};
    use crate::ratelimit::Gcra;

    /// 10 per second (one departure per 100 ms), 4 deep.
    fn queue() -> LeakyQueue {
        LeakyQueue::new(Quota::per_second(10, 4).unwrap())
    }

    #[test]
    fn a_burst_is_queued_one_interval_apart_and_the_overflow_refused() {
        let lq = queue();
        let mut s = lq.new_state(ms(0));
        assert_eq!(
            lq.decide(&mut s, ms(1000), 1),
            Decision::Allowed {
                remaining: 3,
                reset: ms(100)
            }
        );
        for (wait, left) in [(100, 2), (200, 1), (300, 0)] {
            assert_eq!(
                lq.decide(&mut s, ms(1000), 1),
                Decision::Queued {
                    wait: ms(wait),
                    remaining: left,
                    reset: ms(wait + 100)
                }
            );
        }
        assert_eq!(
            lq.decide(&mut s, ms(1000), 1),
            Decision::Denied {
                retry_after: ms(100),
                reset: ms(400)
            }
        );
    }

    #[test]
    fn retry_after_is_exact() {
        let lq = queue();
        let mut s = lq.new_state(ms(0));
        assert!(lq.decide(&mut s, ms(0), 3).is_admitted());
        assert_retry_exact(&lq, &s, ms(30), 2, ms(70));
        assert_retry_exact(&lq, &s, ms(30), 4, ms(270));
    }

    #[test]
    fn admits_what_gcra_admits_but_delays_instead_of_bursting() {
        let (lq, g) = (queue(), Gcra::new(queue().quota()));
        let (mut ls, mut gs) = (lq.new_state(ms(0)), g.new_state(ms(0)));
        let mut rng = fastrand::Rng::with_seed(12);
        let (mut now, mut last_departure) = (ms(0), None);
        for _ in 0..10_000 {
            now += Duration::from_micros(rng.u64(0..60_000));
            let decision = lq.decide(&mut ls, now, 1);
            assert_eq!(
                decision.is_admitted(),
                g.decide(&mut gs, now, 1).is_admitted()
            );
            if let Some(wait) = decision.wait() {
                let departs = now + wait;
                if let Some(last) = last_departure {
                    assert!(departs - last >= ms(100), "departures one interval apart");
                }
                last_departure = Some(departs);
            }
        }
    }

    #[test]
    fn one_u64_of_state_and_idle_means_empty() {
        let lq = queue();
        let mut s = lq.new_state(ms(0));
        assert_eq!(lq.state_bytes(&s), 8);
        lq.decide(&mut s, ms(0), 2);
        assert!(!lq.is_idle(&s, ms(199)));
        assert!(lq.is_idle(&s, ms(200)));
        assert_eq!(
            lq.decide(&mut s, ms(0), 5),
            Decision::Denied {
                retry_after: Duration::MAX,
                reset: ms(200)
            }
        );
    }

    #[test]
    fn huge_times_saturate_instead_of_wrapping() {
        assert_huge_times_do_not_wrap(&queue());
    }
}
