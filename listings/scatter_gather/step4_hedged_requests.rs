//! Step 4: hedged requests. Most answers are fast, a few are very slow (a
//! garbage collection, a cold cache, a busy replica). After `hedge_after`
//! without an answer, send a second copy of the request; the first answer
//! wins and the other copy is cancelled. The tail shrinks; the price is the
//! extra requests, which the listing counts.

use std::io::BufReader;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpStream;
use may::sync::Mutex;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::bounded;
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

/// How long after the deadline a copy's own socket timeout stops it. The
/// deadline decides the answer; this only bounds a copy that cancelling
/// missed, so it never races the deadline (steps 2 and 3 do the same).
const BACKSTOP: Duration = Duration::from_millis(20);

// ANCHOR: hedged
/// What a hedged call returns: the result, and whether a second copy was sent.
#[derive(Debug)]
struct Hedged {
    result: Result<Vec<Offer>, String>,
    hedged: bool,
}

/// Call `addr`; if nothing has come back after `hedge_after`, send a second
/// copy. The first success wins (an error waits for the other copy, if
/// one is running); the loser is cancelled and both coroutines are joined.
fn hedged_call(
    addr: SocketAddr,
    query: &str,
    timeout: Duration,
    hedge_after: Option<Duration>,
) -> Hedged {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = bounded::channel(2);
    let slots: Vec<Arc<CancelSlot>> = vec![Arc::default(), Arc::default()];
    let attempt = |copy: usize| {
        let (tx, query, slot) = (tx.clone(), query.to_owned(), slots[copy].clone());
        let left = deadline.saturating_duration_since(Instant::now()) + BACKSTOP;
        go!(move || {
            let _ = tx.send(call(addr, &query, left, &slot));
        })
    };
    let mut running = vec![attempt(0)];
    let mut result = None;
    if let Some(after) = hedge_after {
        match rx.recv_timeout(after) {
            Ok(first) => result = Some(first), // in time (or failed fast: not hedged)
            Err(_) => running.push(attempt(1)), // no answer yet: hedge
        }
    }
    drop(tx);
    let mut outstanding = running.len() - usize::from(result.is_some());
    while outstanding > 0 && !matches!(result, Some(Ok(_))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => {
                outstanding -= 1;
                if result.as_ref().is_none_or(|prev| prev.is_err()) {
                    result = Some(r);
                }
            }
            Err(_) => break, // the deadline passed
        }
    }
    for slot in &slots {
        slot.cancel(); // a finished copy has nothing left to cancel
    }
    let hedged = running.len() == 2;
    for copy in running {
        copy.join().expect("a copy does not panic");
    }
    Hedged {
        result: result.unwrap_or_else(|| Err("timed out".into())),
        hedged,
    }
}
// ANCHOR_END: hedged

/// The `p`-th percentile (0-100) of sorted `times`.
fn percentile(times: &[Duration], p: usize) -> Duration {
    times[(times.len() * p / 100).min(times.len() - 1)]
}

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    // A backend that answers in 5 ms, except 10% of requests: 100 ms.
    let mut config = BackendConfig::new("shop", Duration::from_millis(5));
    config.slow_fraction = 0.1;
    config.slow_latency = Duration::from_millis(100);
    let backend = Backend::start(config).unwrap();
    for hedge_after in [None, Some(Duration::from_millis(15))] {
        let (mut times, mut hedges) = (Vec::new(), 0);
        for _ in 0..60 {
            let started = Instant::now();
            let h = hedged_call(backend.addr, "lamp", Duration::from_secs(1), hedge_after);
            times.push(started.elapsed());
            assert!(h.result.is_ok(), "{:?}", h.result);
            hedges += usize::from(h.hedged);
        }
        times.sort_unstable();
        println!(
            "hedge after {:<6} median {:.1?}, p95 {:.1?}, max {:.1?}; extra requests ~{hedges} of 60",
            hedge_after.map_or("never".into(), |d| format!("{d:?}")),
            percentile(&times, 50),
            percentile(&times, 95),
            times[times.len() - 1],
        );
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_fast_answer_is_not_hedged() {
        configure_for_tests();
        let backend = Backend::start(BackendConfig::new("fast", Duration::from_millis(1))).unwrap();
        let addr = backend.addr;
        let h = go!(move || hedged_call(
            addr,
            "x",
            Duration::from_secs(2),
            Some(Duration::from_millis(200))
        ))
        .join()
        .unwrap();
        assert_eq!(h.result.unwrap().len(), 3);
        assert!(!h.hedged);
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_late_answer_is_hedged_the_faster_copy_wins_and_the_slow_one_is_cancelled() {
        configure_for_tests();
        let mut config = BackendConfig::new("tail", Duration::ZERO);
        config.script = vec![Duration::from_secs(3), Duration::from_millis(2)];
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        let started = Instant::now();
        let after = Some(Duration::from_millis(20));
        let h = go!(move || hedged_call(addr, "x", Duration::from_secs(2), after))
            .join()
            .unwrap();
        assert!(h.hedged);
        assert_eq!(h.result.unwrap().len(), 3, "the hedge's answer");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "did not wait for the slow copy"
        );
        let stats = &backend.stats;
        assert_eq!(stats.requests.load(Ordering::SeqCst), 2);
        while stats.client_gone.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the slow copy was not cancelled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn when_every_copy_is_slow_the_deadline_ends_the_call() {
        configure_for_tests();
        let mut config = BackendConfig::new("hang", Duration::ZERO);
        config.hang = true;
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        let started = Instant::now();
        let after = Some(Duration::from_millis(20));
        let h = go!(move || hedged_call(addr, "x", Duration::from_millis(200), after))
            .join()
            .unwrap();
        assert!(h.hedged);
        assert_eq!(h.result.unwrap_err(), "timed out");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            backend.stats.requests.load(Ordering::SeqCst),
            2,
            "one hedge, no more"
        );
    }
}
