//! One search: ask every backend for the query at once and hand on each
//! answer as it arrives. Each backend's call is a `Flux::from_call`, so the
//! pipeline can cancel it: a cancelled call's socket is shut down at once,
//! and the backend sees its client leave.

use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;
use may_patterns::alarm;
use may_patterns::http::{self, Limits};
use may_patterns::json::check_depth;
use may_patterns::reactive::{Cancelled, Flux};
use serde::{Deserialize, Serialize};

/// One offer, as the backends send it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Offer {
    pub sku: String,
    pub shop: String,
    pub price_cents: u64,
}

#[derive(Debug, Deserialize)]
struct Body {
    backend: String,
    offers: Vec<Offer>,
}

/// How deep a backend's answer may nest (`{"offers":[{..}]}` is 3): the
/// scatter-gather chapter's bound, checked before parsing. A call runs on
/// `from_call`'s coroutine, with may's configured stack (0x1000 words, set
/// in `main`); reading and parsing the largest answer admitted (1 MiB,
/// nested to this depth) used 1481 words in a debug build and 707 in a
/// release build (rustc 1.95, x86_64 Linux, 2026-12-02,
/// `measure_the_call_stack` below), and a test runs it on half the stack.
const MAX_DEPTH: usize = 8;

/// What the client is shown, in order, for one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The debounced text is being searched for.
    Started { query: Arc<str>, backends: usize },
    /// One backend's answer (or why it has none).
    Answer(Answer),
    /// The box was cleared: nothing to search.
    Cleared,
    /// The text is not a query the backends accept.
    Rejected { query: Arc<str> },
}

/// One backend's part of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub query: Arc<str>,
    pub backend: SocketAddr,
    pub took: Duration,
    /// The backend's name and its offers, or what went wrong.
    pub outcome: Result<(String, Vec<Offer>), String>,
}

/// Where the searches go, and what they count.
pub struct Backends {
    pub addrs: Vec<SocketAddr>,
    /// How long one backend may take for one search.
    pub timeout: Duration,
    /// Calls cancelled before their answer came (a newer query replaced
    /// theirs, or the client left).
    pub cancelled: AtomicU64,
    /// Calls that have started and not yet returned.
    open: AtomicU64,
}

impl Backends {
    pub fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> Backends {
        Backends {
            addrs,
            timeout,
            cancelled: AtomicU64::new(0),
            open: AtomicU64::new(0),
        }
    }

    /// Wait, up to `bound`, until no call is open; whether none is. A
    /// cancel reaches a call through a coroutine per operator, after the
    /// canceller has gone on: a server that stops waits here, so that its
    /// summary counts every call it cancelled and no call outlives it.
    pub fn wait_closed(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while self.open.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            alarm::shared().sleep(Duration::from_millis(1));
        }
        true
    }
}

