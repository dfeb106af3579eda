//! Exercise 1 (starter): two quotas at once, 2 per second and 5 per minute;
//! a request goes only if both allow it.
//!
//! This first try asks the second quota only when the first allowed, and
//! returns the first refusal it meets. Run it: the refusal at 1.75 s says
//! "retry after 250ms", and the retry is refused again, because the minute
//! was used up; and a request the minute refuses has still spent a token of
//! the second. TODO: make `decide` change neither state unless both admit,
//! and refuse with a `retry_after` that is kept.

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
        // TODO: this spends the first quota even when the second refuses,
        // and its retry_after ignores the second quota.
        let first = self.first.decide(&mut state.0, now, cost);
        if !first.is_admitted() {
            return first;
        }
        let second = self.second.decide(&mut state.1, now, cost);
        let ((left_a, reset_a), (left_b, reset_b)) = (parts(first), parts(second));
        match second {
            Decision::Denied { retry_after, .. } => Decision::Denied {
                retry_after,
                reset: reset_a.max(reset_b),
            },
            _ => Decision::Allowed {
                remaining: left_a.min(left_b),
                reset: reset_a.max(reset_b),
            },
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
    fn the_starter_tells_a_refused_client_to_come_back_too_soon() {
        let seen = run();
        let ms = Duration::from_millis;
        assert_eq!(
            seen[7],
            (
                ms(1750),
                Decision::Denied {
                    retry_after: ms(250),
                    reset: ms(750)
                }
            )
        );
        // The last refusal's retry_after is not kept.
        let (_, retried) = seen.last().unwrap();
        assert!(!retried.is_admitted());
    }
}
