//! What both files of exercise 2 share: the budget's parameters, the
//! scenarios, a round-robin chooser, and the demo, which runs whichever
//! retry policy it is given. Included with
//! `#[path = "exercise2_storm_demo.rs"] mod demo;`, after `mod balancer;`.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::balancer::{self, Balancer, Chooser, RetryPolicy};
use may_patterns::backend::BackendConfig;

/// Retries the budget allows per request (Finagle's and Envoy's default).
pub const RATIO: f64 = 0.2;
/// Retries allowed each second whatever the traffic, so that a service
/// with few requests can still retry.
pub const MIN_PER_SECOND: u64 = 10;
/// The most retries the requests' deposits may bank.
pub const MAX_BANKED: u64 = 20;
/// GETs each run of the demo sends, one after another.
pub const REQUESTS: usize = 400;
/// The pool, in order; a failed request is retried on the next one.
pub const BACKENDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Each scenario: what it is, and the share of its requests each backend
/// answers with a `500`.
pub const SCENARIOS: [(&str, [f64; 4]); 2] = [
    ("delta fails half its requests", [0.0, 0.0, 0.0, 0.5]),
    ("every backend fails every request", [1.0; 4]),
];

/// The chapter's round-robin, whatever the key.
struct InTurn(AtomicUsize);

impl Chooser for InTurn {
    fn choose(&self, _key: &str, up: &[&str]) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed) % up.len()
    }
}

/// The baseline: a failed request fails.
pub struct NoRetries;

impl RetryPolicy for NoRetries {
    fn record_request(&self) {}
    fn may_retry(&self) -> bool {
        false
    }
}

/// What `REQUESTS` GETs cost: attempts counted at the backends, and
/// requests whose answer was not a `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub attempts: u64,
    pub failed: usize,
}

// ANCHOR: run
/// `REQUESTS` GETs through a balancer over four fresh backends, backend
/// `i` failing `fail[i]` of its requests, retried by `retry`.
pub fn run(fail: [f64; 4], retry: impl RetryPolicy) -> io::Result<Cost> {
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
// ANCHOR_END: run

/// Each scenario without retries, then with the policy `policy` makes.
fn demo<P: RetryPolicy>(policy: impl Fn() -> P) -> io::Result<Vec<(&'static str, Cost, Cost)>> {
    let mut rows = Vec::new();
    for (scenario, fail) in SCENARIOS {
        rows.push((scenario, run(fail, NoRetries)?, run(fail, policy())?));
    }
    Ok(rows)
}

/// The demo both files run, with the policy `policy` makes (a fresh one
/// per run). `program` names the example in an error.
pub fn print<P: RetryPolicy>(policy: impl Fn() -> P, program: &str) {
    balancer::configure_may();
    println!(
        "{REQUESTS} GETs per run, round-robin over {} backends, at most one retry each; \
         budget: {RATIO} retries per request + {MIN_PER_SECOND} per second, {MAX_BANKED} banked",
        BACKENDS.len()
    );
    let rows = match demo(policy) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("{program}: the demo failed: {e}");
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
