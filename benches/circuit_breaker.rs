//! One scripted outage, three ways: no protection, retries only, and the
//! breaker with a retry budget. The chapter's program runs each (its own
//! `session::run`, in this process, against a fresh built-in backend):
//! healthy 2 s, failing 4 s, recovering 3 s, 200 calls a second from 10
//! callers. Reported: the requests that reached the failing backend, the
//! callers' p50 and p99 during the outage, how fast a rejected call
//! returns, and how long after the backend recovered the callers knew.
//!
//! `cargo bench --bench circuit_breaker` (about 30 s after the build)
//! rewrites `book/circuit_breaker/benchmarks.md`, `targets.md` (the issue's
//! targets, each marked met or missed) and `timeline.svg` (the breaker's
//! run, as the program draws it).

mod support;

// The program's modules, as its main.rs declares them; their tests and the
// parts only main uses are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/circuit_breaker/circuit_breaker/client.rs"]
mod client;
#[allow(dead_code, unused_imports)]
#[path = "../listings/circuit_breaker/circuit_breaker/config.rs"]
mod config;
#[allow(dead_code, unused_imports)]
#[path = "../listings/circuit_breaker/circuit_breaker/phases.rs"]
mod phases;
#[allow(dead_code, unused_imports)]
#[path = "../listings/circuit_breaker/circuit_breaker/session.rs"]
mod session;
#[allow(dead_code, unused_imports)]
#[path = "../listings/circuit_breaker/circuit_breaker/svg.rs"]
mod svg;
#[allow(dead_code, unused_imports)]
#[path = "../listings/circuit_breaker/circuit_breaker/timeline.rs"]
mod timeline;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use may_patterns::breaker::State;

use client::{CallRecord, Outcome};
use config::Cli;
use session::Session;
use support::Cell;

const SCRIPT: &str = "healthy:2s,failing:4s,recovering:3s";
const OUTAGE: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(6));
const RATE: u32 = 200;

/// The three ways, as the program's flags.
const WAYS: [(&str, &[&str]); 3] = [
    (
        "no protection",
        &["--retries", "0", "--budget", "off", "--no-breaker"],
    ),
    (
        "retries only",
        &["--retries", "3", "--budget", "off", "--no-breaker"],
    ),
    ("breaker + budget", &["--retries", "3", "--budget", "20%"]),
];

/// What one way measured.
struct Measured {
    /// Attempts that reached the backend while it was failing.
    outage_requests: u64,
    /// Attempts between the breaker's first trip and its last close (the
    /// breaker's run decides the interval; the others are counted over it).
    open_requests: u64,
    outage_calls: u64,
    outage_p50: Duration,
    outage_p99: Duration,
    /// Calls the breaker rejected: how fast they returned.
    rejected: Vec<Duration>,
    /// From the backend's recovery to the breaker closing, or (without a
    /// breaker) to the first call that succeeded.
    recovery_detected: Option<Duration>,
    /// Caller p99 once recovered: what one probe takes.
    recovered_p99: Duration,
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort_unstable();
    let rank = (p * values.len() as f64).ceil() as usize;
    values.get(rank.max(1) - 1).copied().unwrap_or_default()
}

fn attempts_in(records: &[CallRecord], (from, to): (Duration, Duration)) -> u64 {
    let attempts = records.iter().flat_map(|r| r.attempts.iter());
    attempts.filter(|&&at| from <= at && at < to).count() as u64
}

/// The interval the breaker was not closed: first trip to last close.
fn open_interval(session: &Session) -> Option<(Duration, Duration)> {
    let opened = session.transitions.first()?.at;
    let closed = session
        .transitions
        .iter()
        .rfind(|t| t.to == State::Closed)?
        .at;
    Some((opened, closed))
}

fn measure(session: &Session, open: (Duration, Duration)) -> Measured {
    let during = |r: &&CallRecord| OUTAGE.0 <= r.ended && r.ended < OUTAGE.1;
    let outage: Vec<Duration> = session
        .records
        .iter()
        .filter(during)
        .map(CallRecord::latency)
        .collect();
    let recovered = session.records.iter().filter(|r| r.started >= OUTAGE.1);
    let recovery_detected = match session.transitions.last() {
        Some(t) if t.to == State::Closed => Some(t.at.saturating_sub(OUTAGE.1)),
        Some(_) => None,
        None => recovered
            .clone()
            .find(|r| r.outcome == Outcome::Ok)
            .map(|r| r.ended - OUTAGE.1),
    };
    Measured {
        outage_requests: attempts_in(&session.records, OUTAGE),
        open_requests: attempts_in(&session.records, open),
        outage_calls: outage.len() as u64,
        outage_p50: percentile(outage.clone(), 0.50),
        outage_p99: percentile(outage, 0.99),
        rejected: session
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Rejected)
            .map(CallRecord::latency)
            .collect(),
        recovery_detected,
        recovered_p99: percentile(
            recovered
                .filter(|r| r.outcome == Outcome::Ok)
                .map(CallRecord::latency)
                .collect(),
            0.99,
        ),
    }
}

fn nanos(d: Duration) -> Cell {
    Cell::Nanos(d.as_nanos() as f64)
}

