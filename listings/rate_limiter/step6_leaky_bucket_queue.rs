//! Step 6: a leaky bucket used as a queue. Admit what GCRA admits, but make
//! each request wait for its departure slot, one per interval: the output is
//! smooth, and a request is refused only when the queue is full.

use may_patterns::ratelimit::trace::{adversarial, replay, Report};
use may_patterns::ratelimit::{Algorithm, Decision, LeakyQueue, Quota};
use std::time::Duration;

// ANCHOR: main
/// The leaky queue on the chapter's trace.
fn on_the_trace(quota: Quota) -> Report {
    replay(&LeakyQueue::new(quota), &adversarial(quota))
}

/// A burst of `burst + 1` at one instant into an empty queue.
fn a_burst_into_the_queue(quota: Quota) -> Vec<Decision> {
    let limiter = LeakyQueue::new(quota);
    let mut key = limiter.new_state(Duration::ZERO);
    let at = Duration::from_secs(1);
    (0..=quota.burst())
        .map(|_| limiter.decide(&mut key, at, 1))
        .collect()
}

fn main() {
    let quota = Quota::per_second(10, 10).expect("a valid quota");
    println!("{}", on_the_trace(quota));
    println!("{} at once into an empty queue:", quota.burst() + 1);
    for (i, decision) in a_burst_into_the_queue(quota).iter().enumerate() {
        println!("  {:>2}: {decision:?}", i + 1);
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::ratelimit::trace::Phase;

    #[test]
    fn what_leaves_never_exceeds_the_rate() {
        let report = on_the_trace(Quota::per_second(10, 10).unwrap());
        let got = Phase::ALL.map(|p| {
            let r = report.phase(p);
            (r.offered, r.admitted, r.queued, r.most_in_a_period)
        });
        assert_eq!(got, [(20, 10, 9, 10), (80, 49, 48, 10), (40, 20, 19, 10)]);
        assert_eq!(
            report.phase(Phase::IdleThenBurst).longest_wait,
            Duration::from_millis(900)
        );
    }

    #[test]
    fn a_burst_waits_one_interval_apart_and_the_overflow_is_refused() {
        let decisions = a_burst_into_the_queue(Quota::per_second(10, 10).unwrap());
        let waits: Vec<Option<Duration>> = decisions.iter().map(Decision::wait).collect();
        let expected: Vec<Option<Duration>> = (0..10)
            .map(|i| Some(Duration::from_millis(100 * i)))
            .chain([None])
            .collect();
        assert_eq!(waits, expected);
        assert_eq!(
            decisions[10],
            Decision::Denied {
                retry_after: Duration::from_millis(100),
                reset: Duration::from_secs(1)
            }
        );
    }
}
