//! Step 2: a sliding window log. Keep the time of every admitted unit and
//! count those younger than one period: exact, at the price of memory.

use may_patterns::ratelimit::trace::{adversarial, replay, Phase, Report};
use may_patterns::ratelimit::{Algorithm, Decision, Quota, SlidingLog};
use std::time::Duration;

// ANCHOR: main
/// The sliding log on the chapter's trace.
fn on_the_trace(quota: Quota) -> Report {
    replay(&SlidingLog::new(quota), &adversarial(quota))
}

/// One key after the trace's edge burst: the bytes its log holds, and what
/// one more request at 1 s is told.
fn after_the_edge_burst(quota: Quota) -> (usize, Decision) {
    let limiter = SlidingLog::new(quota);
    let mut key = limiter.new_state(Duration::ZERO);
    let burst = adversarial(quota);
    for arrival in burst.iter().filter(|a| a.phase == Phase::EdgeBurst) {
        limiter.decide(&mut key, arrival.at, arrival.cost);
    }
    let bytes = limiter.state_bytes(&key);
    (bytes, limiter.decide(&mut key, Duration::from_secs(1), 1))
}

fn main() {
    let quota = Quota::per_second(10, 10).expect("a valid quota");
    println!("{}", on_the_trace(quota));
    let (bytes, next) = after_the_edge_burst(quota);
    println!("after the edge burst the key's log holds {bytes} bytes");
    println!("one more at 1s: {next:?}");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_period_on_the_trace_holds_more_than_the_rate() {
        let report = on_the_trace(Quota::per_second(10, 10).unwrap());
        let got = Phase::ALL.map(|p| {
            let r = report.phase(p);
            (r.offered, r.admitted, r.most_in_a_period)
        });
        assert_eq!(got, [(20, 10, 10), (80, 40, 10), (40, 11, 10)]);
    }

    #[test]
    fn the_log_costs_memory_and_knows_exactly_when_the_oldest_unit_leaves() {
        let (bytes, next) = after_the_edge_burst(Quota::per_second(10, 10).unwrap());
        // Ten (time, units) entries of 16 bytes, on top of the deque itself.
        assert!(bytes >= 10 * 16, "{bytes}");
        assert_eq!(
            next,
            Decision::Denied {
                retry_after: Duration::from_millis(950),
                reset: Duration::from_millis(995)
            }
        );
    }
}
