//! Step 3: a retry budget: retries may add at most 20% to the calls.
//!
//! Step 2's outage again, with step 2's two retry policies, each with and
//! without a `RetryBudget` shared by every caller (Finagle's design, on this
//! run's scale: 20% of the calls in the last 100 ms, plus 10 retries a
//! second). A retry the budget refuses is not made: the call fails with what
//! it got.

use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use may::go;
use may_patterns::backend::{Backend, BackendConfig, Behaviour};
use may_patterns::breaker::{Jitter, RetryBudget, RetryPolicy};
use may_patterns::http::{self, Limits};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::timeout::for_may;

/// Why a call to the dependency did not succeed.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    TimedOut,
    Status(u16),
    Io(String),
}

/// `GET /search?q=lamp` on the dependency; every step bounded by `timeout`.
fn call(addr: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    let timeout = for_may(timeout);
    let io = |e: std::io::Error| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::TimedOut,
        _ => Failure::Io(e.to_string()),
    };
    let mut stream = may_patterns::net::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    http::write_request(&mut stream, "GET", "/search?q=lamp", "backend", &[], b"").map_err(io)?;
    let response =
        http::read_response(&mut BufReader::new(stream), &Limits::default()).map_err(io)?;
    match response.status {
        200 => Ok(()),
        status => Err(Failure::Status(status)),
    }
}

/// Worth another try: the next attempt may meet a backend that recovered.
/// (A `4xx` would fail the same way again.) Only for idempotent calls: this
/// `GET` changes nothing, so sending it twice is harmless.
fn retryable(failure: &Failure) -> bool {
    match failure {
        Failure::TimedOut | Failure::Io(_) => true,
        Failure::Status(status) => *status >= 500,
    }
}

/// How a caller retries a failed call.
#[derive(Debug, Clone, Copy)]
enum Retries {
    /// Up to this many more attempts, at once.
    Immediate(u32),
    /// Up to `max_retries` more, each after the policy's delay.
    Backoff(RetryPolicy),
}

impl Retries {
    fn max(&self) -> u32 {
        match self {
            Retries::Immediate(n) => *n,
            Retries::Backoff(policy) => policy.max_retries,
        }
    }

    /// The wait before retry number `retry` (from 0), if any.
    fn wait(&self, retry: u32, rng: &mut fastrand::Rng) -> Option<Duration> {
        match self {
            Retries::Immediate(_) => None,
            // Never under 1 ms: may cannot sleep a coroutine for less.
            Retries::Backoff(policy) => Some(policy.delay(retry, rng)),
        }
    }
}

/// How a call ended, and how many requests it sent to get there.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    result: Result<(), Failure>,
    sent: u32,
}

// ANCHOR: retry
/// `call`, retried as `retries` says while `budget` (shared by every caller
/// of this dependency) has room. `rng` is this caller's own.
fn call_with_retries(
    addr: SocketAddr,
    timeout: Duration,
    retries: Retries,
    budget: Option<&RetryBudget>,
    rng: &mut fastrand::Rng,
) -> Outcome {
    if let Some(budget) = budget {
        budget.record_call(); // each call earns 0.2 retries
    }
    let mut retry = 0;
    loop {
        let result = call(addr, timeout);
        let sent = retry + 1;
        match result {
            // `try_retry` last: it spends the budget when it says yes.
            Err(failure)
                if retry < retries.max()
                    && retryable(&failure)
                    && budget.is_none_or(|b| b.try_retry()) =>
            {
                if let Some(wait) = retries.wait(retry, rng) {
                    may::coroutine::sleep(wait);
                    // A coroutine wakes from a sleep on may's timer thread:
                    // go back to a worker before connecting (see the pitfalls).
                    may::coroutine::yield_now();
                }
                retry += 1;
            }
            result => return Outcome { result, sent },
        }
    }
}
// ANCHOR_END: retry

// ANCHOR: outage
/// What one run did to the caller and to the backend.
#[derive(Debug, Default, Clone, Copy)]
struct Report {
    calls: u64,
    failed: u64,
    /// Requests the backend received, all told.
    requests: u64,
    /// Calls whose first request met the outage, and the requests they
    /// sent, first attempts and retries.
    met_outage: u64,
    sent_by_them: u64,
}

impl Report {
    /// Requests sent per call that met the failing backend.
    fn amplification(&self) -> f64 {
        self.sent_by_them as f64 / self.met_outage.max(1) as f64
    }
}

