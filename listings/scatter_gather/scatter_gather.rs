//! Scatter-gather: ask many backends at once, answer from what arrives in
//! time, and say how complete the answer is.
//!
//! **Purpose.** A price-comparison (or search) query sent to every backend
//! concurrently, with one deadline for the whole query, an optional quorum
//! (answer as soon as K backends have), optional hedged requests (a second
//! copy to a backend that has not answered after `--hedge-after`), and the
//! offers merged: each product once, at its best price.
//!
//! **Architecture.** One coroutine per backend runs a hedged call: the
//! first copy, then maybe a second; the first success wins and the other
//! copy's socket is shut down. Every backend's outcome goes into one
//! channel; the gatherer (the caller's thread) reads it with the time left
//! until the deadline, stops at the quorum or the deadline, cancels every
//! call still running by shutting down its sockets, and joins every
//! coroutine before it returns. Backends that did not answer are listed as
//! failed, timed out or cancelled, and the answer is marked partial.
//!
//! **Usage.**
//! `cargo run --example scatter_gather -- --demo 6` starts six demo backends
//! (fast, slow, failing, hanging) in the same process and queries them;
//! `cargo run --example scatter_gather -- --backends 127.0.0.1:8001,127.0.0.1:8002 --timeout 200ms --quorum 1 --hedge-after 50ms`
//! queries running backends (`cargo run --example search_backend`).
//!
//! **Performance.** A query takes about its slowest needed backend instead
//! of the sum of all; hedging trims the tail at the cost of extra requests.
//! See the chapter's tables: `cargo bench --bench scatter_gather`.
//!
//! **Customization.** Replace `call` with your protocol (it must be
//! cancellable: register the socket), and `merge` with your merge rule.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use may::go;
use may::net::TcpStream;
use may::sync::Mutex;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::bounded::{self, RecvTimeoutError};
use may_patterns::http::{self, Limits};
use may_patterns::json::check_depth;
use may_patterns::runtime::{configure_once, Settings};
use serde::{Deserialize, Serialize};

// ANCHOR: cli
/// Send one query to many HTTP backends at once and merge their offers.
#[derive(Parser, Debug)]
#[command(name = "scatter_gather")]
struct Args {
    /// Backends to ask, as ADDR,ADDR,... (IP:port; names are not resolved).
    #[arg(long, value_delimiter = ',', required_unless_present = "demo")]
    backends: Vec<SocketAddr>,
    /// Start this many demo backends in this process and ask them instead.
    #[arg(long, conflicts_with = "backends")]
    demo: Option<usize>,
    /// The word to search for (letters, digits, - or _).
    #[arg(long, default_value = "lamp")]
    query: String,
    /// Deadline for the whole query.
    #[arg(long, default_value = "200ms", value_parser = deadline)]
    timeout: Duration,
    /// Answer as soon as this many backends have. Without it, wait for all
    /// of them (until the deadline). The exit status is 1 when fewer than
    /// this many answered (without it: when none did).
    #[arg(long)]
    quorum: Option<usize>,
    /// Send a second copy to a backend that has not answered after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    hedge_after: Option<Duration>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}
// ANCHOR_END: cli

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Offer {
    pub sku: String,
    pub shop: String,
    pub price_cents: u64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    offers: Vec<Offer>,
}

/// How deep a backend's answer may nest; `{"offers":[{..}]}` is depth 3.
/// Parsing into these types recurses no deeper than the types do, and
/// serde_json skips unknown fields without recursion, so today even 127
/// levels only fail (or are skipped) cleanly. The check keeps that true
/// when a field becomes a `serde_json::Value`, which recurses per level.
pub const MAX_DEPTH: usize = 8;

/// A call coroutine's stack, in words: may's default (32 KiB, set in
/// `main`). Its most is reading and parsing the largest answer admitted
/// (1 MiB, the `http::Limits` default) nested to `MAX_DEPTH`. Measured with
/// may's odd-stack-size report, `cargo test [--release] --example
/// scatter_gather measure -- --ignored --nocapture` (`used size`, in
/// words): 1796 in a debug build, 593 in a release build (rustc 1.95,
/// x86_64 Linux, 2026-12-01). The stack holds the debug figure 2 times or
/// more, which a test checks by running it on half the stack.
pub const CALL_STACK_WORDS: usize = 0x1000;

// ANCHOR: call
/// A call's socket, kept where the gatherer can reach it. Once `cancelled`,
/// a call that has not connected yet gives up instead of registering.
#[derive(Default)]
pub struct CancelSlot {
    state: Mutex<(bool, Option<TcpStream>)>,
}

impl CancelSlot {
    /// Register the call's socket; `false` if the query was already cancelled.
    pub fn register(&self, stream: &TcpStream) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.0 {
            return false;
        }
        state.1 = stream.try_clone().ok();
        true
    }

