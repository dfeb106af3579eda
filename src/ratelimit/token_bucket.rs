//! Token bucket: a bucket of `burst` tokens, refilled at `rate` per
//! `period`; a request takes `cost` tokens or is refused.

use super::quota::nanos;
use super::{Algorithm, Decision, Quota};
use std::time::Duration;

/// Token bucket: a bucket of `burst` tokens, refilled at `rate` per
/// `period`; a request takes `cost` tokens or is refused.
///
/// The textbook shaper (Turner's token bucket, as in Linux `tc tbf` and
/// most API gateways). Refill is lazy: nothing runs between requests, each
/// decision first adds the whole tokens earned since the last one, one per
/// [`Quota::interval`], keeping the fraction of an interval already earned.
/// A full bucket earns nothing more, so an idle key can burst `burst` and
/// then runs at the rate: in any window of one period it admits at most
/// `burst + rate`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    quota: Quota,
}

/// One key's bucket: tokens in it, and the time up to which refill counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucketState {
    tokens: u64,
    last: u64,
}

impl TokenBucket {
    /// A bucket of `quota.burst()` tokens refilled at `quota.rate()` per
    /// `quota.period()`.
    pub fn new(quota: Quota) -> TokenBucket {
        TokenBucket { quota }
    }

    /// When the bucket holds `tokens` more than now, counting from `last`.
    fn time_for(&self, state: &TokenBucketState, tokens: u64) -> u64 {
        let t = self.quota.interval_ns();
        state.last.saturating_add(tokens.saturating_mul(t))
    }
}

impl Algorithm for TokenBucket {
    type State = TokenBucketState;

    fn name(&self) -> &'static str {
        "token-bucket"
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    fn new_state(&self, now: Duration) -> TokenBucketState {
        TokenBucketState {
            tokens: self.quota.burst(),
            last: nanos(now),
        }
    }

    // ANCHOR: decide
    fn decide(&self, state: &mut TokenBucketState, now: Duration, cost: u64) -> Decision {
        let (t, burst, now) = (self.quota.interval_ns(), self.quota.burst(), nanos(now));
        // Lazy refill: the whole tokens earned since `last`.
        let earned = now.saturating_sub(state.last) / t;
        if state.tokens.saturating_add(earned) >= burst {
            *state = TokenBucketState {
                tokens: burst,
                last: now.max(state.last),
            };
        } else {
            state.tokens += earned;
            state.last += earned * t;
        }
        let until = |at: u64| Duration::from_nanos(at.saturating_sub(now));
        if cost > burst {
            let reset = until(self.time_for(state, burst - state.tokens));
            return Decision::Denied {
                retry_after: Duration::MAX,
                reset,
            };
        }
        if state.tokens >= cost {
            state.tokens -= cost;
            return Decision::Allowed {
                remaining: state.tokens,
                reset: until(self.time_for(state, burst - state.tokens)),
            };
        }
        Decision::Denied {
            retry_after: until(self.time_for(state, cost - state.tokens)),
            reset: until(self.time_for(state, burst - state.tokens)),
        }
    }
    // ANCHOR_END: decide

    fn is_idle(&self, state: &TokenBucketState, now: Duration) -> bool {
        self.time_for(state, self.quota.burst() - state.tokens) <= nanos(now)
    }

    fn state_bytes(&self, _: &TokenBucketState) -> usize {
        std::mem::size_of::<TokenBucketState>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::testing::{assert_huge_times_do_not_wrap, assert_retry_exact, ms};

    /// 10 per second (one token per 100 ms), 5 at once.
    fn bucket() -> TokenBucket {
        TokenBucket::new(Quota::per_second(10, 5).unwrap())
    }

    #[test]
    fn a_full_bucket_bursts_then_refills_one_token_per_interval() {
        let tb = bucket();
        let mut s = tb.new_state(ms(0));
        let burst = (0..6).filter(|_| tb.decide(&mut s, ms(0), 1).is_admitted());
        assert_eq!(burst.count(), 5);
        assert_eq!(
            tb.decide(&mut s, ms(150), 1),
            Decision::Allowed {
                remaining: 0,
                reset: ms(450)
            }
        );
        // The 50 ms earned towards the next token were kept.
        assert_eq!(
            tb.decide(&mut s, ms(150), 1),
            Decision::Denied {
                retry_after: ms(50),
                reset: ms(450)
            }
        );
    }

    #[test]
    fn retry_after_is_exact() {
        let tb = bucket();
        let mut s = tb.new_state(ms(0));
        assert!(tb.decide(&mut s, ms(0), 4).is_admitted());
        assert_retry_exact(&tb, &s, ms(30), 3, ms(170));
        assert_retry_exact(&tb, &s, ms(30), 5, ms(370));
    }

    #[test]
    fn a_full_bucket_earns_nothing_more() {
        let tb = bucket();
        let mut s = tb.new_state(ms(0));
        assert!(tb.is_idle(&s, ms(0)));
        let after_idle = (0..10).filter(|_| tb.decide(&mut s, ms(60_000), 1).is_admitted());
        assert_eq!(after_idle.count(), 5);
        assert!(!tb.is_idle(&s, ms(60_499)));
        assert!(tb.is_idle(&s, ms(60_500)));
        assert_eq!(
            tb.decide(&mut s, ms(60_500), 6),
            Decision::Denied {
                retry_after: Duration::MAX,
                reset: Duration::ZERO
            }
        );
        assert_eq!(tb.state_bytes(&s), 16);
    }

    #[test]
    fn huge_times_saturate_instead_of_wrapping() {
        assert_huge_times_do_not_wrap(&bucket());
    }
}
