//! Step 2: ask every backend at once, with one deadline for the whole query.
//!
//! One coroutine per backend; each sends its result into one channel. The
//! gatherer waits on that channel until every backend has answered or the
//! deadline has passed, whichever comes first, and says which backends
//! answered, which failed (and why) and which ran out of time. An answer
//! missing any backend is marked partial.

use std::io::BufReader;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::bounded::{self, RecvTimeoutError};
use may_patterns::http::{self, Limits};
use may_patterns::runtime::{configure_once, Settings};
use serde::Deserialize;

// ANCHOR: call
/// One offer, as a backend's JSON has it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Offer {
    sku: String,
    shop: String,
    price_cents: u64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    offers: Vec<Offer>,
}

/// `GET /search?q=QUERY` on one backend; every step of it bounded by `timeout`.
fn call(addr: SocketAddr, query: &str, timeout: Duration) -> Result<Vec<Offer>, String> {
    let mut stream =
        may_patterns::net::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let target = format!("/search?q={query}");
    http::write_request(&mut stream, "GET", &target, &addr.to_string(), &[], b"")
        .map_err(|e| format!("send: {e}"))?;
    let response = http::read_response(&mut BufReader::new(stream), &Limits::default())
        .map_err(|e| format!("receive: {e}"))?;
    if response.status != 200 {
        return Err(format!("HTTP {} {}", response.status, response.reason));
    }
    let answer: Answer =
        serde_json::from_slice(&response.body).map_err(|e| format!("JSON: {e}"))?;
    Ok(answer.offers)
}
// ANCHOR_END: call

// ANCHOR: gathered
/// What the query found, and how complete it is.
#[derive(Debug, Default)]
struct Gathered {
    offers: Vec<Offer>,
    answered: Vec<usize>,
    failed: Vec<(usize, String)>,
    timed_out: Vec<usize>,
}

impl Gathered {
    /// Some backend did not contribute: the offers may be missing some.
    fn partial(&self) -> bool {
        !self.failed.is_empty() || !self.timed_out.is_empty()
    }
}
// ANCHOR_END: gathered

// ANCHOR: scatter
/// How long after the deadline a straggler's own timeout stops it.
const BACKSTOP: Duration = Duration::from_millis(20);

/// Ask every backend in `addrs` concurrently; return what arrived by
/// `timeout` after the start.
fn scatter_gather(addrs: &[SocketAddr], query: &str, timeout: Duration) -> Gathered {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = bounded::channel(addrs.len());
    for (i, &addr) in addrs.iter().enumerate() {
        let (tx, query) = (tx.clone(), query.to_owned());
        // The gatherer's deadline decides what counts. The call's own timeout
        // is a backstop a little later, so the coroutine does not outlive
        // the query by more than that.
        go!(move || {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = call(addr, &query, left + BACKSTOP);
            let _ = tx.send((i, result)); // the gatherer may have stopped listening
        });
    }
    drop(tx);

    let mut gathered = Gathered::default();
    let mut pending: Vec<bool> = vec![true; addrs.len()];
    while gathered.answered.len() + gathered.failed.len() < addrs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, Ok(offers))) => {
                pending[i] = false;
                gathered.answered.push(i);
                gathered.offers.extend(offers);
            }
            Ok((i, Err(reason))) => {
                pending[i] = false;
                gathered.failed.push((i, reason));
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    gathered.timed_out = (0..addrs.len()).filter(|&i| pending[i]).collect();
    gathered
}
// ANCHOR_END: scatter

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    // Shops answering in 10, 20 and 30 ms, one failing, one taking 500 ms.
    let mut configs: Vec<BackendConfig> = (1..=3)
        .map(|i| BackendConfig::new(&format!("shop{i}"), Duration::from_millis(10 * i)))
        .collect();
    let mut failing = BackendConfig::new("shop4", Duration::from_millis(5));
    failing.fail_fraction = 1.0;
    configs.push(failing);
    configs.push(BackendConfig::new("shop5", Duration::from_millis(500)));
    let backends: Vec<Backend> = configs
        .into_iter()
        .map(|c| Backend::start(c).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();

    let started = Instant::now();
    let g = scatter_gather(&addrs, "lamp", Duration::from_millis(100));
    println!(
        "{} offers in {:.1?}{}",
        g.offers.len(),
        started.elapsed(),
        if g.partial() { " (PARTIAL)" } else { "" }
    );
    let mut answered = g.answered.clone();
    answered.sort_unstable();
    println!("answered: {answered:?}");
    for (i, reason) in &g.failed {
        println!("failed: backend {i}: {reason}");
    }
    println!("timed out: {:?}", g.timed_out);
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn start(latency_ms: u64, fail: bool) -> Backend {
        let mut c =
            BackendConfig::new(&format!("b{latency_ms}"), Duration::from_millis(latency_ms));
        c.fail_fraction = if fail { 1.0 } else { 0.0 };
        Backend::start(c).unwrap()
    }

    #[test]
    fn the_query_takes_the_slowest_backend_not_the_sum() {
        configure_for_tests();
        let backends: Vec<Backend> = [40, 40, 40, 40].map(|ms| start(ms, false)).into();
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let started = Instant::now();
        let g = scatter_gather(&addrs, "x", Duration::from_secs(5));
        let took = started.elapsed();
        assert!(!g.partial());
        assert_eq!(g.offers.len(), 12);
        // Sequential would take 160 ms; concurrent takes about 40.
        assert!(took < Duration::from_millis(150), "{took:?}");
    }

    #[test]
    fn failures_and_timeouts_are_named_and_the_deadline_holds() {
        configure_for_tests();
        let backends = [start(1, false), start(1, true), start(2_000, false)];
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let started = Instant::now();
        let g = scatter_gather(&addrs, "x", Duration::from_millis(100));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(95), // may's timers have ~1 ms slack
            "waited for the deadline: {took:?}"
        );
        assert!(
            took < Duration::from_millis(1_000),
            "did not wait for the slow one: {took:?}"
        );
        assert!(g.partial());
        assert_eq!(g.answered, vec![0]);
        assert_eq!(g.failed.len(), 1, "{:?}", g.failed);
        assert_eq!(g.failed[0].0, 1);
        assert!(g.failed[0].1.contains("500"));
        assert_eq!(g.timed_out, vec![2]);
    }
}