    /// Cancel the call: a read or write blocked on its socket returns at once.
    pub fn cancel(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        if let Some(stream) = state.1.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// `GET /search?q=QUERY`, cancellable through `slot`.
pub fn call(
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
    check_depth(&response.body, MAX_DEPTH).map_err(|e| format!("{e}"))?;
    let answer: Answer =
        serde_json::from_slice(&response.body).map_err(|e| format!("JSON: {e}"))?;
    Ok(answer.offers)
}
// ANCHOR_END: call

// ANCHOR: hedged
/// One backend's call, hedged: after `hedge_after` without an answer, a
/// second copy; the first success wins. `slots` lets the gatherer cancel
/// both copies; when this returns, both are cancelled and joined.
fn hedged_call(
    addr: SocketAddr,
    query: &str,
    deadline: Instant,
    hedge_after: Option<Duration>,
    slots: &[Arc<CancelSlot>; 2],
) -> (Result<Vec<Offer>, String>, bool) {
    let (tx, rx) = bounded::channel(2);
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
            Ok(first) => result = Some(first),
            Err(_) => running.push(attempt(1)),
        }
    }
    drop(tx);
    let mut outstanding = running.len() - usize::from(result.is_some());
    while outstanding > 0 && !matches!(result, Some(Ok(_))) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + BACKSTOP) {
            Ok(r) => {
                outstanding -= 1;
                if result.as_ref().is_none_or(|prev| prev.is_err()) {
                    result = Some(r);
                }
            }
            Err(_) => break,
        }
    }
    slots.iter().for_each(|s| s.cancel());
    let hedged = running.len() == 2;
    for copy in running {
        copy.join().expect("a copy does not panic");
    }
    (result.unwrap_or_else(|| Err("timed out".into())), hedged)
}
// ANCHOR_END: hedged

/// The gatherer's deadline decides; a call's own timeout is a backstop this
/// much later, in case cancelling it failed.
const BACKSTOP: Duration = Duration::from_millis(20);

// ANCHOR: report
/// What happened to one backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Answered {
        ms: f64,
        offers: usize,
    },
    Failed {
        reason: String,
    },
    /// Still running at the deadline.
    TimedOut,
    /// Still running when the quorum was reached.
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    pub addr: SocketAddr,
    #[serde(flatten)]
    pub status: Status,
    /// A second copy was sent.
    pub hedged: bool,
}

/// The answer to one query.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub query: String,
    /// Every backend answered.
    pub complete: bool,
    pub quorum: usize,
    pub answered: usize,
    pub hedges: usize,
    pub elapsed_ms: f64,
    pub backends: Vec<BackendReport>,
    pub products: Vec<Best>,
}
// ANCHOR_END: report

/// How to run one query.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub query: String,
    pub timeout: Duration,
    pub quorum: usize,
    pub hedge_after: Option<Duration>,
}

