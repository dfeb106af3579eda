//! Step 2: retry failed calls: at once, or after an exponential backoff with
//! full jitter.
//!
//! The backend is healthy, fails every request for a while (an outage), and
//! recovers. The same open loop of callers as in step 1 runs three times:
//! without retries, with 3 immediate retries, and with 3 retries spaced by
//! `RetryPolicy`'s exponential backoff with full jitter. What the failing
//! backend received per call made is the load amplification.

use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use may::go;
use may::net::TcpStream;
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
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
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

/// `call`, retried as `policy` says. `rng` is this caller's own: a seeded
/// `fastrand::Rng` (its global functions use a thread-local, which a
/// coroutine must not rely on across a park).
fn call_with_retries(
    addr: SocketAddr,
    timeout: Duration,
    policy: &RetryPolicy,
    rng: &mut fastrand::Rng,
) -> Result<(), Failure> {
    let mut retry = 0;
    loop {
        match call(addr, timeout) {
            Ok(()) => return Ok(()),
            Err(failure) if retry == policy.max_retries || !retryable(&failure) => {
                return Err(failure)
            }
            Err(_) => {
                // Never under 1 ms: `delay` rounds up to may's sleep floor.
                may::coroutine::sleep(policy.delay(retry, rng));
                retry += 1;
            }
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
    /// Calls started while the backend was failing, and the requests it
    /// received meanwhile.
    outage_calls: u64,
    outage_requests: u64,
}

impl Report {
    /// Requests the failing backend received per call made during the outage.
    fn amplification(&self) -> f64 {
        self.outage_requests as f64 / self.outage_calls.max(1) as f64
    }
}

/// One call every `every` against a fresh backend that fails every request
/// while the call number is in `outage` (to the end if `outage.end >= calls`).
fn run(calls: u64, every: Duration, outage: Range<u64>, policy: RetryPolicy) -> Report {
    let config = BackendConfig::new("dependency", Duration::from_millis(2));
    let healthy = config.behaviour();
    let failing = Behaviour {
        fail_fraction: 1.0,
        ..healthy
    };
    let backend = Backend::start(config).expect("a backend starts");
    let requests = || backend.stats.requests.load(Ordering::SeqCst);
    let (tx, rx) = may::sync::mpsc::channel();
    let mut report = Report {
        calls,
        ..Report::default()
    };
    let mut outage_began = 0;
    for i in 0..calls {
        if i == outage.start {
            backend.set_behaviour(failing);
            outage_began = requests();
        }
        if i == outage.end {
            backend.set_behaviour(healthy);
            report.outage_requests = requests() - outage_began;
        }
        let (addr, tx) = (backend.addr, tx.clone());
        go!(move || {
            let mut rng = fastrand::Rng::with_seed(i); // a fixed seed per call
            let _ = tx.send(call_with_retries(addr, TIMEOUT, &policy, &mut rng));
        });
        may::coroutine::sleep(every);
    }
    drop(tx);
    report.failed = rx.iter().filter(Result::is_err).count() as u64;
    report.requests = requests();
    if outage.end >= calls {
        report.outage_requests = report.requests - outage_began;
    }
    report.outage_calls = outage.end.min(calls) - outage.start;
    report
}
// ANCHOR_END: outage

fn print(name: &str, r: &Report) {
    println!(
        "{name:<22} {} calls, ~{} failed; the backend got ~{} requests, ~{:.2}x the calls while it was down",
        r.calls,
        r.failed,
        r.requests,
        r.amplification()
    );
}

// ANCHOR: main
const CALLS: u64 = 300;
const EVERY: Duration = Duration::from_millis(1);
/// Calls 100 to 199 meet a backend that answers every request with `500`.
const OUTAGE: Range<u64> = 100..200;
const TIMEOUT: Duration = Duration::from_millis(100);

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let none = RetryPolicy::fixed(0, Duration::ZERO);
    let immediate = RetryPolicy::fixed(3, Duration::ZERO);
    let backoff = RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
        jitter: Jitter::Full,
    };
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
    use may_patterns::runtime::configure_for_tests;

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
        let result = go!(move || {
            let policy = RetryPolicy::fixed(3, Duration::ZERO);
            call_with_retries(addr, TIMEOUT, &policy, &mut fastrand::Rng::with_seed(1))
        })
        .join()
        .unwrap();
        assert_eq!(result, Err(Failure::Status(500)));
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn in_an_outage_that_outlasts_the_retries_every_policy_sends_one_plus_max_retries() {
        configure_for_tests();
        let backoff =
            RetryPolicy::full_jitter(3, Duration::from_millis(5), Duration::from_millis(40));
        for policy in [RetryPolicy::fixed(3, Duration::ZERO), backoff] {
            let report = go!(move || run(40, EVERY, 0..40, policy)).join().unwrap();
            assert_eq!((report.failed, report.requests), (40, 160), "{policy:?}");
            assert_eq!(report.amplification(), 4.0);
        }
    }

    #[test]
    fn immediate_retries_multiply_the_load_during_a_short_outage_too() {
        configure_for_tests();
        let immediate = RetryPolicy::fixed(3, Duration::ZERO);
        let report = go!(move || run(80, EVERY, 20..70, immediate))
            .join()
            .unwrap();
        // Most calls in the outage send all 4 requests into it; those near
        // its end have retries that land after it. Loose: timing varies.
        assert!(report.amplification() > 2.0, "{report:?}");
        assert!(report.failed >= 25, "{report:?}");
    }
}
