//! Step 6: a bulkhead per dependency, so a slow one cannot take every
//! coroutine.
//!
//! A service runs its requests on a fixed pool of 8 handler coroutines (as
//! a server with a cap on requests in flight does). Half of its requests
//! call dependency A, which hangs; the other half call B, which answers at
//! once. Each dependency has step 5's breaker. Without a bulkhead, A's calls
//! soon hold all 8 handlers until they time out, and B's requests wait in
//! the queue behind them. With a bulkhead of 2 on A, at most 2 handlers wait
//! for A; the others keep serving B.
//!
//! The breaker cannot do this alone: it learns from calls that finished,
//! and a hanging call finishes only when its timeout fires.

use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::bounded;
use may_patterns::breaker::{Breaker, BreakerConfig, Bulkhead, CallError, Window};
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

/// Step 5's breaker settings.
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

// ANCHOR: dependency
/// Everything a caller keeps for one dependency. With calls from many
/// coroutines at once, the breaker reads the real clock.
struct Dependency {
    addr: SocketAddr,
    breaker: Breaker,
    bulkhead: Option<Bulkhead>,
}

/// How a protected call ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    Failed(Failure),
    /// The breaker is open: not called.
    Rejected,
    /// The bulkhead is full: not called.
    Full,
}

/// One call through the bulkhead, then the breaker. The bulkhead comes
/// first: a call it turns away says nothing about the dependency's health,
/// so it must not count in the breaker's window.
fn protected_call(dependency: &Dependency, timeout: Duration) -> Outcome {
    let _place = match &dependency.bulkhead {
        Some(bulkhead) => match bulkhead.try_enter() {
            Some(place) => Some(place), // given back when dropped
            None => return Outcome::Full,
        },
        None => None,
    };
    match dependency.breaker.call(|| call(dependency.addr, timeout)) {
        Ok(()) => Outcome::Ok,
        Err(CallError::Failed(failure)) => Outcome::Failed(failure),
        Err(CallError::Rejected(_)) => Outcome::Rejected,
    }
}
// ANCHOR_END: dependency

// ANCHOR: service
/// Requests the service runs at once: its pool of handler coroutines.
const HANDLERS: usize = 8;
const TIMEOUT: Duration = Duration::from_millis(100);

/// One request: which dependency it needs, and when it arrived.
struct Request {
    dependency: usize,
    arrived: Instant,
}

/// What one dependency's requests saw.
#[derive(Debug, Default, Clone, PartialEq)]
struct Report {
    ok: u32,
    failed: u32,
    rejected: u32,
    full: u32,
    /// The longest a request for it took, queueing included.
    slowest: Duration,
}

/// `requests` requests, one every `every`, alternating between the two
/// dependencies, run by `HANDLERS` coroutines; a report per dependency.
fn serve(dependencies: Arc<[Dependency; 2]>, requests: u32, every: Duration) -> [Report; 2] {
    let (queue, waiting) = bounded::channel::<Request>(requests as usize);
    let (done, results) = may::sync::mpsc::channel();
    let handlers: Vec<_> = (0..HANDLERS)
        .map(|_| {
            let (waiting, done, dependencies) =
                (waiting.clone(), done.clone(), dependencies.clone());
            go!(move || {
                for request in &waiting {
                    let outcome = protected_call(&dependencies[request.dependency], TIMEOUT);
                    let _ = done.send((request.dependency, outcome, request.arrived.elapsed()));
                }
            })
        })
        .collect();
    drop((waiting, done));
    for i in 0..requests {
        let request = Request {
            dependency: (i % 2) as usize,
            arrived: Instant::now(),
        };
        queue.send(request).expect("the handlers are running");
        std::thread::sleep(every); // `serve` is called from a thread
    }
    drop(queue); // the handlers finish the queue, then stop
    let mut reports = [Report::default(), Report::default()];
    for (dependency, outcome, took) in results {
        let report = &mut reports[dependency];
        match outcome {
            Outcome::Ok => report.ok += 1,
            Outcome::Failed(_) => report.failed += 1,
            Outcome::Rejected => report.rejected += 1,
            Outcome::Full => report.full += 1,
        }
        report.slowest = report.slowest.max(took);
    }
    for handler in handlers {
        handler.join().expect("a handler does not panic");
    }
    reports
}
// ANCHOR_END: service

