//! Step 7: a fallback: every request gets an answer, even when the
//! dependency cannot give one.
//!
//! Step 6's service and protections (a bulkhead of 2, step 5's breaker),
//! now with one dependency that answers searches, and a fallback for every
//! call that is turned away, rejected or fails: the last good answer for the
//! same query, or a default when there is none. The dependency is healthy
//! for 30 requests, then hangs for 60; queries cycle over three words, and a
//! fourth one appears during the outage.

use std::collections::HashMap;
use std::io::{BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use may::go;
use may_patterns::backend::{Backend, BackendConfig, Behaviour};
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

/// `GET /search?q=QUERY` on the dependency: the answer's body. Every step
/// bounded by `timeout`.
fn call(addr: SocketAddr, query: &str, timeout: Duration) -> Result<String, Failure> {
    let timeout = for_may(timeout);
    let io = |e: std::io::Error| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::TimedOut,
        _ => Failure::Io(e.to_string()),
    };
    let mut stream = may_patterns::net::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let target = format!("/search?q={query}");
    http::write_request(&mut stream, "GET", &target, "backend", &[], b"").map_err(io)?;
    let response =
        http::read_response(&mut BufReader::new(stream), &Limits::default()).map_err(io)?;
    match response.status {
        200 => Ok(String::from_utf8_lossy(&response.body).into_owned()),
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

/// Everything a caller keeps for one dependency (step 6).
struct Dependency {
    addr: SocketAddr,
    breaker: Breaker,
    bulkhead: Bulkhead,
}

/// Why there is no fresh answer.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    Failed(Failure),
    /// The breaker is open: not called.
    Rejected,
    /// The bulkhead is full: not called.
    Full,
}

/// Step 6's protected call, returning the answer.
fn protected_call(dependency: &Dependency, query: &str) -> Result<String, Refusal> {
    let Some(_place) = dependency.bulkhead.try_enter() else {
        return Err(Refusal::Full);
    };
    match dependency
        .breaker
        .call(|| call(dependency.addr, query, TIMEOUT))
    {
        Ok(body) => Ok(body),
        Err(CallError::Failed(failure)) => Err(Refusal::Failed(failure)),
        Err(CallError::Rejected(_)) => Err(Refusal::Rejected),
    }
}

// ANCHOR: fallback
/// What the service answers when the dependency does not.
const DEFAULT: &str = r#"{"offers":[],"note":"search is unavailable, try again soon"}"#;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Fresh,
    /// The last good answer to the same query.
    Cached,
    Default,
}

/// The last good answer per query. A std `Mutex` is enough: it is held to
/// copy one entry in or out, never across a call or a park.
#[derive(Default)]
struct LastGood(Mutex<HashMap<String, String>>);

impl LastGood {
    fn remember(&self, query: &str, body: &str) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(query.to_owned(), body.to_owned());
    }

    fn recall(&self, query: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(query).cloned()
    }
}

/// An answer for `query`, whatever happens to the call.
fn answer(dependency: &Dependency, last_good: &LastGood, query: &str) -> (Source, String) {
    match protected_call(dependency, query) {
        Ok(body) => {
            last_good.remember(query, &body);
            (Source::Fresh, body)
        }
        // Turned away, rejected or failed: the caller still gets an answer,
        // marked for what it is.
        Err(_) => match last_good.recall(query) {
            Some(body) => (Source::Cached, body),
            None => (Source::Default, DEFAULT.to_owned()),
        },
    }
}
// ANCHOR_END: fallback

// ANCHOR: service
const HANDLERS: usize = 8;
const TIMEOUT: Duration = Duration::from_millis(100);

/// A number of requests, how the backend behaves meanwhile, and the
/// queries they cycle through.
type Phase = (u32, Behaviour, &'static [&'static str]);

/// What one phase's requests got.
#[derive(Debug, Default, Clone, PartialEq)]
struct Report {
    fresh: u32,
    cached: u32,
    default: u32,
    /// Answers that took longer than half the timeout: calls that got a
    /// place and waited for the hanging backend.
    waited: u32,
    slowest: Duration,
}

