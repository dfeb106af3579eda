//! Step 3: stop at a quorum, and cancel the stragglers.
//!
//! A price comparison that has heard from `quorum` shops can answer; waiting
//! for the rest only adds their latency. When the quorum is reached (or the
//! deadline passes), the gatherer cancels every call still running by
//! shutting down its socket, which wakes the coroutine blocked reading it,
//! and joins every coroutine before it returns: nothing outlives the query,
//! and the backends see their clients go away at once.

use std::io::BufReader;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpStream;
use may::sync::Mutex;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::bounded::{self, RecvTimeoutError};
use may_patterns::http::{self, Limits};
use may_patterns::runtime::{configure_once, Settings};
use serde::Deserialize;

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

// ANCHOR: cancel
/// A call's socket, kept where the gatherer can reach it. Once `cancelled`,
/// a call that has not connected yet gives up instead of registering.
#[derive(Default)]
struct CancelSlot {
    state: Mutex<(bool, Option<TcpStream>)>,
}

impl CancelSlot {
    /// Register the call's socket; `false` if the query was already cancelled.
    fn register(&self, stream: &TcpStream) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.0 {
            return false;
        }
        state.1 = stream.try_clone().ok();
        true
    }

    /// Cancel the call: a read or write blocked on its socket returns at once.
    fn cancel(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        if let Some(stream) = state.1.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
// ANCHOR_END: cancel

// ANCHOR: call
/// `GET /search?q=QUERY`, cancellable through `slot`.
fn call(
    addr: SocketAddr,
    query: &str,
    timeout: Duration,
    slot: &CancelSlot,
) -> Result<Vec<Offer>, String> {
    let mut stream =
        may_patterns::net::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    if !slot.register(&stream) {
        return Err("cancelled".into());
    }
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

/// What the query found, and how complete it is.
#[derive(Debug, Default)]
struct Gathered {
    offers: Vec<Offer>,
    answered: Vec<usize>,
    failed: Vec<(usize, String)>,
    /// Still running at the quorum or the deadline, and cancelled.
    cancelled: Vec<usize>,
}

/// How long after the deadline a straggler's own timeout stops it, should
/// cancelling fail.
const BACKSTOP: Duration = Duration::from_millis(20);

// ANCHOR: quorum
/// Ask every backend; return once `quorum` have answered or `timeout` has
/// passed, with every other call cancelled and every coroutine joined.
fn scatter_gather(addrs: &[SocketAddr], query: &str, timeout: Duration, quorum: usize) -> Gathered {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = bounded::channel(addrs.len());
    let slots: Vec<Arc<CancelSlot>> = addrs.iter().map(|_| Arc::default()).collect();
    let calls: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let (tx, query, slot) = (tx.clone(), query.to_owned(), slots[i].clone());
            go!(move || {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tx.send((i, call(addr, &query, left + BACKSTOP, &slot)));
            })
        })
        .collect();
    drop(tx);

    let mut g = Gathered::default();
    let mut pending = vec![true; addrs.len()];
    while g.answered.len() < quorum && g.answered.len() + g.failed.len() < addrs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, result)) => {
                pending[i] = false;
                match result {
                    Ok(offers) => {
                        g.answered.push(i);
                        g.offers.extend(offers);
                    }
                    Err(reason) => g.failed.push((i, reason)),
                }
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    g.cancelled = (0..addrs.len()).filter(|&i| pending[i]).collect();
    for &i in &g.cancelled {
        slots[i].cancel();
    }
    for c in calls {
        c.join().expect("a call does not panic");
    }
    g
}
// ANCHOR_END: quorum

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    // Five shops: 10, 20, 30 ms, and two that take a whole second.
    let latencies = [10, 20, 30, 1000, 1000];
    let backends: Vec<Backend> = latencies
        .iter()
        .enumerate()
        .map(|(i, &ms)| {
            let config = BackendConfig::new(&format!("shop{i}"), Duration::from_millis(ms));
            Backend::start(config).unwrap()
        })
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let started = Instant::now();
    let g = scatter_gather(&addrs, "lamp", Duration::from_millis(500), 3);
    println!(
        "quorum of 3: {} offers in {:.1?}; answered {:?}, cancelled {:?}",
        g.offers.len(),
        started.elapsed(),
        g.answered,
        g.cancelled
    );
    // The slow shops see their clients leave within moments, long before
    // their second is up: wait (at most 1 s) until both have.
    let gone = || -> u64 {
        let count = |b: &Backend| {
            b.stats
                .client_gone
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        backends.iter().map(count).sum()
    };
    let waiting = Instant::now();
    while gone() < 2 && waiting.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1)); // main is a thread, not a coroutine
    }
    println!(
        "backends that saw their client leave: {}, after {:.1?}",
        gone(),
        started.elapsed()
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::atomic::Ordering;

    fn start(ms: u64) -> Backend {
        Backend::start(BackendConfig::new(
            &format!("b{ms}"),
            Duration::from_millis(ms),
        ))
        .unwrap()
    }

    /// Wait (bounded) until `check` holds.
    fn eventually(what: &str, check: impl Fn() -> bool) {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < Duration::from_secs(5), "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_quorum_answers_early_and_the_stragglers_sockets_are_closed() {
        configure_for_tests();
        let backends = [start(5), start(5), start(3_000), start(3_000)];
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let started = Instant::now();
        let g = scatter_gather(&addrs, "x", Duration::from_secs(10), 2);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "did not wait for the slow ones"
        );
        let mut answered = g.answered.clone();
        answered.sort_unstable();
        assert_eq!(answered, vec![0, 1]);
        assert_eq!(g.cancelled, vec![2, 3]);
        assert_eq!(g.offers.len(), 6);
        for slow in &backends[2..] {
            eventually("the slow backend sees its client leave", || {
                slow.stats.client_gone.load(Ordering::SeqCst) == 1
            });
            eventually("no connection stays open", || {
                slow.stats.open.load(Ordering::SeqCst) == 0
            });
        }
    }

    #[test]
    fn cancelling_wakes_a_call_blocked_in_read_at_once() {
        configure_for_tests();
        let hanging = start(60_000);
        let slot = Arc::new(CancelSlot::default());
        let (addr, s) = (hanging.addr, slot.clone());
        let started = Instant::now();
        let call = go!(move || call(addr, "x", Duration::from_secs(30), &s));
        eventually("the request arrived", || {
            hanging.stats.requests.load(Ordering::SeqCst) == 1
        });
        slot.cancel();
        let result = call.join().unwrap();
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken by the cancel, not a timeout"
        );
    }

    #[test]
    fn a_call_cancelled_before_it_connects_does_not_start() {
        configure_for_tests();
        let backend = start(1);
        let slot = CancelSlot::default();
        slot.cancel();
        let addr = backend.addr;
        let result = go!(move || call(addr, "x", Duration::from_secs(1), &slot))
            .join()
            .unwrap();
        assert_eq!(result, Err("cancelled".to_owned()));
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 0);
    }
}
