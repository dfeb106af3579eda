//! GCRA, the generic cell rate algorithm: one timestamp per key, the
//! theoretical arrival time (TAT) of the next unit if the key ran exactly at
//! the rate.

use super::quota::nanos;
use super::{Algorithm, Decision, Quota};
use std::time::Duration;

/// GCRA, the generic cell rate algorithm: one timestamp per key, the
/// theoretical arrival time (TAT) of the next unit if the key ran exactly at
/// the rate.
///
/// From ATM traffic policing (ITU-T I.371, the "virtual scheduling"
/// form), and the algorithm behind the `governor` crate and redis-cell.
/// With emission interval `T = period / rate` and tolerance
/// `tau = T × (burst − 1)`, a request of `cost` at `now` moves the TAT to
/// `max(TAT, now) + cost × T` and is admitted when that is at most
/// `now + tau + T`. It admits exactly what a [token bucket](super::TokenBucket)
/// of the same quota admits (a test checks it on 10,000 random arrivals),
/// with one `u64` of state instead of two.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    quota: Quota,
}

/// One key's theoretical arrival time, in nanoseconds of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraState {
    tat: u64,
}

impl Gcra {
    /// GCRA with `T = quota.interval()` and `tau = T × (quota.burst() − 1)`.
    pub fn new(quota: Quota) -> Gcra {
        Gcra { quota }
    }
}

impl Algorithm for Gcra {
    type State = GcraState;

    fn name(&self) -> &'static str {
        "gcra"
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    fn new_state(&self, _now: Duration) -> GcraState {
        // Any TAT at or before `now` is a full quota.
        GcraState { tat: 0 }
    }

    // ANCHOR: decide
    fn decide(&self, state: &mut GcraState, now: Duration, cost: u64) -> Decision {
        let (t, burst, now) = (self.quota.interval_ns(), self.quota.burst(), nanos(now));
        let tau = t * (burst - 1); // Quota::new checked burst × T fits
        let tat = state.tat.max(now);
        let until = |at: u64| Duration::from_nanos(at.saturating_sub(now));
        if cost > burst {
            return Decision::Denied {
                retry_after: Duration::MAX,
                reset: until(tat),
            };
        }
        let new_tat = tat.saturating_add(cost * t);
        // The earliest `now` at which this TAT is within tolerance.
        let allow_at = new_tat.saturating_sub(tau + t);
        if now < allow_at {
            return Decision::Denied {
                retry_after: until(allow_at),
                reset: until(tat),
            };
        }
        state.tat = new_tat;
        Decision::Allowed {
            remaining: (tau + t - (new_tat - now)) / t,
            reset: until(new_tat),
        }
    }
    // ANCHOR_END: decide

    fn is_idle(&self, state: &GcraState, now: Duration) -> bool {
        state.tat <= nanos(now)
    }

    fn state_bytes(&self, _: &GcraState) -> usize {
        std::mem::size_of::<GcraState>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::testing::{assert_huge_times_do_not_wrap, assert_retry_exact, ms};
    use crate::ratelimit::TokenBucket;

    /// 10 per second (T = 100 ms), 5 at once (tau = 400 ms).
    fn gcra() -> Gcra {
        Gcra::new(Quota::per_second(10, 5).unwrap())
    }

    #[test]
    fn bursts_then_admits_one_per_interval() {
        let g = gcra();
        let mut s = g.new_state(ms(0));
        for left in (0..5).rev() {
            assert_eq!(
                g.decide(&mut s, ms(1000), 1),
                Decision::Allowed {
                    remaining: left,
                    reset: ms(100 * (5 - left))
                }
            );
        }
        assert_eq!(
            g.decide(&mut s, ms(1000), 1),
            Decision::Denied {
                retry_after: ms(100),
                reset: ms(500)
            }
        );
        assert!(g.decide(&mut s, ms(1100), 1).is_admitted());
    }

    #[test]
    fn retry_after_is_exact() {
        let g = gcra();
        let mut s = g.new_state(ms(0));
        assert!(g.decide(&mut s, ms(0), 4).is_admitted());
        assert_retry_exact(&g, &s, ms(30), 3, ms(170));
        assert_retry_exact(&g, &s, ms(30), 5, ms(370));
    }

    #[test]
    fn admits_what_a_token_bucket_admits() {
        let (g, tb) = (gcra(), TokenBucket::new(gcra().quota()));
        let (mut gs, mut ts) = (g.new_state(ms(0)), tb.new_state(ms(0)));
        let mut rng = fastrand::Rng::with_seed(12);
        let mut now = ms(0);
        for _ in 0..10_000 {
            now += Duration::from_micros(rng.u64(0..60_000));
            let cost = rng.u64(1..=3);
            assert_eq!(
                g.decide(&mut gs, now, cost).is_admitted(),
                tb.decide(&mut ts, now, cost).is_admitted(),
                "at {now:?}"
            );
        }
    }

    #[test]
    fn one_u64_of_state_and_idle_means_tat_passed() {
        let g = gcra();
        let mut s = g.new_state(ms(0));
        assert_eq!(g.state_bytes(&s), 8);
        g.decide(&mut s, ms(0), 2);
        assert!(!g.is_idle(&s, ms(199)));
        assert!(g.is_idle(&s, ms(200)));
        assert_eq!(
            g.decide(&mut s, ms(0), 6),
            Decision::Denied {
                retry_after: Duration::MAX,
                reset: ms(200)
            }
        );
    }

    #[test]
    fn huge_times_saturate_instead_of_wrapping() {
        assert_huge_times_do_not_wrap(&gcra());
    }
}
