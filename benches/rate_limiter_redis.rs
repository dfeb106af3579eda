//! What a decision costs when the limit lives in Redis (step 10), against
//! the in-process limiter.
//!
//! One group per number of coroutines (1, 4, 16, 64), each coroutine with a
//! connection of its own, all on one key, criterion's time per decision
//! (wall time over the whole batch, so with several coroutines it is the
//! inverse of the throughput):
//!
//! - `in_process`: `Limiter<_, Gcra>::check` shared by every coroutine;
//! - `evalsha`: step 10's `RedisGcra::check`, one EVALSHA round trip;
//! - `ping`: a PING round trip on the same kind of connection, the floor
//!   under any Redis call from this client.
//!
//! Then `redis-benchmark` (Redis's own C client) sends the same EVALSHA and
//! PING with 1 and 64 connections, to show what of the cost is the client.
//! The redis-server is the bench's own (step 10's `RedisServer`), on the
//! same 2 cores as the client. `cargo bench --bench rate_limiter_redis`
//! rewrites `book/rate_limiter/redis.md` and
//! `book/rate_limiter/redis_benchmark.md`.

mod support;

// The step's `main`, demo and tests are not used here.
#[allow(dead_code, unused_imports)]
#[path = "../listings/rate_limiter/step10_redis_gcra.rs"]
mod step10;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::ratelimit::{Gcra, Limiter, Quota};
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};
use step10::{Connection, RedisGcra, RedisServer};
use support::{Cell, Ratio, Row, Table};

const COROUTINES: [usize; 4] = [1, 4, 16, 64];
const KEY: &str = "bench";

/// One unit per microsecond, a billion at once: every decision is admitted,
/// so each one takes the script's longer path (it writes the key).
fn quota() -> Quota {
    Quota::new(1_000_000, Duration::from_secs(1), 1_000_000_000).unwrap()
}

/// `iters` calls of `work` spread over one coroutine per worker (each
/// coroutine owns its worker: a connection, or a handle on the shared
/// limiter); the wall time, scaled to exactly `iters` calls.
fn spread<T: Send + 'static>(workers: &mut Vec<T>, iters: u64, work: fn(&mut T)) -> Duration {
    let n = workers.len() as u64;
    let each = iters.div_ceil(n);
    let started = Instant::now();
    let running: Vec<_> = workers
        .drain(..)
        .map(|mut worker| {
            go!(move || {
                for _ in 0..each {
                    work(&mut worker);
                }
                worker
            })
        })
        .collect();
    workers.extend(running.into_iter().map(|h| h.join().unwrap()));
    started.elapsed().mul_f64(iters as f64 / (each * n) as f64)
}

/// A value made on a coroutine (may sockets are made where they are used).
fn on_coroutine<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    go!(f).join().unwrap()
}

fn main() {
    support::configure_may();
    let server =
        RedisServer::start().unwrap_or_else(|e| panic!("this bench needs redis-server: {e}"));
    let addr = server.addr;
    let timeout = Duration::from_secs(2);
    let mut c = support::criterion();
    let mut rows = Vec::new();
    for n in COROUTINES {
        let group_name: &'static str = format!("rate_limiter_redis_{n}").leak();
        let mut group = c.benchmark_group(group_name);
        let shared = Arc::new(Limiter::new(Gcra::new(quota()), 1024));
        let mut handles: Vec<_> = (0..n).map(|_| Arc::clone(&shared)).collect();
        group.bench_function("in_process", |b| {
            b.iter_custom(|iters| {
                spread(&mut handles, iters, |limiter| {
                    assert!(limiter.check(&KEY, 1).is_admitted());
                })
            })
        });
        let mut limiters: Vec<RedisGcra> = (0..n)
            .map(|_| on_coroutine(move || RedisGcra::connect(addr, quota(), timeout).unwrap()))
            .collect();
        group.bench_function("evalsha", |b| {
            b.iter_custom(|iters| {
                spread(&mut limiters, iters, |limiter| {
                    assert!(limiter.check(KEY, 1).unwrap().is_admitted());
                })
            })
        });
        let mut connections: Vec<Connection> = (0..n)
            .map(|_| on_coroutine(move || Connection::connect(addr, timeout).unwrap()))
            .collect();
        group.bench_function("ping", |b| {
            b.iter_custom(|iters| {
                spread(&mut connections, iters, |conn| {
                    let pong = conn.call(&[BorrowedFrame::BulkString(b"PING")]).unwrap();
                    assert_eq!(pong, OwnedFrame::SimpleString(b"PONG".to_vec()));
                })
            })
        });
        group.finish();
        let what: &'static str = match n {
            1 => "1 coroutine: one decision",
            _ => format!("{n} coroutines, one connection each: time per decision").leak(),
        };
        rows.push(Row {
            what,
            group: group_name,
        });
    }
    c.final_summary();
    let table = Table {
        chapter: "rate_limiter",
        note: "Criterion medians, one key; with several coroutines the wall time of a \
               batch over its decisions (the inverse of the throughput). In process: \
               `Limiter::check` with GCRA; Redis: step 10's script over loopback; \
               PING: the same client's round trip with no script.",
        columns: &[
            ("in process", "in_process"),
            ("Redis script", "evalsha"),
            ("Redis PING", "ping"),
        ],
        ratio: Ratio::ColumnOverFirst,
        items_per_iteration: 1,
    };
    support::write_table_file(&table, &rows, "redis.md");
    name_this_bench("redis.md");
    redis_benchmark(&server);
}

