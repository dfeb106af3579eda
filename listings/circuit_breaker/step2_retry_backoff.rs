//! Step 2: retry failed calls: at once, or after an exponential backoff with
//! full jitter.
//!
//! The backend is healthy, fails every request for a while (an outage), and
//! recovers. The same open loop of callers as in step 1 runs three times:
//! without retries, with 3 immediate retries (the loop most code starts
//! with), and with 3 retries spaced by `RetryPolicy`'s exponential backoff
//! with full jitter. The requests made per call that met the outage are the
//! load amplification on the failing backend.

use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use may::go;
use may_patterns::backend::{Backend, BackendConfig, Behaviour};
use may_patterns::breaker::{Jitter, RetryPolicy};
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

// ANCHOR: retry
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

/// `call`, retried as `retries` says. `rng` is this caller's own: a seeded
/// `fastrand::Rng` (its global functions use a thread-local, which a
/// coroutine must not rely on across a park).
fn call_with_retries(
    addr: SocketAddr,
    timeout: Duration,
    retries: Retries,
    rng: &mut fastrand::Rng,
) -> Outcome {
    let mut retry = 0;
    loop {
        let result = call(addr, timeout);
        let sent = retry + 1;
        match result {
            Err(failure) if retry < retries.max() && retryable(&failure) => {
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
/// from call number `outage.start` until call number `outage.end` starts.
fn run(calls: u64, every: Duration, outage: Range<u64>, retries: Retries) -> Report {
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
        let (addr, tx) = (backend.addr, tx.clone());
        go!(move || {
            let mut rng = fastrand::Rng::with_seed(i); // a fixed seed per call
            let _ = tx.send(call_with_retries(addr, TIMEOUT, retries, &mut rng));
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
        "{name:<22} {} calls, ~{} failed; ~{} met the outage and made ~{} requests: ~{:.2}x (~{} in all)",
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
    let none = Retries::Immediate(0);
    let immediate = Retries::Immediate(3);
    let backoff = Retries::Backoff(RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
        jitter: Jitter::Full,
    });
    print("no retries:", &run(CALLS, EVERY, OUTAGE, none));
    print(
        "3 immediate retries:",
        &run(CALLS, EVERY, OUTAGE, immediate),
    );
    print("3 backoff retries:", &run(CALLS, EVERY, OUTAGE, backoff));
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
    fn only_failures_that_may_pass_are_retried() {
        assert!(retryable(&Failure::TimedOut));
        assert!(retryable(&Failure::Status(503)));
        assert!(retryable(&Failure::Io("reset".into())));
        assert!(!retryable(&Failure::Status(404)));
    }

    #[test]
    fn a_failing_call_is_sent_once_plus_max_retries_times() {
        configure_for_tests();
        let mut config = BackendConfig::new("down", Duration::ZERO);
        config.fail_fraction = 1.0;
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        let backoff = Retries::Backoff(RetryPolicy::full_jitter(
            3,
            Duration::from_millis(5),
            Duration::from_millis(20),
        ));
        let outcomes = go!(move || {
            let mut rng = fastrand::Rng::with_seed(1);
            [Retries::Immediate(3), backoff].map(|r| call_with_retries(addr, TIMEOUT, r, &mut rng))
        })
        .join()
        .unwrap();
        let failed = Outcome {
            result: Err(Failure::Status(500)),
            sent: 4,
        };
        assert_eq!(outcomes, [failed.clone(), failed]);
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 8);
    }

    // `run` starts its calls from the test's thread: its pacing sleeps are
    // thread sleeps, as in `main`.
    #[test]
    fn in_an_outage_that_outlasts_the_retries_every_policy_sends_one_plus_max_retries() {
        configure_for_tests();
        let backoff =
            RetryPolicy::full_jitter(3, Duration::from_millis(5), Duration::from_millis(20));
        for retries in [Retries::Immediate(3), Retries::Backoff(backoff)] {
            let report = run(40, EVERY, 0..40, retries);
            assert_eq!((report.failed, report.met_outage), (40, 40), "{retries:?}");
            assert_eq!((report.sent_by_them, report.requests), (160, 160));
            assert_eq!(report.amplification(), 4.0);
        }
    }

    #[test]
    fn immediate_retries_multiply_the_load_during_a_short_outage_too() {
        configure_for_tests();
        let report = run(80, EVERY, 20..70, Retries::Immediate(3));
        // Most calls in the outage send all 4 requests into it; those near
        // its end have retries that land after it. Loose: timing varies.
        assert!(report.amplification() > 2.0, "{report:?}");
        assert!(report.failed >= 10, "{report:?}");
    }
}
