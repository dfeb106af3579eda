//! Step 1: a fixed window. Count what each key did in the current window of
//! one period; refuse past the rate; start again from zero at each edge.

use may_patterns::ratelimit::trace::{adversarial, replay, Report};
use may_patterns::ratelimit::{Algorithm, Decision, FixedWindow, Quota};
use std::time::Duration;

// ANCHOR: main
/// The fixed window on the chapter's trace.
fn on_the_trace(quota: Quota) -> Report {
    replay(&FixedWindow::new(quota), &adversarial(quota))
}

/// The edge up close: a full window at 999 ms, then one more request at
/// 999 ms and one at 1 s.
fn at_the_edge(quota: Quota) -> (u64, Decision, Decision) {
    let limiter = FixedWindow::new(quota);
    let mut key = limiter.new_state(Duration::ZERO);
    let ms = Duration::from_millis;
    let admitted = (0..quota.rate())
        .filter(|_| limiter.decide(&mut key, ms(999), 1).is_admitted())
        .count() as u64;
    let late = limiter.decide(&mut key, ms(999), 1);
    (admitted, late, limiter.decide(&mut key, ms(1000), 1))
}

fn main() {
    let quota = Quota::per_second(10, 10).expect("a valid quota");
    println!("{}", on_the_trace(quota));
    let (admitted, late, next) = at_the_edge(quota);
    println!("at 999ms: {admitted} admitted, then {late:?}");
    println!("at 1s:    {next:?}");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::ratelimit::trace::Phase;

    #[test]
    fn twice_the_limit_goes_through_across_the_edge() {
        let report = on_the_trace(Quota::per_second(10, 10).unwrap());
        let edge = report.phase(Phase::EdgeBurst);
        assert_eq!(
            (edge.offered, edge.admitted, edge.most_in_a_period),
            (20, 20, 20)
        );
        let steady = report.phase(Phase::Steady);
        assert_eq!((steady.admitted, steady.most_in_a_period), (40, 10));
        let idle = report.phase(Phase::IdleThenBurst);
        assert_eq!((idle.admitted, idle.most_in_a_period), (20, 20));
    }

    #[test]
    fn one_millisecond_later_the_whole_quota_is_back() {
        let (admitted, late, next) = at_the_edge(Quota::per_second(10, 10).unwrap());
        assert_eq!(admitted, 10);
        let ms = Duration::from_millis;
        assert_eq!(
            late,
            Decision::Denied {
                retry_after: ms(1),
                reset: ms(1)
            }
        );
        assert_eq!(
            next,
            Decision::Allowed {
                remaining: 9,
                reset: ms(1000)
            }
        );
    }
}