/// Run `phases` of requests (the backend behaving one way during each), one
/// request every `every`, on `HANDLERS` coroutines; a report per phase.
fn serve(backend: &Backend, phases: &[Phase], every: Duration) -> Vec<Report> {
    let dependency = Arc::new(Dependency {
        addr: backend.addr,
        breaker: Breaker::new(breaker_config()).expect("a valid config"),
        bulkhead: Bulkhead::new(2).expect("at least 1"),
    });
    let last_good = Arc::new(LastGood::default());
    let (queue, waiting) = bounded::channel::<(&'static str, Instant)>(256);
    let (done, results) = may::sync::mpsc::channel();
    let handlers: Vec<_> = (0..HANDLERS)
        .map(|_| {
            let (waiting, done) = (waiting.clone(), done.clone());
            let (dependency, last_good) = (dependency.clone(), last_good.clone());
            go!(move || {
                for (query, arrived) in &waiting {
                    let (source, _body) = answer(&dependency, &last_good, query);
                    let _ = done.send((source, arrived.elapsed()));
                }
            })
        })
        .collect();
    drop((waiting, done));
    let mut reports = Vec::new();
    for (requests, behaviour, queries) in phases {
        backend.set_behaviour(*behaviour);
        for i in 0..*requests as usize {
            let query = queries[i % queries.len()];
            queue.send((query, Instant::now())).expect("handlers run");
            std::thread::sleep(every); // `serve` is called from a thread
        }
        // Every request of this phase answered before the backend changes.
        let mut report = Report::default();
        for (source, took) in results.iter().take(*requests as usize) {
            match source {
                Source::Fresh => report.fresh += 1,
                Source::Cached => report.cached += 1,
                Source::Default => report.default += 1,
            }
            report.waited += u32::from(took > TIMEOUT / 2);
            report.slowest = report.slowest.max(took);
        }
        reports.push(report);
    }
    drop(queue); // the handlers stop
    for handler in handlers {
        handler.join().expect("a handler does not panic");
    }
    reports
}
// ANCHOR_END: service

// ANCHOR: main
fn main() {
    // One worker: may 0.3.51's connect can race a second worker (pitfalls).
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    let backend =
        Backend::start(BackendConfig::new("search", Duration::ZERO)).expect("a backend starts");
    let healthy = backend.behaviour();
    let hanging = Behaviour {
        hang: true,
        ..healthy
    };
    let phases: [Phase; 2] = [
        (30, healthy, &["lamp", "desk", "chair"]),
        (60, hanging, &["lamp", "desk", "chair", "sofa"]),
    ];
    let reports = serve(&backend, &phases, Duration::from_millis(2));
    // Counts with a `~`: on a busy machine healthy calls slowed down past
    // the 2 ms between arrivals can fill the bulkhead of 2 (or time out),
    // and the next request is answered from the cache.
    for (name, r) in ["healthy", "hanging"].iter().zip(&reports) {
        println!(
            "{name}: ~{} fresh, ~{} cached, ~{} default answers; ~{} waited for the timeout, slowest {:.1?}",
            r.fresh, r.cached, r.default, r.waited, r.slowest
        );
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

    #[test]
    fn the_fallback_serves_the_last_good_answer_then_the_default() {
        configure_for_tests();
        let backend = Backend::start(BackendConfig::new("search", Duration::ZERO)).unwrap();
        let dependency = Dependency {
            addr: backend.addr,
            breaker: Breaker::new(breaker_config()).unwrap(),
            bulkhead: Bulkhead::new(1).unwrap(),
        };
        let last_good = LastGood::default();
        let (fresh, body) = answer(&dependency, &last_good, "lamp");
        assert_eq!(fresh, Source::Fresh);
        assert!(body.contains("lamp-"), "{body}");
        // The bulkhead is full: no call, the cached answer instead.
        let _held = dependency.bulkhead.try_enter().unwrap();
        assert_eq!(
            answer(&dependency, &last_good, "lamp"),
            (Source::Cached, body)
        );
        assert_eq!(
            answer(&dependency, &last_good, "sofa"),
            (Source::Default, DEFAULT.to_owned())
        );
    }

    #[test]
    fn every_request_gets_an_answer_during_an_outage() {
        configure_for_tests();
        let backend = Backend::start(BackendConfig::new("search", Duration::ZERO)).unwrap();
        let healthy = backend.behaviour();
        let hanging = Behaviour {
            hang: true,
            ..healthy
        };
        let phases: [Phase; 2] = [
            (6, healthy, &["lamp", "desk", "chair"]),
            (20, hanging, &["lamp", "desk", "chair", "sofa"]),
        ];
        let reports = serve(&backend, &phases, Duration::from_millis(2));
        // Healthy: every query answered, fresh unless a busy machine slowed
        // a call enough to fill the bulkhead (then from the cache).
        let healthy = &reports[0];
        assert_eq!((healthy.fresh + healthy.cached, healthy.default), (6, 0));
        // Every "sofa" (1 in 4) has no cached answer.
        assert_eq!(
            (reports[1].fresh, reports[1].cached, reports[1].default),
            (0, 15, 5)
        );
        // Turned away or rejected calls answer at once; those that got a
        // place wait for the timeout: nothing waits much longer.
        assert!(reports[1].slowest < TIMEOUT * 5, "{:?}", reports[1]);
    }
}
