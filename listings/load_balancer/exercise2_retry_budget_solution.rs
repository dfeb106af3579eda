//! Exercise 2 (solution): a retry budget. A retry helps when one backend
//! fails and hurts when all of them do: then every request costs two
//! attempts, just when the backends are overloaded (a retry storm). The
//! budget caps retries at a share of the requests, plus a small floor per
//! second, as Finagle's `RetryBudget` and Envoy's `retry_budget` do: with
//! one backend failing it retries every failure, with all of them failing
//! it adds a fifth to the load instead of doubling it.
//!
//! Run it: `cargo run --example exercise2_retry_budget_solution`

#[path = "exercise_balancer.rs"]
mod balancer;

#[path = "exercise2_storm_demo.rs"]
mod demo;

use std::sync::{Mutex, MutexGuard};

use balancer::RetryPolicy;
use demo::{MAX_BANKED, MIN_PER_SECOND, RATIO};
use may_patterns::clock::{Clock, ManualClock};
use may_patterns::ratelimit::{Algorithm, Quota, TokenBucket, TokenBucketState};

// ANCHOR: budget
/// A retry, in the budget's unit: deposits are fractions of a retry, kept
/// as whole thousandths so that five deposits of 0.2 make exactly one.
const RETRY: u64 = 1000;

/// At most `ratio` retries per request, plus `min_per_second` each second
/// (a bucket holding at most one second's worth), with at most
/// `max_banked` retries' worth of deposits banked.
struct RetryBudget<C: Clock> {
    /// Thousandths of a retry each request deposits.
    deposit: u64,
    /// The most thousandths the deposits may hold: a long healthy spell
    /// must not bank a storm for the moment every backend fails.
    cap: u64,
    /// The floor: the rate-limiting chapter's token bucket, one key only.
    floor: TokenBucket,
    /// Held for a few arithmetic steps, never across I/O or a yield.
    state: Mutex<Balance>,
    clock: C,
}

/// What the budget holds now.
struct Balance {
    /// Thousandths of a retry deposited and not yet spent.
    banked: u64,
    floor: TokenBucketState,
}

impl<C: Clock> RetryBudget<C> {
    fn new(ratio: f64, min_per_second: u64, max_banked: u64, clock: C) -> RetryBudget<C> {
        let quota = Quota::per_second(min_per_second, min_per_second);
        let floor = TokenBucket::new(quota.expect("a floor of at least 1 per second"));
        let state = Balance {
            banked: 0,
            floor: floor.new_state(clock.now()),
        };
        RetryBudget {
            deposit: (ratio * RETRY as f64).round() as u64,
            cap: max_banked * RETRY,
            floor,
            state: Mutex::new(state),
            clock,
        }
    }

    fn balance(&self) -> MutexGuard<'_, Balance> {
        // Nothing panics while holding it; a poisoned lock still holds a value.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Clock> RetryPolicy for RetryBudget<C> {
    fn record_request(&self) {
        let mut balance = self.balance();
        balance.banked = (balance.banked + self.deposit).min(self.cap);
    }

    fn may_retry(&self) -> bool {
        let mut balance = self.balance();
        if balance.banked >= RETRY {
            balance.banked -= RETRY;
            return true;
        }
        let now = self.clock.now();
        self.floor.decide(&mut balance.floor, now, 1).is_admitted()
    }
}
// ANCHOR_END: budget

/// The budget the demo runs with. Its clock stands still, so the floor
/// allows its ten retries once and the counts are the same on every run.
fn budget() -> RetryBudget<ManualClock> {
    RetryBudget::new(RATIO, MIN_PER_SECOND, MAX_BANKED, ManualClock::new())
}

fn main() {
    demo::print(budget, "exercise2_retry_budget_solution");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::demo::{run, Cost, NoRetries, REQUESTS, SCENARIOS};
    use super::*;

    /// The budget and a handle on its clock.
    fn budget_and_clock() -> (RetryBudget<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let budget = RetryBudget::new(RATIO, MIN_PER_SECOND, MAX_BANKED, clock.clone());
        (budget, clock)
    }

    /// How many retries in a row the budget allows now (at most 1,000).
    fn retries_in_a_row(budget: &impl RetryPolicy) -> u64 {
        (0..1_000).take_while(|_| budget.may_retry()).count() as u64
    }

    // ANCHOR: tests
    #[test]
    fn every_request_failing_gets_a_fifth_of_a_retry_plus_the_floor() {
        let (budget, _clock) = budget_and_clock();
        let mut retries = 0;
        for _ in 0..10_000 {
            budget.record_request();
            retries += u64::from(budget.may_retry());
        }
        assert_eq!(retries, 2_000 + MIN_PER_SECOND);
    }

    #[test]
    fn with_no_requests_the_floor_allows_min_per_second() {
        let (budget, _clock) = budget_and_clock();
        assert_eq!(retries_in_a_row(&budget), MIN_PER_SECOND);
    }

    #[test]
    fn the_floor_refills_with_time() {
        let (budget, clock) = budget_and_clock();
        assert_eq!(retries_in_a_row(&budget), MIN_PER_SECOND);
        clock.advance(Duration::from_millis(100)); // a tenth of a second: one
        assert_eq!(retries_in_a_row(&budget), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(retries_in_a_row(&budget), MIN_PER_SECOND);
    }

    #[test]
    fn a_long_healthy_spell_then_an_hour_of_quiet_bank_no_storm() {
        let (budget, clock) = budget_and_clock();
        for _ in 0..100_000 {
            budget.record_request();
        }
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(retries_in_a_row(&budget), MAX_BANKED + MIN_PER_SECOND);
    }

    #[test]
    fn over_the_wire_one_failing_backend_is_covered_and_a_storm_is_capped() {
        balancer::configure_may();
        let [(_, one_failing), (_, all_failing)] = SCENARIOS;
        let alone = run(one_failing, NoRetries).unwrap();
        assert!(alone.failed > 0);
        let covered = run(one_failing, budget()).unwrap();
        let every_failure_once_more = REQUESTS as u64 + alone.failed as u64;
        assert_eq!(
            covered,
            Cost {
                attempts: every_failure_once_more,
                failed: 0
            }
        );

        let storm = run(all_failing, budget()).unwrap();
        let budgeted = REQUESTS as u64 / 5 + MIN_PER_SECOND;
        let attempts = REQUESTS as u64 + budgeted;
        assert_eq!(
            storm,
            Cost {
                attempts,
                failed: REQUESTS
            }
        );
    }
    // ANCHOR_END: tests
}