// ANCHOR: gather
/// Ask every backend; stop at `quorum` answers or the deadline; cancel and
/// join every call still running; merge what arrived.
pub fn scatter_gather(addrs: &[SocketAddr], config: &QueryConfig) -> Report {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let (tx, rx) = bounded::channel(addrs.len().max(1));
    let slots: Vec<[Arc<CancelSlot>; 2]> = addrs.iter().map(|_| Default::default()).collect();
    let calls: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let (tx, slots, config) = (tx.clone(), slots[i].clone(), config.clone());
            go!(move || {
                let (result, hedged) =
                    hedged_call(addr, &config.query, deadline, config.hedge_after, &slots);
                let _ = tx.send((i, result, hedged, started.elapsed()));
            })
        })
        .collect();
    drop(tx);

    let mut statuses: Vec<Option<(Status, bool)>> = vec![None; addrs.len()];
    let (mut answered, mut heard, mut offers) = (0, 0, Vec::new());
    while answered < config.quorum && heard < addrs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, result, hedged, took)) => {
                heard += 1;
                let status = match result {
                    Ok(found) => {
                        answered += 1;
                        let n = found.len();
                        offers.extend(found);
                        let ms = took.as_secs_f64() * 1000.0;
                        Status::Answered { ms, offers: n }
                    }
                    Err(reason) => Status::Failed { reason },
                };
                statuses[i] = Some((status, hedged));
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let quorum_met = answered >= config.quorum;
    for (i, _) in statuses.iter().enumerate().filter(|(_, s)| s.is_none()) {
        slots[i].iter().for_each(|s| s.cancel());
    }
    // Every call has been told to stop; collect how far the stragglers got.
    for call in calls {
        call.join().expect("a call does not panic");
    }
    // Their outcomes came too late to count, but say whether they hedged.
    let mut late_hedged = vec![false; addrs.len()];
    while let Ok((i, _, hedged, _)) = rx.try_recv() {
        late_hedged[i] = hedged;
    }
    let straggler = if quorum_met {
        Status::Cancelled
    } else {
        Status::TimedOut
    };
    let backends: Vec<BackendReport> = addrs
        .iter()
        .zip(statuses)
        .enumerate()
        .map(|(i, (&addr, status))| {
            let (status, hedged) = status.unwrap_or((straggler.clone(), late_hedged[i]));
            BackendReport {
                addr,
                status,
                hedged,
            }
        })
        .collect();
    let hedges = backends.iter().filter(|b| b.hedged).count();
    Report {
        query: config.query.clone(),
        complete: answered == addrs.len(),
        quorum: config.quorum,
        answered,
        hedges,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        backends,
        products: merge(offers),
    }
}
// ANCHOR_END: gather

// ANCHOR: merge
/// One product in the merged answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Best {
    pub sku: String,
    pub shop: String,
    pub price_cents: u64,
    /// How many shops offer it (1 = no duplicate was removed).
    pub offered_by: usize,
}

/// Merge offers from every backend: one entry per SKU, the lowest price
/// (the shop name breaks a tie, so the result does not depend on arrival
/// order), sorted by price, then SKU.
pub fn merge(offers: impl IntoIterator<Item = Offer>) -> Vec<Best> {
    let mut by_sku: BTreeMap<String, Best> = BTreeMap::new();
    for offer in offers {
        let candidate = (offer.price_cents, offer.shop.clone());
        by_sku
            .entry(offer.sku.clone())
            .and_modify(|best| {
                best.offered_by += 1;
                if candidate < (best.price_cents, best.shop.clone()) {
                    (best.price_cents, best.shop) = candidate.clone();
                }
            })
            .or_insert(Best {
                sku: offer.sku,
                shop: offer.shop,
                price_cents: offer.price_cents,
                offered_by: 1,
            });
    }
    let mut merged: Vec<Best> = by_sku.into_values().collect();
    merged.sort_by(|a, b| (a.price_cents, &a.sku).cmp(&(b.price_cents, &b.sku)));
    merged
}
// ANCHOR_END: merge