/// The backends' rule for a query: 1-64 letters, digits, `-` or `_`.
pub fn valid(query: &str) -> bool {
    !query.is_empty()
        && query.len() <= 64
        && query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ANCHOR: search
/// The events of one query: `Started` first, then one `Answer` per backend
/// in the order they arrive. Cancelling the stream cancels every call
/// still running.
pub fn search(backends: &Arc<Backends>, text: String) -> Flux<Event> {
    if text.is_empty() {
        return Flux::from_iter(|| [Event::Cleared]);
    }
    let query: Arc<str> = text.into();
    if !valid(&query) {
        return Flux::from_iter(move || {
            [Event::Rejected {
                query: query.clone(),
            }]
        });
    }
    let calls: Vec<Flux<Event>> = backends
        .addrs
        .iter()
        .map(|&addr| {
            let (backends, query) = (backends.clone(), query.clone());
            Flux::from_call(move |cancelled: &Cancelled| {
                let started = Instant::now();
                let outcome = call(addr, &query, &backends, cancelled);
                Ok(Event::Answer(Answer {
                    query: query.clone(),
                    backend: addr,
                    took: started.elapsed(),
                    outcome,
                }))
            })
        })
        .collect();
    // `Started` and then the merged answers: `flat_map` with a limit of 1
    // subscribes to the second only after the first completed (a concat).
    let started = Event::Started {
        query: query.clone(),
        backends: calls.len(),
    };
    let parts = [
        Flux::from_iter(move || [started.clone()]),
        Flux::merge(calls),
    ];
    Flux::from_iter(move || parts.clone()).flat_map(1, |part| part)
}
// ANCHOR_END: search

// ANCHOR: call
/// `GET /search?q=QUERY` on one backend, within `timeout`. When `cancelled`
/// fires, the socket is shut down: a read parked on it returns at once.
fn call(
    addr: SocketAddr,
    query: &str,
    backends: &Arc<Backends>,
    cancelled: &Cancelled,
) -> Result<(String, Vec<Offer>), String> {
    let timeout = backends.timeout;
    backends.open.fetch_add(1, Ordering::SeqCst);
    let _open = Open(backends.clone());
    let mut stream = connect(addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let handle = stream.try_clone().map_err(|e| e.to_string())?;
    // Counted here, as the cancel happens, so the count is in before the
    // canceller goes on; `in_flight` keeps a cancel after the answer out.
    let in_flight = InFlight(Arc::new(AtomicBool::new(true)));
    let (running, backends) = (in_flight.0.clone(), backends.clone());
    cancelled.on_cancel(move || {
        if running.swap(false, Ordering::SeqCst) {
            backends.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        let _ = handle.shutdown(Shutdown::Both);
    });
    // The deadline is kept by the process's alarm thread, which shuts the
    // reading side when it passes: no may timer (see may_patterns::alarm).
    let deadline = alarm::shared()
        .shutdown_read_at(&stream, Instant::now() + timeout)
        .map_err(|e| e.to_string())?;
    let target = format!("/search?q={query}");
    http::write_request(&mut stream, "GET", &target, &addr.to_string(), &[], b"")
        .map_err(|e| format!("send: {e}"))?;
    let response = http::read_response(&mut BufReader::new(stream), &Limits::default());
    if deadline.fired() {
        return Err(format!("no answer within {timeout:?}"));
    }
    if cancelled.is_cancelled() {
        return Err("cancelled".into());
    }
    let response = response.map_err(|e| format!("receive: {e}"))?;
    if response.status != 200 {
        return Err(format!("HTTP {} {}", response.status, response.reason));
    }
    check_depth(&response.body, MAX_DEPTH).map_err(|e| e.to_string())?;
    let body: Body = serde_json::from_slice(&response.body).map_err(|e| format!("JSON: {e}"))?;
    Ok((body.backend, body.offers))
}

/// Whether a call is still running: cleared when it returns, however.
struct InFlight(Arc<AtomicBool>);

/// One open call, counted in [`Backends`] until it returns.
struct Open(Arc<Backends>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Connect on a `may_patterns::blocking` thread and hand the socket to may:
/// may 0.3.51's own connect can race its workers under load (the circuit
/// breaker chapter, "Waits that stay off may's timers").
fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket =
        may_patterns::blocking::run(move || std::net::TcpStream::connect_timeout(&addr, timeout))??;
    // Safety: `into_raw_fd` hands the descriptor over; nothing else owns it.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}
// ANCHOR_END: call

#[cfg(test)]
mod tests {
    use super::*;
    use may::go;
    use may_patterns::runtime::configure_for_tests;

    /// The largest answer `call` reads (the `http::Limits` default body),
    /// nested to `MAX_DEPTH` where serde_json recurses: inside each offer.
    fn worst_admitted_answer() -> Vec<u8> {
        let levels = MAX_DEPTH - 3; // the answer, its offers, an offer
        let deep = format!("{}1{}", r#"{"k":"#.repeat(levels), "}".repeat(levels));
        let offer = format!(r#"{{"sku":"s","shop":"p","price_cents":5,"x":{deep}}}"#);
        let room = Limits::default().body_bytes - 64;
        let offers = vec![offer.as_str(); room / (offer.len() + 1)].join(",");
        format!(r#"{{"backend":"b","offers":[{offers}]}}"#).into_bytes()
    }

    /// Serve `body` to one request on a loopback port, from a coroutine.
    fn serve_once(body: Vec<u8>) -> SocketAddr {
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        go!(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            http::read_request(&mut reader, &Limits::default()).unwrap();
            let mut stream = stream;
            http::write_response(&mut stream, 200, "OK", "application/json", &[], &body).unwrap();
        });
        addr
    }

    /// `call` on a coroutine with a stack of `words`, as `from_call` runs it
    /// (on may's configured stack: 0x1000 words, set in `main`).
    fn call_on_stack(words: usize, body: Vec<u8>) -> Result<(String, Vec<Offer>), String> {
        configure_for_tests();
        let addr = serve_once(body);
        let backends = Arc::new(Backends::new(vec![addr], Duration::from_secs(10)));
        let builder = may::coroutine::Builder::new().stack_size(words);
        let call = go!(builder, move || call(
            addr,
            "x",
            &backends,
            &Cancelled::new()
        ));
        call.unwrap().join().expect("the call coroutine ended")
    }

    /// may prints a coroutine's stack use when it ends if its stack size is
    /// odd: `cargo test [--release] --example reactive_pipeline measure --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn measure_the_call_stack() {
        let (_, offers) = call_on_stack(0x1000 | 1, worst_admitted_answer()).unwrap();
        println!("{} offers parsed", offers.len());
    }

    #[test]
    fn the_largest_deepest_answer_admitted_parses_on_half_the_stack() {
        let (_, offers) = call_on_stack(0x800, worst_admitted_answer()).unwrap();
        assert!(offers.len() > 10_000, "{}", offers.len());
        let deeper = format!(
            r#"{{"backend":"b","offers":[],"x":{}{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        let refused = call_on_stack(0x800, deeper.into_bytes()).unwrap_err();
        assert!(
            refused.starts_with("JSON nested deeper than 8"),
            "{refused}"
        );
    }

    #[test]
    fn a_query_is_what_the_backends_accept() {
        assert!(valid("lamp-2_x"));
        for bad in ["", "desk lamp", "lämp", &"a".repeat(65)] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