/// One call every `every` against a fresh backend that fails every request
/// from call number `outage.start` until call number `outage.end` starts;
/// each call retried as `retries` says, within `budget` if there is one.
fn run(
    calls: u64,
    every: Duration,
    outage: Range<u64>,
    retries: Retries,
    budget: Option<Arc<RetryBudget>>,
) -> Report {
    // Answers at once: what the run measures is the retries, not a delay.
    let config = BackendConfig::new("dependency", Duration::ZERO);
    let healthy = config.behaviour();
    let failing = Behaviour {
        fail_fraction: 1.0,
        ..healthy
    };
    let backend = Backend::start(config).expect("a backend starts");
    let (tx, rx) = may::sync::mpsc::channel();
    for i in 0..calls {
        if i == outage.start {
            backend.set_behaviour(failing);
        }
        if i == outage.end {
            backend.set_behaviour(healthy);
        }
        let (addr, tx, budget) = (backend.addr, tx.clone(), budget.clone());
        go!(move || {
            let mut rng = fastrand::Rng::with_seed(i); // a fixed seed per call
            let budget = budget.as_deref();
            let _ = tx.send(call_with_retries(addr, TIMEOUT, retries, budget, &mut rng));
        });
        std::thread::sleep(every); // `run` is called from a thread, not a coroutine
    }
    drop(tx);
    let mut report = Report {
        calls,
        ..Report::default()
    };
    for outcome in rx {
        report.failed += u64::from(outcome.result.is_err());
        // Only a failed request is retried: a call that sent more than one,
        // or failed, met the outage with its first.
        if outcome.sent > 1 || outcome.result.is_err() {
            report.met_outage += 1;
            report.sent_by_them += u64::from(outcome.sent);
        }
    }
    report.requests = backend.stats.requests.load(Ordering::SeqCst);
    report
}
// ANCHOR_END: outage

fn print(name: &str, r: &Report) {
    println!(
        "{name:<25} {} calls, ~{} failed; ~{} met the outage and made ~{} requests: ~{:.2}x (~{} in all)",
        r.calls,
        r.failed,
        r.met_outage,
        r.sent_by_them,
        r.amplification(),
        r.requests
    );
}

// ANCHOR: main
const CALLS: u64 = 100;
const EVERY: Duration = Duration::from_millis(3);
/// Calls 30 to 69 (about 120 ms) meet a backend that answers every request
/// with `500`.
const OUTAGE: Range<u64> = 30..70;
/// Generous: the backend answers at once; only a stuck call should meet it.
const TIMEOUT: Duration = Duration::from_secs(1);

fn main() {
    // One worker: may 0.3.51's connect can race a second worker (pitfalls).
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    let immediate = Retries::Immediate(3);
    let backoff = Retries::Backoff(RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
        jitter: Jitter::Full,
    });
    // 20% of the calls of the last 100 ms, plus 10 retries a second.
    let budget = || {
        let budget = RetryBudget::new(0.2, 10.0, Duration::from_millis(100));
        Some(Arc::new(budget.expect("a valid budget")))
    };
    for (name, retries) in [("immediate", immediate), ("backoff", backoff)] {
        let without = run(CALLS, EVERY, OUTAGE, retries, None);
        print(&format!("3 {name} retries:"), &without);
        let within = run(CALLS, EVERY, OUTAGE, retries, budget());
        print("  within a 20% budget:", &within);
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::{configure_once, TEST_SETTINGS};

    /// One worker, as in `main`: these tests make hundreds of connects.
    fn configure_for_tests() {
        configure_once(Settings {
            workers: 1,
            ..TEST_SETTINGS
        });
    }

    #[test]
    fn a_budget_bounds_the_load_whatever_the_policy_allows() {
        configure_for_tests();
        // A total outage: without a budget every call sends 4 requests.
        // The window holds the whole run: at most 20 retries for 100 calls.
        let budget = RetryBudget::new(0.2, 0.0, Duration::from_secs(10)).unwrap();
        let report = run(
            100,
            EVERY,
            0..100,
            Retries::Immediate(3),
            Some(Arc::new(budget)),
        );
        assert_eq!((report.failed, report.met_outage), (100, 100), "{report:?}");
        assert_eq!((report.sent_by_them, report.requests), (120, 120));
        assert_eq!(report.amplification(), 1.2);
    }

    #[test]
    fn the_budget_is_earned_per_call_and_spent_per_retry() {
        configure_for_tests();
        let mut config = BackendConfig::new("down", Duration::ZERO);
        config.fail_fraction = 1.0;
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        // 50%: two calls earn one retry; the test ends well within 10 s.
        let budget = RetryBudget::new(0.5, 0.0, Duration::from_secs(10)).unwrap();
        let (sent, denied) = go!(move || {
            let mut rng = fastrand::Rng::with_seed(1);
            let sent: Vec<u32> = (0..4)
                .map(|_| {
                    let retries = Retries::Immediate(3);
                    call_with_retries(addr, TIMEOUT, retries, Some(&budget), &mut rng).sent
                })
                .collect();
            (sent, budget.denied())
        })
        .join()
        .unwrap();
        // Call 1 earns 0.5 retries: none. Call 2 brings it to 1: one retry,
        // then none. Call 3: 1.5 allowed, 1 used: none. Call 4: one.
        // Each call ends on one refusal.
        assert_eq!(sent, [1, 2, 1, 2]);
        assert_eq!(denied, 4);
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 6);
    }
}
