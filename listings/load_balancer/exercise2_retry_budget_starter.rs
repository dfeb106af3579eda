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

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use balancer::{Balancer, Chooser, RetryPolicy};
use may_patterns::backend::BackendConfig;

/// Retries the budget allows per request (Finagle's and Envoy's default).
const RATIO: f64 = 0.2;
/// Retries allowed each second whatever the traffic, so that a service
/// with few requests can still retry.
const MIN_PER_SECOND: u64 = 10;
/// The most retries the requests' deposits may bank.
const MAX_BANKED: u64 = 20;
/// GETs each run of the demo sends, one after another.
const REQUESTS: usize = 400;
/// The pool, in order; a failed request is retried on the next one.
const BACKENDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Each scenario: what it is, and the share of its requests each backend
/// answers with a `500`.
const SCENARIOS: [(&str, [f64; 4]); 2] = [
    ("delta fails half its requests", [0.0, 0.0, 0.0, 0.5]),
    ("every backend fails every request", [1.0; 4]),
];

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

/// The chapter's round-robin, whatever the key.
struct InTurn(AtomicUsize);

impl Chooser for InTurn {
    fn choose(&self, _key: &str, up: &[&str]) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed) % up.len()
    }
}

/// The baseline: a failed request fails.
struct NoRetries;

impl RetryPolicy for NoRetries {
    fn record_request(&self) {}
    fn may_retry(&self) -> bool {
        false
    }
}

/// What `REQUESTS` GETs cost: attempts counted at the backends, and
/// requests whose answer was not a `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cost {
    attempts: u64,
    failed: usize,
}

/// `REQUESTS` GETs through a balancer over four fresh backends, backend
/// `i` failing `fail[i]` of its requests, retried by `retry`.
fn run(fail: [f64; 4], retry: impl RetryPolicy) -> io::Result<Cost> {
    let configs = BACKENDS.iter().zip(fail).map(|(name, fail)| {
        let mut config = BackendConfig::new(name, Duration::ZERO);
        config.fail_fraction = fail;
        config
    });
    let upstreams = balancer::start_backends(configs.collect())?;
    let all: Vec<_> = upstreams.iter().collect();
    let balancer = Balancer::start(&all, InTurn(AtomicUsize::new(0)), retry)?;
    let mut failed = 0;
    for _ in 0..REQUESTS {
        if balancer::get(balancer.addr, None)?.status != 200 {
            failed += 1;
        }
    }
    let read = |u: &balancer::Upstream| u.backend.stats.requests.load(Ordering::SeqCst);
    let attempts = upstreams.iter().map(read).sum();
    Ok(Cost { attempts, failed })
}

/// Each scenario without retries, then with the policy.
fn demo() -> io::Result<Vec<(&'static str, Cost, Cost)>> {
    let mut rows = Vec::new();
    for (scenario, fail) in SCENARIOS {
        rows.push((scenario, run(fail, NoRetries)?, run(fail, RetryBudget)?));
    }
    Ok(rows)
}

fn main() {
    balancer::configure_may();
    println!(
        "{REQUESTS} GETs per run, round-robin over {} backends, at most one retry each; \
         budget: {RATIO} retries per request + {MIN_PER_SECOND} per second, {MAX_BANKED} banked",
        BACKENDS.len()
    );
    let rows = match demo() {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("exercise2_retry_budget_starter: the demo failed: {e}");
            std::process::exit(1);
        }
    };
    for (scenario, none, policy) in rows {
        println!("  {scenario}:");
        for (label, cost) in [("no retries", none), ("the policy", policy)] {
            let per_request = cost.attempts as f64 / REQUESTS as f64;
            println!(
                "    {label}: {} attempts ({per_request:.2} per request), {} failed",
                cost.attempts, cost.failed
            );
        }
    }
}

#[cfg(test)]
mod tests {
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
