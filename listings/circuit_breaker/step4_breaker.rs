//! Step 4: a circuit breaker in front of the dependency.
//!
//! One caller makes 150 calls, one every 10 ms, while the backend is
//! healthy, then fails every request for 60 calls, then is healthy again.
//! The breaker trips on the failure rate of its last 10 calls, rejects calls
//! at once while open, lets 3 probes through after `open_for`, and closes
//! when they pass. Every transition arrives as an event on a subscriber's
//! channel and is printed with the call that caused it.
//!
//! The breaker reads a `ManualClock` that the loop moves: 10 ms between
//! calls plus the time each call really took. So the run does not wait 1.5 s,
//! and every count it prints is the same on every run.

use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use may_patterns::backend::{Backend, BackendConfig, Behaviour};
use may_patterns::breaker::{Breaker, BreakerConfig, CallError, Transition, Window};
use may_patterns::clock::ManualClock;
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

// ANCHOR: config
/// Trip when half of the last 10 calls failed (and not before 10 calls);
/// reject for 200 ms; then decide on 3 probes.
fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        min_calls: 10,
        failure_rate: 0.5,
        open_for: Duration::from_millis(200),
        half_open_calls: 3,
        ..BreakerConfig::default()
    }
}
// ANCHOR_END: config

// ANCHOR: protected
/// One call through the breaker. A rejected call costs nothing: no socket,
/// no wait, no request on the backend.
fn protected_call(
    breaker: &Breaker<ManualClock>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), CallError<Failure>> {
    breaker.call(|| {
        let started = Instant::now();
        let result = call(addr, timeout);
        // The breaker times a call by its own clock, from `try_call` to the
        // outcome: let that clock see how long the call really took.
        breaker.clock().advance(started.elapsed());
        result
    })
}
// ANCHOR_END: protected

/// A stretch of calls during which the backend behaves one way.
struct Phase {
    name: &'static str,
    calls: u32,
    behaviour: Behaviour,
}

fn phases(healthy: Behaviour) -> Vec<Phase> {
    let failing = Behaviour {
        fail_fraction: 1.0,
        ..healthy
    };
    vec![
        Phase {
            name: "healthy",
            calls: 30,
            behaviour: healthy,
        },
        Phase {
            name: "failing",
            calls: 60,
            behaviour: failing,
        },
        Phase {
            name: "recovered",
            calls: 60,
            behaviour: healthy,
        },
    ]
}

/// What one phase looked like from both sides.
#[derive(Debug, Default, PartialEq)]
struct PhaseReport {
    calls: u32,
    ok: u32,
    failed: u32,
    rejected: u32,
    /// Requests the backend received during the phase.
    reached: u64,
}

// ANCHOR: run
/// Time between two calls of the caller.
const GAP: Duration = Duration::from_millis(10);
const TIMEOUT: Duration = Duration::from_millis(500);

/// Run the phases through one breaker; print each transition as it comes.
/// Returns each phase's report and every transition with its call number.
fn run(phases: &[Phase], backend: &Backend) -> (Vec<PhaseReport>, Vec<(u32, Transition)>) {
    let clock = ManualClock::new();
    let breaker = Breaker::with_clock(breaker_config(), clock.clone()).expect("a valid config");
    let events = breaker.subscribe();
    let (mut reports, mut transitions) = (Vec::new(), Vec::new());
    let mut n = 0;
    for phase in phases {
        backend.set_behaviour(phase.behaviour);
        let before = backend.stats.requests.load(Ordering::SeqCst);
        let mut report = PhaseReport::default();
        for _ in 0..phase.calls {
            clock.advance(GAP);
            match protected_call(&breaker, backend.addr, TIMEOUT) {
                Ok(()) => report.ok += 1,
                Err(CallError::Failed(_)) => report.failed += 1,
                Err(CallError::Rejected(_)) => report.rejected += 1,
            }
            report.calls += 1;
            // The breaker sent any transition before the call returned.
            for transition in events.try_iter() {
                println!("call {n:>3} at {:.1?}: {transition}", transition.at);
                transitions.push((n, transition));
            }
            n += 1;
        }
        report.reached = backend.stats.requests.load(Ordering::SeqCst) - before;
        reports.push(report);
    }
    (reports, transitions)
}
// ANCHOR_END: run

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let config = BackendConfig::new("dependency", Duration::from_millis(1));
    let phases = phases(config.behaviour());
    let backend = Backend::start(config).expect("a backend starts");
    let (reports, _) = run(&phases, &backend);
    for (phase, r) in phases.iter().zip(&reports) {
        println!(
            "{:<9} {} calls: {} ok, {} failed, {} rejected at once; the backend got {} requests",
            phase.name, r.calls, r.ok, r.failed, r.rejected, r.reached
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::breaker::{Reason, State};
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_breaker_trips_probes_reopens_and_closes_at_exact_calls() {
        configure_for_tests();
        let config = BackendConfig::new("dependency", Duration::ZERO);
        let phases = phases(config.behaviour());
        let backend = Backend::start(config).unwrap();
        let (reports, transitions) = run(&phases, &backend);
        let seen: Vec<(u32, State, State)> = transitions
            .iter()
            .map(|(n, t)| (*n, t.from, t.to))
            .collect();
        use State::*;
        assert_eq!(
            seen,
            [
                // 10 successes then 5 failures in a window of 10: 50%.
                (34, Closed, Open),
                // 200 ms after the trip, at 10 ms a call.
                (54, Open, HalfOpen),
                (56, HalfOpen, Open), // 3 probes, all failed
                (76, Open, HalfOpen),
                (78, HalfOpen, Open),
                (98, Open, HalfOpen), // the backend is healthy again
                (100, HalfOpen, Closed),
            ]
        );
        assert_eq!(transitions[0].1.reason, Reason::FailureRate(0.5));
        assert_eq!(transitions[6].1.reason, Reason::ProbesPassed);
        let failing = &reports[1];
        // 5 failures before the trip and 3 failed probes twice.
        assert_eq!((failing.failed, failing.reached), (11, 11));
        assert_eq!(failing.rejected, 60 - 11);
        assert_eq!(
            reports[0],
            PhaseReport {
                calls: 30,
                ok: 30,
                failed: 0,
                rejected: 0,
                reached: 30
            }
        );
        // Calls 90-97 are still rejected; the probes from call 98 on pass.
        assert_eq!(
            reports[2],
            PhaseReport {
                calls: 60,
                ok: 52,
                failed: 0,
                rejected: 8,
                reached: 52
            }
        );
    }

    #[test]
    fn a_rejected_call_never_reaches_the_backend() {
        configure_for_tests();
        let mut config = BackendConfig::new("down", Duration::ZERO);
        config.fail_fraction = 1.0;
        let backend = Backend::start(config).unwrap();
        let breaker = Breaker::with_clock(breaker_config(), ManualClock::new()).unwrap();
        for _ in 0..10 {
            assert!(matches!(
                protected_call(&breaker, backend.addr, TIMEOUT),
                Err(CallError::Failed(Failure::Status(500)))
            ));
        }
        for _ in 0..100 {
            assert!(matches!(
                protected_call(&breaker, backend.addr, TIMEOUT),
                Err(CallError::Rejected(_))
            ));
        }
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 10);
    }
}