fn main() {
    support::configure_may();
    let runs: Vec<(&str, Cli, Session)> = WAYS
        .iter()
        .map(|&(name, flags)| {
            let args = [
                &["circuit_breaker", "--phases", SCRIPT, "--rate", "200"],
                flags,
            ]
            .concat();
            let cli = Cli::try_parse_from(args).expect("the bench's flags parse");
            let session = session::run(&cli).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            println!("{name}: {} calls", session.records.len());
            (name, cli, session)
        })
        .collect();
    let (_, breaker_cli, breaker_run) = &runs[2];
    let open = open_interval(breaker_run).expect("the breaker tripped and closed again");
    let measured: Vec<Measured> = runs.iter().map(|(_, _, s)| measure(s, open)).collect();

    let column = |cell: &dyn Fn(&Measured) -> Cell| measured.iter().map(cell).collect();
    let rows: Vec<(String, Vec<Cell>)> = vec![
        (
            "calls during the outage (4 s)".into(),
            column(&|m| Cell::Whole(m.outage_calls)),
        ),
        (
            "requests that reached the failing backend".into(),
            column(&|m| Cell::Whole(m.outage_requests)),
        ),
        (
            format!(
                "… of them while the breaker was open or half-open ({:.2} s)",
                (open.1 - open.0).as_secs_f64()
            ),
            column(&|m| Cell::Whole(m.open_requests)),
        ),
        (
            "caller p50 during the outage".into(),
            column(&|m| nanos(m.outage_p50)),
        ),
        (
            "caller p99 during the outage".into(),
            column(&|m| nanos(m.outage_p99)),
        ),
        (
            "a rejected call, p99".into(),
            column(&|m| match m.rejected.is_empty() {
                true => Cell::Empty,
                false => nanos(percentile(m.rejected.clone(), 0.99)),
            }),
        ),
        (
            "recovery detected after (breaker closed / first success)".into(),
            column(&|m| m.recovery_detected.map_or(Cell::Empty, nanos)),
        ),
    ];
    let titles: Vec<&str> = WAYS.iter().map(|(name, _)| *name).collect();
    support::write_cells_table(
        "circuit_breaker",
        "benchmarks.md",
        &format!(
            "One run of `{SCRIPT}` per column, {RATE} calls/s from 10 callers, 1 s per-attempt \
             timeout, 3 retries with full jitter from 10 ms; the breaker: window 20, 10 calls minimum, \
             50% failures, open 1 s, 3 probes; the budget: 20% of calls plus 10/s."
        ),
        &titles,
        &rows,
    );
    write_targets(&measured, breaker_cli);
    let slices = phases::slices(&breaker_cli.phases.0, breaker_cli.interval);
    let mut timeline = timeline::build(&slices, &breaker_run.records, &breaker_run.transitions);
    timeline.backend_requests = breaker_run.backend_requests;
    write_book(
        "timeline.svg",
        &svg::render(&timeline, &breaker_cli.phases.0),
    );
}

/// The three targets, each with what was measured and whether it
/// was met.
fn write_targets(measured: &[Measured], cli: &Cli) {
    let (retries, breaker) = (&measured[1], &measured[2]);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let mut text = String::new();
    let fewer = 1.0 - breaker.open_requests as f64 / retries.open_requests.max(1) as f64;
    writeln!(
        text,
        "- While the breaker was open or half-open, {} requests reached the failing backend \
         against {} with retries only over the same interval: {:.1}% fewer (target: at least \
         95% fewer): {}.",
        breaker.open_requests,
        retries.open_requests,
        fewer * 100.0,
        verdict(fewer >= 0.95)
    )
    .unwrap();
    let slowest = breaker.rejected.iter().max().copied().unwrap_or_default();
    let p99 = percentile(breaker.rejected.clone(), 0.99);
    writeln!(
        text,
        "- {} rejected calls returned in {:.1} µs at the 99th percentile, {:.1} µs at the \
         slowest (target: under 1 ms): {}.",
        breaker.rejected.len(),
        p99.as_secs_f64() * 1e6,
        slowest.as_secs_f64() * 1e6,
        verdict(!breaker.rejected.is_empty() && slowest < Duration::from_millis(1))
    )
    .unwrap();
    // The bound: the breaker may have re-opened just before the backend
    // recovered; it waits `open_for`, half-opens at the next call (one
    // caller period later at most), and closes when its probes return.
    let period = cli.caller_period().expect("a keepable rate") / cli.concurrency;
    let bound = cli.open_for + period + breaker.recovered_p99;
    let detected = breaker.recovery_detected;
    writeln!(
        text,
        "- The breaker closed {} after the backend recovered; the bound is the open interval \
         ({} ms) + the longest wait for the next call ({:.1} ms) + one probe (p99 {:.1} ms) = \
         {:.1} ms: {}.",
        detected.map_or("never".to_owned(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        )),
        cli.open_for.as_millis(),
        period.as_secs_f64() * 1e3,
        breaker.recovered_p99.as_secs_f64() * 1e3,
        bound.as_secs_f64() * 1e3,
        verdict(detected.is_some_and(|d| d <= bound))
    )
    .unwrap();
    print!("{text}");
    write_book("targets.md", &text);
}

fn write_book(file: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("book/circuit_breaker")
        .join(file);
    std::fs::write(&path, text).unwrap();
    println!("wrote {}", path.display());
}