/// The table writer names `cargo bench --bench <chapter>`, and this bench
/// is not the chapter's main one.
fn name_this_bench(file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book/rate_limiter")
        .join(file);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return; // a filtered run left it unwritten
    };
    let text = text.replace(
        "`cargo bench --bench rate_limiter`",
        "`cargo bench --bench rate_limiter_redis`",
    );
    std::fs::write(&path, text).unwrap();
}

/// Runs of redis-benchmark per cell: one run is easily disturbed on a
/// shared machine, so a cell is the median run.
const RUNS: usize = 3;

/// redis-benchmark's requests per second and median latency for one command,
/// from the run with the median requests per second.
fn redis_benchmark_median(
    server: &RedisServer,
    connections: usize,
    command: &[&str],
) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (0..RUNS)
        .map(|_| redis_benchmark_one(server, connections, command))
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[RUNS / 2]
}

/// One run of redis-benchmark: requests per second and median latency.
fn redis_benchmark_one(server: &RedisServer, connections: usize, command: &[&str]) -> (f64, f64) {
    let port = server.addr.port().to_string();
    let clients = connections.to_string();
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            &clients,
            "-n",
            "20000",
            "--csv",
        ])
        .args(command)
        .output()
        .unwrap_or_else(|e| panic!("this bench needs redis-benchmark (Debian: redis-tools): {e}"));
    assert!(out.status.success(), "redis-benchmark failed: {out:?}");
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).expect("a result line");
    let cells: Vec<f64> = line
        .split(',')
        .skip(1)
        .map(|cell| cell.trim_matches('"').parse().expect("a number"))
        .collect();
    (cells[0], cells[3] * 1e6)
}

fn redis_benchmark(server: &RedisServer) {
    let addr = server.addr;
    let sha = on_coroutine(move || {
        let limiter = RedisGcra::connect(addr, quota(), Duration::from_secs(2)).unwrap();
        limiter.sha().to_owned()
    });
    // The same arguments RedisGcra::check sends: T = 1 µs, burst 10⁹, cost 1.
    let evalsha = ["EVALSHA", &sha, "1", KEY, "1", "1000000000", "1"];
    let ping = ["PING"];
    let mut rows = Vec::new();
    for (what, command) in [
        ("PING", &ping[..]),
        ("the GCRA script (EVALSHA)", &evalsha[..]),
    ] {
        for connections in [1, 64] {
            let (per_second, p50_ns) = redis_benchmark_median(server, connections, command);
            rows.push((
                format!(
                    "{what}, {connections} connection{}",
                    if connections == 1 { "" } else { "s" }
                ),
                vec![Cell::Nanos(1e9 / per_second), Cell::Nanos(p50_ns)],
            ));
        }
    }
    support::write_cells_table(
        "rate_limiter",
        "redis_benchmark.md",
        "Redis's own C client on the same redis-server (`redis-benchmark -c N \
         -n 20000`), the median of 3 runs; time per request is 1 ÷ its requests \
         per second, latency its median.",
        &["time per request", "median latency"],
        &rows,
    );
    name_this_bench("redis_benchmark.md");
}
