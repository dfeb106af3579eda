//! Step 3: a sliding window counter. Two counts instead of a log: this
//! window's, and the previous one's weighted by how much of it the sliding
//! window still covers.

use may_patterns::ratelimit::trace::{adversarial, replay, Report};
use may_patterns::ratelimit::{Algorithm, Decision, Quota, SlidingCounter};
use std::time::Duration;

// ANCHOR: main
/// The sliding counter on the chapter's trace.
fn on_the_trace(quota: Quota) -> Report {
    replay(&SlidingCounter::new(quota), &adversarial(quota))
}

/// A full window at 500 ms, then requests at 1.3 s: the previous ten still
/// weigh 10 × 0.7 = 7, so three more fit.
fn the_weighted_previous_window(quota: Quota) -> (u64, Decision) {
    let limiter = SlidingCounter::new(quota);
    let mut key = limiter.new_state(Duration::ZERO);
    limiter.decide(&mut key, Duration::from_millis(500), quota.rate());
    let at = Duration::from_millis(1300);
    let mut admitted = 0;
    loop {
        match limiter.decide(&mut key, at, 1) {
            denied @ Decision::Denied { .. } => return (admitted, denied),
            _ => admitted += 1,
        }
    }
}

fn main() {
    let quota = Quota::per_second(10, 10).expect("a valid quota");
    println!("{}", on_the_trace(quota));
    let (admitted, denied) = the_weighted_previous_window(quota);
    println!("at 1.3s after a full window at 500ms: {admitted} admitted, then {denied:?}");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::ratelimit::trace::Phase;

    #[test]
    fn the_estimate_holds_at_the_edge_but_not_after_a_bunched_window() {
        let report = on_the_trace(Quota::per_second(10, 10).unwrap());
        let got = Phase::ALL.map(|p| {
            let r = report.phase(p);
            (r.offered, r.admitted, r.most_in_a_period)
        });
        // 18 in one period after the idle burst: the approximation's error.
        assert_eq!(got, [(20, 10, 10), (80, 37, 10), (40, 19, 18)]);
    }

    #[test]
    fn the_previous_window_counts_by_its_overlap() {
        let (admitted, denied) = the_weighted_previous_window(Quota::per_second(10, 10).unwrap());
        assert_eq!(admitted, 3);
        assert_eq!(
            denied,
            Decision::Denied {
                retry_after: Duration::from_millis(100),
                reset: Duration::from_millis(1700)
            }
        );
    }
}
