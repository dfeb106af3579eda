//! Step 1: calls to a dependency guarded by a timeout, and nothing else.
//!
//! A caller starts one call every millisecond, as users arrive, against a
//! healthy backend and then against one that hangs. The timeout turns "wait
//! forever" into "wait `TIMEOUT`", but every waiting call still holds a
//! coroutine and a socket for that long: the caller pays for the outage in
//! coroutines tied up.

use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::http::{self, Limits};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::timeout::for_may;

// ANCHOR: call
/// Why a call to the dependency did not succeed.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// No answer within the timeout.
    TimedOut,
    /// An answer, but not a `200`.
    Status(u16),
    /// Refused, reset, malformed: anything else.
    Io(String),
}

/// `GET /search?q=lamp` on the dependency; every step bounded by `timeout`.
fn call(addr: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    // may keeps a socket's timeouts in whole milliseconds and reads 0 as
    // "none": round up, or a timeout under 1 ms would never fire.
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
// ANCHOR_END: call

// ANCHOR: burst
/// What a run of calls cost the caller.
#[derive(Debug, Default)]
struct Report {
    calls: usize,
    ok: usize,
    timed_out: usize,
    other: usize,
    slowest: Duration,
    /// The most calls waiting at the same moment: coroutines tied up.
    peak_in_flight: usize,
}

/// Start one call every `every` (an open loop: callers do not wait for each
/// other, as users do not), and wait for all of them.
fn run(addr: SocketAddr, calls: usize, every: Duration, timeout: Duration) -> Report {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = may::sync::mpsc::channel();
    for _ in 0..calls {
        let (in_flight, peak, tx) = (in_flight.clone(), peak.clone(), tx.clone());
        go!(move || {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let started = Instant::now();
            let result = call(addr, timeout);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send((result, started.elapsed()));
        });
        std::thread::sleep(every); // `run` is called from a thread, not a coroutine
    }
    drop(tx);
    let mut report = Report {
        calls,
        ..Report::default()
    };
    for (result, took) in rx {
        match result {
            Ok(()) => report.ok += 1,
            Err(Failure::TimedOut) => report.timed_out += 1,
            Err(_) => report.other += 1,
        }
        report.slowest = report.slowest.max(took);
    }
    report.peak_in_flight = peak.load(Ordering::SeqCst);
    report
}
// ANCHOR_END: burst

fn print(name: &str, r: &Report) {
    println!(
        "{name}: {} calls, {} ok, {} timed out, {} other failures; slowest {:.1?}; at most ~{} in flight",
        r.calls, r.ok, r.timed_out, r.other, r.slowest, r.peak_in_flight
    );
}

// ANCHOR: main
const CALLS: usize = 200;
const EVERY: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_millis(100);

fn main() {
    // One worker: may 0.3.51's connect can race a second worker (pitfalls).
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    let healthy = Backend::start(BackendConfig::new("healthy", Duration::from_millis(5)))
        .expect("a backend starts");
    let mut hanging = BackendConfig::new("hanging", Duration::from_millis(5));
    hanging.hang = true; // accepts, reads the request, never answers
    let hanging = Backend::start(hanging).expect("a backend starts");

    print("healthy (5ms)", &run(healthy.addr, CALLS, EVERY, TIMEOUT));
    print("hanging", &run(hanging.addr, CALLS, EVERY, TIMEOUT));
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::TEST_SETTINGS;

    /// One worker, as in `main`: these tests make dozens of connects at once.
    fn configure_for_tests() {
        configure_once(Settings {
            workers: 1,
            ..TEST_SETTINGS
        });
    }

    #[test]
    fn a_call_reports_success_a_status_and_a_refused_connection() {
        configure_for_tests();
        let ok = Backend::start(BackendConfig::new("ok", Duration::from_millis(1))).unwrap();
        let mut failing = BackendConfig::new("bad", Duration::ZERO);
        failing.fail_fraction = 1.0;
        let bad = Backend::start(failing).unwrap();
        let gone = {
            let backend = Backend::start(BackendConfig::new("gone", Duration::ZERO)).unwrap();
            backend.addr // dropped here: nothing listens on it any more
        };
        let (a, b) = (ok.addr, bad.addr);
        let results = go!(move || {
            let t = Duration::from_secs(2);
            (call(a, t), call(b, t), call(gone, t))
        })
        .join()
        .unwrap();
        assert_eq!(results.0, Ok(()));
        assert_eq!(results.1, Err(Failure::Status(500)));
        assert!(matches!(results.2, Err(Failure::Io(_))), "{:?}", results.2);
    }

    #[test]
    fn against_a_hanging_backend_every_call_waits_the_timeout_and_they_pile_up() {
        configure_for_tests();
        let mut config = BackendConfig::new("hang", Duration::ZERO);
        config.hang = true;
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        let timeout = Duration::from_millis(50);
        // From the test's thread, as `main` does: the 1 ms pacing sleeps are
        // thread sleeps (many short coroutine sleeps risk may's sleep race).
        let report = run(addr, 40, Duration::from_millis(1), timeout);
        assert_eq!((report.ok, report.timed_out, report.other), (0, 40, 0));
        assert!(report.slowest >= timeout, "{:?}", report.slowest);
        assert!(
            report.slowest < Duration::from_secs(2),
            "{:?}",
            report.slowest
        );
        // 40 calls started within ~40-80 ms, each waiting 50 ms: many at once.
        assert!(report.peak_in_flight >= 15, "{}", report.peak_in_flight);
    }

    #[test]
    fn a_sub_millisecond_timeout_still_fires() {
        configure_for_tests();
        let mut config = BackendConfig::new("hang", Duration::ZERO);
        config.hang = true;
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        let started = Instant::now();
        let result = go!(move || call(addr, Duration::from_micros(300)))
            .join()
            .unwrap();
        assert_eq!(result, Err(Failure::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
