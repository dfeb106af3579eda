//! What a multi-stage chain of bounded channels buys: source -> stage A ->
//! stage B -> sink, one coroutine per stage (and a variant with two coroutines
//! on B, the slowest stage), against the same work done in one sequential
//! loop. Two cost mixes: CPU-heavy (a hash computed per item per stage) and
//! I/O-like (a 1 ms sleep per item per stage, 2 ms in B).
//!
//! `cargo bench --bench multi_stage_producer_consumer` runs it and rewrites the
//! chapter's table, `book/multi_stage_producer_consumer/benchmarks.md`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use may::go;
use may_patterns::bounded::{self, Receiver, Sender};
use support::{Ratio, Row, Table};

/// Slots in each of the chain's three channels.
const CAPACITY: usize = 8;
/// Hash rounds in one unit of CPU work.
const ROUNDS_PER_UNIT: u32 = 20_000;
/// Items through the chain per iteration, per mix.
const CPU_ITEMS: u64 = 200;
const SLEEP_ITEMS: u64 = 50;

/// The chain's stages, with each one's cost in units (B is the slowest).
#[derive(Clone, Copy)]
enum Stage {
    Source,
    A,
    B,
    Sink,
}

impl Stage {
    fn units(self) -> u32 {
        match self {
            Stage::B => 2,
            Stage::Source | Stage::A | Stage::Sink => 1,
        }
    }
}

/// What a stage's work on one item is made of.
#[derive(Clone, Copy)]
enum Mix {
    /// `ROUNDS_PER_UNIT` hash rounds per unit: the stage keeps a core busy.
    Cpu,
    /// A 1 ms sleep per unit: the stage waits, as for a network reply.
    Sleep,
}

/// A cheap 64-bit mix (splitmix64's finaliser), `rounds` times over.
fn hash_rounds(mut x: u64, rounds: u32) -> u64 {
    for _ in 0..rounds {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    x
}

/// One stage's work on one item. `sleep` is may's in the chain (it parks
/// only the coroutine) and std's in the sequential loop.
fn work(mix: Mix, stage: Stage, item: u64, sleep: fn(Duration)) -> u64 {
    let units = stage.units();
    match mix {
        Mix::Cpu => hash_rounds(item, units * ROUNDS_PER_UNIT),
        Mix::Sleep => {
            // 1 ms or more: shorter may sleeps hit a known may bug.
            sleep(Duration::from_millis(u64::from(units)));
            item.wrapping_add(u64::from(units))
        }
    }
}

/// Source, A, B and sink one after the other for each item, on this thread.
/// Returns the sum of what the sink computed.
fn sequential(mix: Mix, items: u64) -> u64 {
    (0..items)
        .map(|i| {
            let item = work(mix, Stage::Source, i, std::thread::sleep);
            let item = work(mix, Stage::A, item, std::thread::sleep);
            let item = work(mix, Stage::B, item, std::thread::sleep);
            work(mix, Stage::Sink, item, std::thread::sleep)
        })
        .fold(0, u64::wrapping_add)
}

/// Stage A: work on each item and pass it to B. B's workers see the end
/// when this sender is dropped.
fn stage_a(mix: Mix, rx: Receiver<u64>, tx: Sender<u64>) {
    for item in rx {
        tx.send(work(mix, Stage::A, item, may::coroutine::sleep))
            .unwrap();
    }
}

/// One B worker: work on items until A is done, pass them to the sink. The
/// sink's loop ends when the last B worker drops its sender.
fn stage_b(mix: Mix, rx: Receiver<u64>, tx: Sender<u64>) {
    for item in rx {
        tx.send(work(mix, Stage::B, item, may::coroutine::sleep))
            .unwrap();
    }
}

/// The same work as `sequential` as a chain of coroutines joined by bounded
/// channels, with `b_workers` coroutines sharing stage B. Items may reach the
/// sink out of order; the sum does not depend on it.
fn chain(mix: Mix, items: u64, b_workers: usize) -> u64 {
    let (to_a, a_in) = bounded::channel(CAPACITY);
    let (to_b, b_in) = bounded::channel(CAPACITY);
    let (to_sink, sink_in) = bounded::channel(CAPACITY);
    let source = go!(move || {
        for i in 0..items {
            to_a.send(work(mix, Stage::Source, i, may::coroutine::sleep))
                .unwrap();
        }
    });
    let a = go!(move || stage_a(mix, a_in, to_b));
    let b: Vec<_> = (0..b_workers)
        .map(|_| {
            let (rx, tx) = (b_in.clone(), to_sink.clone());
            go!(move || stage_b(mix, rx, tx))
        })
        .collect();
    // Only the B workers' clones may keep these ends open: the sink's loop
    // must end when the last worker finishes, not wait for this sender.
    drop((b_in, to_sink));
    let sink = go!(move || {
        sink_in
            .iter()
            .map(|item| work(mix, Stage::Sink, item, may::coroutine::sleep))
            .fold(0, u64::wrapping_add)
    });
    source.join().unwrap();
    a.join().unwrap();
    b.into_iter().for_each(|worker| worker.join().unwrap());
    sink.join().unwrap()
}

/// One table row: sequential, the chain, the chain with two B workers.
fn compare(c: &mut Criterion, group: &str, mix: Mix, items: u64) {
    let expected = sequential(mix, items);
    let mut group = c.benchmark_group(group);
    // One iteration takes milliseconds (CPU) to a quarter second (sleep):
    // 10 samples of equal size keep the whole bench within a few minutes.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("sequential", |b| {
        b.iter(|| assert_eq!(black_box(sequential(mix, items)), expected))
    });
    group.bench_function("chain", |b| {
        b.iter(|| assert_eq!(black_box(chain(mix, items, 1)), expected))
    });
    group.bench_function("chain_b2", |b| {
        b.iter(|| assert_eq!(black_box(chain(mix, items, 2)), expected))
    });
    group.finish();
}

fn main() {
    support::configure_may();
    let mut c = support::criterion();
    compare(&mut c, "multi_stage_cpu", Mix::Cpu, CPU_ITEMS);
    compare(&mut c, "multi_stage_sleep", Mix::Sleep, SLEEP_ITEMS);
    c.final_summary();
    support::write_table_columns(
        &Table {
            chapter: "multi_stage_producer_consumer",
            note: &format!(
                "Each cell is the time for one whole run: every item through source → \
                 A → B → sink. `sequential` does the four stages one after the other in \
                 one loop on one thread; `chain` runs one coroutine per stage, joined by \
                 `may_patterns::bounded` channels of capacity {CAPACITY}, on 2 may \
                 workers; `chain, B ×2` gives stage B, the slowest, two coroutines. A \
                 ratio above 1 is the chain's speed-up."
            ),
            columns: &[
                ("sequential", "sequential"),
                ("chain", "chain"),
                ("chain, B ×2", "chain_b2"),
            ],
            ratio: Ratio::FirstOverColumn,
            items_per_iteration: 1,
        },
        // The rows restate CPU_ITEMS, ROUNDS_PER_UNIT and SLEEP_ITEMS (a row's
        // label is a `&'static str`): change them together.
        &[
            Row {
                what: "CPU-heavy: 200 items, 20,000 hash rounds per stage (40,000 in B)",
                group: "multi_stage_cpu",
            },
            Row {
                what: "I/O-like: 50 items, 1 ms sleep per stage (2 ms in B)",
                group: "multi_stage_sleep",
            },
        ],
    );
}
