//! Step 4: a token bucket. A bucket of `burst` tokens refilled at the
//! rate; a request takes a token or is refused. Refill is lazy: computed
//! from the time since the last decision, so nothing runs in between.

use may_patterns::ratelimit::trace::{adversarial, replay, Report};
use may_patterns::ratelimit::{Algorithm, Decision, Quota, TokenBucket};
use std::time::Duration;

// ANCHOR: main
/// The token bucket on the chapter's trace.
fn on_the_trace(quota: Quota) -> Report {
    replay(&TokenBucket::new(quota), &adversarial(quota))
}

/// Empty the bucket at 0, then ask twice at 150 ms: one token has come
/// back, and half of the next one.
fn lazy_refill(quota: Quota) -> (Decision, Decision) {
    let limiter = TokenBucket::new(quota);
    let mut key = limiter.new_state(Duration::ZERO);
    limiter.decide(&mut key, Duration::ZERO, quota.burst());
    let at = Duration::from_millis(150);
    (
        limiter.decide(&mut key, at, 1),
        limiter.decide(&mut key, at, 1),
    )
}

fn main() {
    let quota = Quota::per_second(10, 10).expect("a valid quota");
    println!("{}", on_the_trace(quota));
    let (first, second) = lazy_refill(quota);
    println!("emptied at 0, at 150ms: {first:?}");
    println!("                  then: {second:?}");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::ratelimit::trace::Phase;

    #[test]
    fn a_period_can_hold_the_burst_plus_the_refill() {
        let report = on_the_trace(Quota::per_second(10, 10).unwrap());
        let got = Phase::ALL.map(|p| {
            let r = report.phase(p);
            (r.offered, r.admitted, r.most_in_a_period)
        });
        assert_eq!(got, [(20, 10, 10), (80, 49, 19), (40, 20, 19)]);
    }

    #[test]
    fn refill_keeps_the_part_of_a_token_already_earned() {
        let (first, second) = lazy_refill(Quota::per_second(10, 10).unwrap());
        let ms = Duration::from_millis;
        assert_eq!(
            first,
            Decision::Allowed {
                remaining: 0,
                reset: ms(950)
            }
        );
        assert_eq!(
            second,
            Decision::Denied {
                retry_after: ms(50),
                reset: ms(950)
            }
        );
    }
}
