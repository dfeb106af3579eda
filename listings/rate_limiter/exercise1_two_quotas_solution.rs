//! Exercise 1 (solution): two quotas at once, 2 per second and 5 per minute;
//! a request goes only if both allow it.
//!
//! Decide on copies of both states and keep the copies only when both
//! admitted, so a request the minute quota refuses costs the second quota
//! nothing. Refused, the request must wait for the later of the two: that
//! is the exact `retry_after`, because an algorithm here that admits a
//! request at some time still admits it later, if nothing else arrives.

use may_patterns::ratelimit::{Algorithm, Decision, Quota, SlidingLog, TokenBucket};
use std::time::Duration;

// ANCHOR: both
/// Both limits must admit: `first` (the short period, whose quota the
/// headers report) and `second`.
struct Both<A, B> {
    first: A,
    second: B,
}

/// `(remaining, reset)` of an admitted decision; `(0, reset)` of a denial.
fn parts(decision: Decision) -> (u64, Duration) {
    match decision {
        Decision::Allowed { remaining, reset }
        | Decision::Queued {
            remaining, reset, ..
        } => (remaining, reset),
        Decision::Denied { reset, .. } => (0, reset),
    }
}

impl<A: Algorithm, B: Algorithm> Algorithm for Both<A, B>
where
    A::State: Clone,
    B::State: Clone,
{
    type State = (A::State, B::State);

    fn name(&self) -> &'static str {
        "both"
    }

    fn quota(&self) -> Quota {
        self.first.quota()
    }

    fn new_state(&self, now: Duration) -> Self::State {
        (self.first.new_state(now), self.second.new_state(now))
    }

    fn decide(&self, state: &mut Self::State, now: Duration, cost: u64) -> Decision {
        // Copies: a sliding log's copy costs its entries, the others 8-24 bytes.
        let (mut a, mut b) = state.clone();
        let (first, second) = (
            self.first.decide(&mut a, now, cost),
            self.second.decide(&mut b, now, cost),
        );
        let ((left_a, reset_a), (left_b, reset_b)) = (parts(first), parts(second));
        let reset = reset_a.max(reset_b);
        match (first.wait(), second.wait()) {
            (Some(wait_a), Some(wait_b)) => {
                *state = (a, b);
                let (remaining, wait) = (left_a.min(left_b), wait_a.max(wait_b));
                if wait.is_zero() {
                    Decision::Allowed { remaining, reset }
                } else {
                    Decision::Queued {
                        wait,
                        remaining,
                        reset,
                    }
                }
            }
            _ => {
                let retry = |d| match d {
                    Decision::Denied { retry_after, .. } => retry_after,
                    _ => Duration::ZERO,
                };
                Decision::Denied {
                    retry_after: retry(first).max(retry(second)),
                    reset,
                }
            }
        }
    }

    fn is_idle(&self, state: &Self::State, now: Duration) -> bool {
        self.first.is_idle(&state.0, now) && self.second.is_idle(&state.1, now)
    }

    fn state_bytes(&self, state: &Self::State) -> usize {
        self.first.state_bytes(&state.0) + self.second.state_bytes(&state.1)
    }
}
// ANCHOR_END: both

/// 2 per second (a token bucket, 2 at once) and 5 per minute (a log).
fn two_quotas() -> Both<TokenBucket, SlidingLog> {
    let per_second = Quota::per_second(2, 2).expect("a valid quota");
    let per_minute = Quota::new(5, Duration::from_secs(60), 5).expect("a valid quota");
    Both {
        first: TokenBucket::new(per_second),
        second: SlidingLog::new(per_minute),
    }
}

/// A request every 250 ms for 2.5 s, then one more when the last refusal
/// said to come back: (time, decision) for each.
fn run() -> Vec<(Duration, Decision)> {
    let limiter = two_quotas();
    let mut key = limiter.new_state(Duration::ZERO);
    let mut seen: Vec<(Duration, Decision)> = (0..10)
        .map(|i| {
            let at = Duration::from_millis(250 * i);
            (at, limiter.decide(&mut key, at, 1))
        })
        .collect();
    if let Some(&(at, Decision::Denied { retry_after, .. })) = seen.last() {
        let back = at + retry_after;
        seen.push((back, limiter.decide(&mut key, back, 1)));
    }
    seen
}

fn main() {
    for (at, decision) in run() {
        println!("{:>7}: {decision:?}", format!("{at:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_both_quotas_allow_go_and_the_retry_is_kept() {
        let seen = run();
        let admitted: Vec<u64> = seen
            .iter()
            .filter(|(_, d)| d.is_admitted())
            .map(|(at, _)| at.as_millis() as u64)
            .collect();
        // The minute's five go at 0, 250, 500, 1000 and 1500 ms; the
        // retry at one minute finds both quotas willing.
        assert_eq!(admitted, [0, 250, 500, 1000, 1500, 60_000]);
        assert_eq!(
            seen[7].1,
            Decision::Denied {
                retry_after: Duration::from_millis(58_250),
                reset: Duration::from_millis(58_250 + 1_500)
            }
        );
    }

    #[test]
    fn retry_after_is_exact_for_the_pair() {
        let limiter = two_quotas();
        let mut key = limiter.new_state(Duration::ZERO);
        for ms in [0, 250, 500, 1000, 1500] {
            assert!(limiter
                .decide(&mut key, Duration::from_millis(ms), 1)
                .is_admitted());
        }
        let at = Duration::from_millis(1750);
        let Decision::Denied { retry_after, .. } = limiter.decide(&mut key.clone(), at, 1) else {
            panic!("the minute is used up");
        };
        let nearly = at + retry_after - Duration::from_nanos(1);
        assert!(!limiter.decide(&mut key.clone(), nearly, 1).is_admitted());
        assert!(limiter.decide(&mut key, at + retry_after, 1).is_admitted());
    }

    #[test]
    fn a_refused_request_costs_neither_quota() {
        let limiter = two_quotas();
        let mut key = limiter.new_state(Duration::ZERO);
        for ms in [0, 250, 500, 1000, 1500] {
            limiter.decide(&mut key, Duration::from_millis(ms), 1);
        }
        let before = key.clone();
        limiter.decide(&mut key, Duration::from_millis(2000), 1);
        assert_eq!(key, before);
    }
}
