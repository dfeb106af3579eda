//! Step 5: the breaker trips on slow calls too.
//!
//! The same caller as step 4, but the backend does not fail: for 60 calls
//! it answers every request correctly, after 100 ms instead of 1 ms. A
//! breaker that counts only failures never trips, and every caller waits.
//! This one also counts calls slower than `slow_call` (50 ms) and trips when
//! half of its window is slow, as resilience4j's slow-call rate does.
//!
//! As in step 4, the breaker reads a `ManualClock` the loop moves by 10 ms
//! between calls plus the time each call really took: a 100 ms answer moves
//! it by about 100 ms, which is how the breaker sees that the call was slow.

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
/// Step 4's breaker, and: a call slower than 50 ms is slow, and half of the
/// window being slow trips it as half of it failing does.
fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        min_calls: 10,
        failure_rate: 0.5,
        slow_call: Duration::from_millis(50),
        slow_call_rate: 0.5,
        open_for: Duration::from_millis(200),
        half_open_calls: 3,
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

// ANCHOR: phases
fn phases(healthy: Behaviour) -> Vec<Phase> {
    // Every answer correct, and 100 times slower than usual.
    let slow = Behaviour {
        latency: Duration::from_millis(100),
        ..healthy
    };
    vec![
        Phase {
            name: "healthy",
            calls: 30,
            behaviour: healthy,
        },
        Phase {
            name: "slow",
            calls: 60,
            behaviour: slow,
        },
        Phase {
            name: "recovered",
            calls: 60,
            behaviour: healthy,
        },
    ]
}
// ANCHOR_END: phases

/// What one phase looked like from both sides.
#[derive(Debug, Default, PartialEq)]
struct PhaseReport {
    calls: u32,
    ok: u32,
    /// Calls that took longer than the breaker's `slow_call`, as the caller
    /// timed them (ok or not).
    slow: u32,
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
fn run(
    config: BreakerConfig,
    phases: &[Phase],
    backend: &Backend,
) -> (Vec<PhaseReport>, Vec<(u32, Transition)>) {
    let clock = ManualClock::new();
    let breaker = Breaker::with_clock(config, clock.clone()).expect("a valid config");
    let events = breaker.subscribe();
    let (mut reports, mut transitions) = (Vec::new(), Vec::new());
    let mut n = 0;
    for phase in phases {
        backend.set_behaviour(phase.behaviour);
        let before = backend.stats.requests.load(Ordering::SeqCst);
        let mut report = PhaseReport::default();
        for _ in 0..phase.calls {
            clock.advance(GAP);
            let started = Instant::now();
            let result = protected_call(&breaker, backend.addr, TIMEOUT);
            if started.elapsed() > config.slow_call {
                report.slow += 1;
            }
            match result {
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
    let (reports, _) = run(breaker_config(), &phases, &backend);
    for (phase, r) in phases.iter().zip(&reports) {
        println!(
            "{:<9} {} calls: {} ok ({} slow), {} failed, {} rejected at once; the backend got {} requests",
            phase.name, r.calls, r.ok, r.slow, r.failed, r.rejected, r.reached
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::breaker::{Reason, State};
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn slow_answers_trip_the_breaker_at_exact_calls() {
        configure_for_tests();
        let config = BackendConfig::new("dependency", Duration::ZERO);
        let phases = phases(config.behaviour());
        let backend = Backend::start(config).unwrap();
        let (reports, transitions) = run(breaker_config(), &phases, &backend);
        let seen: Vec<(u32, State, State)> = transitions
            .iter()
            .map(|(n, t)| (*n, t.from, t.to))
            .collect();
        use State::*;
        assert_eq!(
            seen,
            [
                (34, Closed, Open), // 5 slow calls out of the last 10
                (54, Open, HalfOpen),
                (56, HalfOpen, Open), // 3 slow probes
                (76, Open, HalfOpen),
                (78, HalfOpen, Open),
                (98, Open, HalfOpen),
                (100, HalfOpen, Closed),
            ]
        );
        assert_eq!(transitions[0].1.reason, Reason::SlowCallRate(0.5));
        let slow = &reports[1];
        // Every slow call succeeded: the failure rate alone stayed at 0%.
        assert_eq!((slow.ok, slow.slow, slow.failed), (11, 11, 0));
        assert_eq!((slow.rejected, slow.reached), (49, 11));
    }

    #[test]
    fn a_breaker_that_counts_only_failures_lets_every_slow_call_through() {
        configure_for_tests();
        let config = BackendConfig::new("dependency", Duration::ZERO);
        let mut phases = phases(config.behaviour());
        phases[1].calls = 15;
        let backend = Backend::start(config).unwrap();
        // Step 4's breaker: a call is slow only after 1 s, and it trips on
        // slow calls only when every call in the window is slow.
        let failures_only = BreakerConfig {
            slow_call: Duration::from_secs(1),
            slow_call_rate: 1.0,
            ..breaker_config()
        };
        let (reports, transitions) = run(failures_only, &phases[..2], &backend);
        assert!(transitions.is_empty(), "{transitions:?}");
        assert_eq!((reports[1].ok, reports[1].reached), (15, 15));
    }
}