fn dependencies(hanging: &Backend, fast: &Backend, bulkhead: Option<usize>) -> [Dependency; 2] {
    let make = |addr, bulkhead: Option<usize>| Dependency {
        addr,
        breaker: Breaker::new(breaker_config()).expect("a valid config"),
        bulkhead: bulkhead.map(|n| Bulkhead::new(n).expect("at least 1")),
    };
    [
        make(hanging.addr, bulkhead),
        make(fast.addr, bulkhead.map(|_| HANDLERS)),
    ]
}

fn print(name: &str, r: &Report) {
    println!(
        "  {name}: {} ok, ~{} failed, ~{} rejected by the breaker, ~{} turned away by the bulkhead; slowest {:.1?}",
        r.ok, r.failed, r.rejected, r.full, r.slowest
    );
}

// ANCHOR: main
fn main() {
    // One worker: may 0.3.51's connect can race a second worker (pitfalls).
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    let mut config = BackendConfig::new("A", Duration::ZERO);
    config.hang = true;
    let hanging = Backend::start(config).expect("a backend starts");
    let fast = Backend::start(BackendConfig::new("B", Duration::ZERO)).expect("a backend starts");
    for bulkhead in [None, Some(2)] {
        let dependencies = Arc::new(dependencies(&hanging, &fast, bulkhead));
        let [a, b] = serve(dependencies, 100, Duration::from_millis(2));
        match bulkhead {
            None => println!("{HANDLERS} handlers, no bulkhead:"),
            Some(n) => println!("{HANDLERS} handlers, at most {n} of them waiting for A:"),
        }
        print("A (hangs)", &a);
        print("B (fast) ", &b);
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::TEST_SETTINGS;

    /// One worker, as in `main`.
    fn configure_for_tests() {
        configure_once(Settings {
            workers: 1,
            ..TEST_SETTINGS
        });
    }

    fn backends() -> (Backend, Backend) {
        let mut config = BackendConfig::new("A", Duration::ZERO);
        config.hang = true;
        let hanging = Backend::start(config).unwrap();
        (
            hanging,
            Backend::start(BackendConfig::new("B", Duration::ZERO)).unwrap(),
        )
    }

    #[test]
    fn a_full_bulkhead_turns_a_call_away_at_once_without_touching_the_breaker() {
        configure_for_tests();
        let (hanging, fast) = backends();
        let dependencies = dependencies(&hanging, &fast, Some(1));
        let a = &dependencies[0];
        let _held = a.bulkhead.as_ref().unwrap().try_enter().unwrap();
        let started = Instant::now();
        assert_eq!(protected_call(a, TIMEOUT), Outcome::Full);
        assert!(started.elapsed() < TIMEOUT);
        assert_eq!(a.breaker.snapshot().calls, 0, "not in the breaker's window");
        assert_eq!(
            hanging
                .stats
                .requests
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[test]
    fn with_a_bulkhead_the_fast_dependency_is_served_while_the_other_hangs() {
        configure_for_tests();
        let (hanging, fast) = backends();
        let [a, b] = serve(
            Arc::new(dependencies(&hanging, &fast, Some(2))),
            40,
            Duration::from_millis(2),
        );
        assert_eq!((b.ok, b.failed + b.rejected + b.full), (20, 0));
        assert_eq!(a.ok, 0);
        assert!(a.full > 0, "{a:?}");
        // B never waited for a handler held by A: loose, the machine may be busy.
        assert!(b.slowest < TIMEOUT, "{b:?}");
    }

    #[test]
    fn without_one_the_fast_dependency_waits_behind_the_hanging_calls() {
        configure_for_tests();
        let (hanging, fast) = backends();
        let [a, b] = serve(
            Arc::new(dependencies(&hanging, &fast, None)),
            40,
            Duration::from_millis(2),
        );
        assert_eq!(b.ok, 20, "{b:?}");
        assert_eq!((a.ok, a.full), (0, 0));
        // Every handler was stuck in A for a whole timeout at some point.
        assert!(b.slowest >= TIMEOUT / 2, "{b:?}");
    }
}
