//! Scatter-gather's latency against asking the backends one after another,
//! and what hedged requests do to the tail.
//!
//! 1. N backends (1, 4, 16, 64) answering in 2 ms: per-query latency
//!    (median, p99, max) of `sequential` calls vs the chapter's
//!    `scatter_gather`, over a fixed number of queries.
//! 2. 8 backends answering in 2 ms, 3% of requests in 50 ms: per-query
//!    latency without hedging, then with a hedge after the p95 of the single
//!    calls measured in the first run; the extra requests are the cost.
//!
//! Backends run in the bench's own process, on the same 2 may worker
//! threads as the client: their work is small, but it is not free.
//! `cargo bench --bench scatter_gather` rewrites
//! `book/scatter_gather/latency.md` and `book/scatter_gather/hedging.md`.

mod support;

// The program's `main`, CLI and tests (their imports) are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/scatter_gather/scatter_gather.rs"]
mod sg;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::backend::{Backend, BackendConfig};
use sg::{call, scatter_gather, CancelSlot, QueryConfig, Status};
use support::PercentileRow;

const LATENCY: Duration = Duration::from_millis(2);

fn backends(n: usize, slow_fraction: f64) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let mut config = BackendConfig::new(&format!("shop{i}"), LATENCY);
            config.seed = i as u64 + 1;
            config.slow_fraction = slow_fraction;
            config.slow_latency = Duration::from_millis(50);
            Backend::start(config).expect("a backend starts")
        })
        .collect()
}

fn summary(what: String, mut times: Vec<Duration>) -> PercentileRow {
    times.sort_unstable();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    PercentileRow {
        what,
        samples: times.len(),
        median: at(50),
        p99: at(99),
        max: times[times.len() - 1],
    }
}

/// Every backend, one after another, in one coroutine.
fn sequential(addrs: Vec<SocketAddr>) -> Duration {
    go!(move || {
        let started = Instant::now();
        for addr in addrs {
            call(addr, "lamp", Duration::from_secs(2), &CancelSlot::default()).expect("an answer");
        }
        started.elapsed()
    })
    .join()
    .unwrap()
}

fn config(quorum: usize, hedge_after: Option<Duration>) -> QueryConfig {
    QueryConfig {
        query: "lamp".into(),
        timeout: Duration::from_secs(2),
        quorum,
        hedge_after,
    }
}

fn fan_out_rows() -> Vec<PercentileRow> {
    let mut rows = Vec::new();
    for n in [1, 4, 16, 64] {
        let running = backends(n, 0.0);
        let addrs: Vec<SocketAddr> = running.iter().map(|b| b.addr).collect();
        let queries = if n == 64 { 30 } else { 100 };
        let seq = (0..queries).map(|_| sequential(addrs.clone())).collect();
        let backends = if n == 1 { "backend" } else { "backends" };
        rows.push(summary(format!("sequential, {n} {backends}"), seq));
        let sg = (0..queries)
            .map(|_| {
                let started = Instant::now();
                let report = scatter_gather(&addrs, &config(n, None));
                assert!(report.complete, "every backend answers");
                started.elapsed()
            })
            .collect();
        rows.push(summary(format!("scatter-gather, {n} {backends}"), sg));
    }
    rows
}

fn hedging_rows() -> Vec<PercentileRow> {
    const QUERIES: usize = 300;
    let running = backends(8, 0.03);
    let addrs: Vec<SocketAddr> = running.iter().map(|b| b.addr).collect();
    let requests = || -> u64 {
        let count = |b: &Backend| b.stats.requests.load(Ordering::SeqCst);
        running.iter().map(count).sum()
    };
    let mut single_calls = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..QUERIES {
        let started = Instant::now();
        let report = scatter_gather(&addrs, &config(8, None));
        plain.push(started.elapsed());
        for b in &report.backends {
            if let Status::Answered { ms, .. } = b.status {
                single_calls.push(Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }
    single_calls.sort_unstable();
    let p95 = single_calls[single_calls.len() * 95 / 100].max(Duration::from_millis(1));
    let before = requests();
    let mut hedged = Vec::new();
    for _ in 0..QUERIES {
        let started = Instant::now();
        scatter_gather(&addrs, &config(8, Some(p95)));
        hedged.push(started.elapsed());
    }
    let sent = requests() - before;
    let base = (QUERIES * addrs.len()) as f64;
    let extra = (sent as f64 - base) / base * 100.0;
    vec![
        summary("no hedging".into(), plain),
        summary(
            format!("hedge after the measured p95 ({p95:.1?}): {extra:.1}% extra requests"),
            hedged,
        ),
    ]
}

fn main() {
    support::configure_may();
    let rows = fan_out_rows();
    support::write_percentile_table(
        "scatter_gather",
        "latency.md",
        "Per-query latency over loopback, backends in this process answering in 2 ms each \
         (100 queries; 30 with 64 backends). `sequential` calls the backends one after another \
         in one coroutine; `scatter-gather` is the chapter's `scatter_gather`, one coroutine per \
         backend, quorum = all, 2 may worker threads shared with the backends.",
        &rows,
    );
    let rows = hedging_rows();
    support::write_percentile_table(
        "scatter_gather",
        "hedging.md",
        "300 queries to 8 backends that answer in 2 ms, except 3% of requests (chosen by a \
         seeded hash per backend) that take 50 ms. A query waits for all 8, so 1 - 0.97^8, \
         about 22%, of queries meet at least one slow request. The hedge delay is the p95 of \
         the single calls measured in the unhedged run; extra requests are the hedges sent \
         as a share of the 2,400 first requests.",
        &rows,
    );
}
