//! Exercise 2 (starter): a retry budget. A retry helps when one backend
//! fails and hurts when all of them do: then every request costs two
//! attempts, just when the backends are overloaded (a retry storm). A
//! budget caps retries at a share of recent requests, as Finagle's
//! `RetryBudget` and Envoy's `retry_budget` do. The policy retries every
//! failure for now, as the demo shows. TODO: write `RetryBudget`.
//!
//! Run it: `cargo run --example exercise2_retry_budget_starter`

#[path = "exercise_balancer.rs"]
mod balancer;

#[path = "exercise2_storm_demo.rs"]
mod demo;

use balancer::RetryPolicy;

// ANCHOR: budget
/// At most `RATIO` retries per request, plus `MIN_PER_SECOND` each
/// second, with at most `MAX_BANKED` banked.
struct RetryBudget;

impl RetryPolicy for RetryBudget {
    fn record_request(&self) {
        // TODO: each request adds RATIO of a retry to the budget.
    }

    fn may_retry(&self) -> bool {
        // TODO: a retry takes one from the budget, or from the floor.
        true
    }
}
// ANCHOR_END: budget

fn main() {
    demo::print(|| RetryBudget, "exercise2_retry_budget_starter");
}

#[cfg(test)]
mod tests {
    use super::demo::{run, Cost, REQUESTS, SCENARIOS};
    use super::*;

    #[test]
    fn the_starter_retries_every_failure() {
        balancer::configure_may();
        let all_fail = run(SCENARIOS[1].1, RetryBudget).unwrap();
        let every_retry = 2 * REQUESTS as u64;
        assert_eq!(
            all_fail,
            Cost {
                attempts: every_retry,
                failed: REQUESTS
            }
        );
    }
}