// ANCHOR: demo
/// Demo backends with a scripted mix: mostly fast, some with a slow tail,
/// one failing, one hanging (when there are at least four).
pub fn start_demo(n: usize) -> std::io::Result<Vec<Backend>> {
    (0..n)
        .map(|i| {
            let mut config =
                BackendConfig::new(&format!("shop{i}"), Duration::from_millis(5 + 5 * i as u64));
            config.seed = i as u64 + 1;
            config.slow_fraction = 0.2;
            config.slow_latency = Duration::from_millis(150);
            if n >= 4 && i == n - 2 {
                config.fail_fraction = 1.0;
            }
            if n >= 4 && i == n - 1 {
                config.hang = true;
            }
            Backend::start(config)
        })
        .collect()
}
// ANCHOR_END: demo

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} answer for {:?}: {} products from {} of {} backends (quorum {}) in {:.1}ms, {} hedged",
            if self.complete { "complete" } else { "PARTIAL" },
            self.query,
            self.products.len(),
            self.answered,
            self.backends.len(),
            self.quorum,
            self.elapsed_ms,
            self.hedges
        )?;
        for b in &self.backends {
            let hedged = if b.hedged { ", hedged" } else { "" };
            match &b.status {
                Status::Answered { ms, offers } => writeln!(
                    f,
                    "  {}  answered in {ms:.1}ms, {offers} offers{hedged}",
                    b.addr
                )?,
                Status::Failed { reason } => writeln!(f, "  {}  failed: {reason}{hedged}", b.addr)?,
                Status::TimedOut => writeln!(f, "  {}  timed out{hedged}", b.addr)?,
                Status::Cancelled => writeln!(f, "  {}  cancelled at the quorum{hedged}", b.addr)?,
            }
        }
        for p in &self.products {
            writeln!(
                f,
                "  {:<12} {:>8.2} at {} (offered by {})",
                p.sku,
                p.price_cents as f64 / 100.0,
                p.shop,
                p.offered_by
            )?;
        }
        Ok(())
    }
}

/// A query's deadline: a zero one could never be met, so it is refused.
fn deadline(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be longer than 0".to_owned()),
        duration => Ok(duration),
    }
}

