//! The primer's costs: spawning and joining a task, and a message round trip
//! between two tasks, on may coroutines versus OS threads.
//!
//! `cargo bench --bench may_primer` runs it and rewrites the primer's table,
//! `book/may_primer/benchmarks.md`.

mod support;

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use may::go;
use support::Row;

fn spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");
    group.bench_function("may", |b| b.iter(|| go!(|| black_box(1)).join().unwrap()));
    group.bench_function("std_thread", |b| {
        b.iter(|| std::thread::spawn(|| black_box(1)).join().unwrap())
    });
    group.finish();
}

/// `iters` ping/pong exchanges between the caller and an echoing peer over
/// two channels, timed from the caller's side.
fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.bench_function("may", |b| {
        b.iter_custom(|iters| {
            let (ping_tx, ping_rx) = may::sync::mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = may::sync::mpsc::channel::<u64>();
            let echo = go!(move || ping_rx.iter().for_each(|n| pong_tx.send(n).unwrap()));
            // The pinger is a coroutine too: coroutine-to-coroutine is the case
            // the book's patterns use.
            let elapsed = go!(move || {
                let start = Instant::now();
                for n in 0..iters {
                    ping_tx.send(n).unwrap();
                    black_box(pong_rx.recv().unwrap());
                }
                start.elapsed()
            })
            .join()
            .unwrap();
            echo.join().unwrap();
            elapsed
        })
    });
    group.bench_function("std_thread", |b| {
        b.iter_custom(|iters| {
            let (ping_tx, ping_rx) = std::sync::mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = std::sync::mpsc::channel::<u64>();
            let echo =
                std::thread::spawn(move || ping_rx.iter().for_each(|n| pong_tx.send(n).unwrap()));
            let start = Instant::now();
            for n in 0..iters {
                ping_tx.send(n).unwrap();
                black_box(pong_rx.recv().unwrap());
            }
            let elapsed = start.elapsed();
            drop(ping_tx);
            echo.join().unwrap();
            elapsed
        })
    });
    group.finish();
}

fn main() {
    support::configure_may();
    let mut c = support::criterion();
    spawn_join(&mut c);
    round_trip(&mut c);
    c.final_summary();
    support::write_table(
        "may_primer",
        "may",
        "std_thread",
        &[
            Row {
                what: "spawn + join one task",
                group: "spawn_join",
            },
            Row {
                what: "round trip over two channels",
                group: "round_trip",
            },
        ],
    );
}