// ANCHOR: main
fn main() -> ExitCode {
    let args = Args::parse();
    let valid_query = !args.query.is_empty()
        && args.query.len() <= 64
        && args
            .query
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_query {
        eprintln!("error: --query must be 1-64 letters, digits, - or _");
        return ExitCode::from(2);
    }
    configure_once(Settings {
        workers: 2,
        stack_words: CALL_STACK_WORDS,
    });
    let demo = match args.demo.map(start_demo).transpose() {
        Ok(demo) => demo.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: cannot start the demo backends: {e}");
            return ExitCode::from(2);
        }
    };
    let addrs: Vec<SocketAddr> = match args.demo {
        Some(_) => demo.iter().map(|b| b.addr).collect(),
        None => args.backends.clone(),
    };
    let quorum = args.quorum.unwrap_or(addrs.len());
    if quorum == 0 || quorum > addrs.len() {
        eprintln!(
            "error: --quorum must be between 1 and the number of backends ({})",
            addrs.len()
        );
        return ExitCode::from(2);
    }
    let config = QueryConfig {
        query: args.query.clone(),
        timeout: args.timeout,
        quorum,
        hedge_after: args.hedge_after,
    };
    let report = scatter_gather(&addrs, &config);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
    } else {
        print!("{report}");
    }
    let required = args.quorum.unwrap_or(1);
    if report.answered < required {
        eprintln!(
            "error: {} of {} backends answered; {required} needed",
            report.answered,
            addrs.len()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_zero_deadline_is_refused_on_the_command_line() {
        let parse =
            |t: &str| Args::try_parse_from(["scatter_gather", "--demo", "2", "--timeout", t]);
        let refused = parse("0s").unwrap_err().to_string();
        assert!(refused.contains("must be longer than 0"), "{refused}");
        assert_eq!(parse("150ms").unwrap().timeout, Duration::from_millis(150));
    }

    fn backend(ms: u64) -> BackendConfig {
        BackendConfig::new(&format!("b{ms}"), Duration::from_millis(ms))
    }

    fn query(timeout_ms: u64, quorum: usize, hedge_after: Option<u64>) -> QueryConfig {
        QueryConfig {
            query: "desk".into(),
            timeout: Duration::from_millis(timeout_ms),
            quorum,
            hedge_after: hedge_after.map(Duration::from_millis),
        }
    }

    /// An answer nested to `MAX_DEPTH` in every place it can be (offers as
    /// objects nested in an unknown field, and unknown fields of an offer),
    /// padded with offers to the largest body `call` reads.
    fn worst_admitted_answer() -> Vec<u8> {
        let levels = MAX_DEPTH - 3; // answer, offers and an offer are 3
        let deep = format!("{}1{}", r#"{"k":"#.repeat(levels), "}".repeat(levels));
        let offer = format!(r#"{{"sku":"s","shop":"p","price_cents":5,"x":{deep}}}"#);
        let unknown = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        let room = Limits::default().body_bytes - 64 - unknown.len();
        let offers = vec![offer.as_str(); room / (offer.len() + 1)].join(",");
        format!(r#"{{"x":{unknown},"offers":[{offers}]}}"#).into_bytes()
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

    /// `call` on a coroutine with a stack of `stack_words`, against a
    /// backend that answers `body`.
    fn call_on_stack(stack_words: usize, body: Vec<u8>) -> Result<Vec<Offer>, String> {
        configure_for_tests();
        let addr = serve_once(body);
        let builder = may::coroutine::Builder::new().stack_size(stack_words);
        let slot = CancelSlot::default();
        let call = go!(builder, move || call(
            addr,
            "x",
            Duration::from_secs(5),
            &slot
        ));
        call.unwrap().join().expect("the call coroutine ended")
    }

    /// What `CALL_STACK_WORDS` is sized from: may prints a coroutine's stack
    /// use when it ends if its stack size is odd.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn measure_the_call_stack() {
        let offers = call_on_stack(CALL_STACK_WORDS | 1, worst_admitted_answer()).unwrap();
        println!("{} offers parsed", offers.len());
    }

    #[test]
    fn the_largest_deepest_answer_admitted_parses_on_half_the_stack() {
        let offers = call_on_stack(CALL_STACK_WORDS / 2, worst_admitted_answer()).unwrap();
        assert!(offers.len() > 10_000, "{}", offers.len());
        let too_deep = format!(
            r#"{{"offers":[],"x":{}{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        let refused = call_on_stack(CALL_STACK_WORDS / 2, too_deep.into_bytes()).unwrap_err();
        assert!(
            refused.starts_with("JSON nested deeper than 8 levels"),
            "{refused}"
        );
    }

    /// A backend that answers with `Transfer-Encoding: chunked`, as nginx or
    /// any streaming server may: this used to fail with "response without
    /// Content-Length" (issue 14).
    #[test]
    fn a_backend_answering_in_chunks_is_understood() {
        configure_for_tests();
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        go!(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            http::read_request(&mut reader, &Limits::default()).unwrap();
            let body = may_patterns::backend::offers_json("chunky", "desk");
            let (a, b) = body.split_at(body.len() / 2);
            let wire = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            );
            let mut stream = stream;
            std::io::Write::write_all(&mut stream, wire.as_bytes()).unwrap();
        });
        let report = scatter_gather(&[addr], &query(2_000, 1, None));
        assert!(
            matches!(
                report.backends[0].status,
                Status::Answered { offers: 3, .. }
            ),
            "{:?}",
            report.backends[0].status
        );
    }

    fn eventually(what: &str, check: impl Fn() -> bool) {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < Duration::from_secs(5), "never: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn every_backend_answers_and_the_offers_are_merged() {
        configure_for_tests();
        let backends: Vec<Backend> = ["n", "s", "e"]
            .iter()
            .map(|name| Backend::start(BackendConfig::new(name, Duration::from_millis(2))).unwrap())
            .collect();
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let report = scatter_gather(&addrs, &query(2_000, 3, None));
        assert!(report.complete);
        assert_eq!(report.answered, 3);
        let offered: usize = report.products.iter().map(|p| p.offered_by).sum();
        assert_eq!(offered, 9, "every offer counted once");
        let skus: std::collections::BTreeSet<&str> =
            report.products.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus.len(), report.products.len(), "each product once");
        assert!(report
            .products
            .windows(2)
            .all(|w| w[0].price_cents <= w[1].price_cents));
    }

    #[test]
    fn the_deadline_holds_and_the_answer_says_what_is_missing() {
        configure_for_tests();
        let mut failing = backend(1);
        failing.fail_fraction = 1.0;
        let mut hanging = backend(1);
        hanging.hang = true;
        let backends = [
            Backend::start(backend(1)).unwrap(),
            Backend::start(failing).unwrap(),
            Backend::start(hanging).unwrap(),
        ];
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let started = Instant::now();
        let report = scatter_gather(&addrs, &query(150, 3, None));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(140) && took < Duration::from_secs(1),
            "{took:?}"
        );
        assert!(!report.complete);
        assert_eq!(report.answered, 1);
        assert!(matches!(
            report.backends[0].status,
            Status::Answered { offers: 3, .. }
        ));
        assert!(
            matches!(&report.backends[1].status, Status::Failed { reason } if reason.contains("500"))
        );
        assert_eq!(report.backends[2].status, Status::TimedOut);
        eventually("the hanging backend sees its client leave", || {
            backends[2].stats.client_gone.load(Ordering::SeqCst) == 1
        });
    }

    #[test]
    fn a_quorum_answers_early_and_cancels_the_rest() {
        configure_for_tests();
        let backends = [backend(2), backend(2), backend(5_000), backend(5_000)]
            .map(|c| Backend::start(c).unwrap());
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let started = Instant::now();
        let report = scatter_gather(&addrs, &query(10_000, 2, None));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(report.answered, 2);
        assert_eq!(report.backends[2].status, Status::Cancelled);
        assert_eq!(report.backends[3].status, Status::Cancelled);
        for slow in &backends[2..] {
            eventually("cancelled sockets are closed", || {
                slow.stats.client_gone.load(Ordering::SeqCst) == 1
                    && slow.stats.open.load(Ordering::SeqCst) == 0
            });
        }
    }

    #[test]
    fn a_slow_first_copy_is_hedged_and_the_hedge_answers() {
        configure_for_tests();
        let mut tail = backend(0);
        tail.script = vec![Duration::from_secs(5), Duration::from_millis(2)];
        let backends = [
            Backend::start(backend(2)).unwrap(),
            Backend::start(tail).unwrap(),
        ];
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let started = Instant::now();
        let report = scatter_gather(&addrs, &query(3_000, 2, Some(30)));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the hedge answered"
        );
        assert!(report.complete);
        assert_eq!(
            (report.backends[0].hedged, report.backends[1].hedged),
            (false, true)
        );
        assert_eq!(report.hedges, 1);
        assert_eq!(backends[1].stats.requests.load(Ordering::SeqCst), 2);
        eventually("the slow copy is cancelled", || {
            backends[1].stats.client_gone.load(Ordering::SeqCst) == 1
        });
    }

    #[test]
    fn a_dead_backend_fails_fast_with_a_reason() {
        configure_for_tests();
        // Bind and close a listener: nothing listens on that port now.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let alive = Backend::start(backend(1)).unwrap();
        let report = scatter_gather(&[dead, alive.addr], &query(2_000, 2, None));
        assert!(
            matches!(&report.backends[0].status, Status::Failed { reason } if reason.starts_with("connect"))
        );
        assert_eq!(report.answered, 1);
        assert!(report.elapsed_ms < 1_000.0, "did not wait for the deadline");
    }
}
