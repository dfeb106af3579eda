//! What a bounded buffer costs: moving u64 messages from producers to
//! consumers through a buffer of 64 slots, with this book's bounded channel
//! between coroutines, against may's unbounded channels (no backpressure: the
//! reference cost) and against std's `sync_channel` and crossbeam's `bounded`
//! between OS threads. Two shapes: 1 producer / 1 consumer and 4 / 4.
//!
//! `cargo bench --bench producer_consumer_bounded` runs it and rewrites the
//! chapter's table, `book/producer_consumer_bounded/benchmarks.md`.

mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput};
use may::go;
use may::sync::{mpmc, mpsc, Barrier};
use may_patterns::bounded;
use support::{Ratio, Row, Table};

/// Slots in every bounded buffer.
const CAPACITY: usize = 64;
/// Messages moved per criterion iteration; the table divides by it.
const BATCH: u64 = 10_000;

/// How many producers and consumers share one channel.
#[derive(Clone, Copy)]
struct Shape {
    producers: usize,
    consumers: usize,
    /// The criterion group measuring this shape: one row of the table.
    group: &'static str,
}

const ONE_TO_ONE: Shape = Shape {
    producers: 1,
    consumers: 1,
    group: "pc_bounded_1p_1c",
};

const FOUR_TO_FOUR: Shape = Shape {
    producers: 4,
    consumers: 4,
    group: "pc_bounded_4p_4c",
};

type Task<T> = Box<dyn FnOnce() -> T + Send>;

/// The tasks of one batch: producers that send their share of `BATCH`
/// messages, consumers that return how many they received.
struct Batch {
    producers: Vec<Task<()>>,
    consumers: Vec<Task<u64>>,
}

/// Marks the end of the stream: the last producer to finish sends one per
/// consumer, and a consumer stops at the first it receives. Every message
/// sent before it has then been taken, as the channels are FIFO.
///
/// Why not let the consumers stop when the last sender is dropped? may
/// 0.3.51's `mpmc` (may's unbounded 4/4 case here) loses that wake-up when
/// two receivers are about to park at the moment the last sender goes: one
/// stays parked forever. This bench hung on it. `may_patterns::bounded` now
/// queues its own end marker and is not affected, but so that all four
/// transports do the same work, they all use this marker.
const END: u64 = u64::MAX;

/// Build a batch from one sender per producer and one receiver per consumer.
fn batch<Tx, Rx>(
    senders: Vec<Tx>,
    receivers: Vec<Rx>,
    send: fn(&Tx, u64),
    recv: fn(&Rx) -> u64,
) -> Batch
where
    Tx: Send + 'static,
    Rx: Send + 'static,
{
    let share = BATCH / senders.len() as u64;
    let consumer_count = receivers.len();
    let producers_left = Arc::new(AtomicUsize::new(senders.len()));
    let producers = senders
        .into_iter()
        .enumerate()
        .map(|(i, tx)| -> Task<()> {
            let first = i as u64 * share;
            let producers_left = Arc::clone(&producers_left);
            Box::new(move || {
                (first..first + share).for_each(|n| send(&tx, n));
                if producers_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    (0..consumer_count).for_each(|_| send(&tx, END));
                }
            })
        })
        .collect();
    let consumers = receivers
        .into_iter()
        .map(|rx| -> Task<u64> {
            Box::new(move || {
                let mut received = 0;
                loop {
                    let n = recv(&rx);
                    if n == END {
                        return received;
                    }
                    black_box(n);
                    received += 1;
                }
            })
        })
        .collect();
    Batch {
        producers,
        consumers,
    }
}

/// `n` handles to one channel end.
fn clones<T: Clone>(end: T, n: usize) -> Vec<T> {
    vec![end; n]
}

fn may_bounded(shape: Shape) -> Batch {
    let (tx, rx) = bounded::channel(CAPACITY);
    batch(
        clones(tx, shape.producers),
        clones(rx, shape.consumers),
        |tx, n| tx.send(n).unwrap(),
        |rx| rx.recv().unwrap(),
    )
}

/// may's unbounded channels: `mpsc` for one consumer, `mpmc` (whose receiver
/// can be cloned) for several.
fn may_unbounded(shape: Shape) -> Batch {
    if shape.consumers == 1 {
        let (tx, rx) = mpsc::channel();
        batch(
            clones(tx, shape.producers),
            vec![rx],
            |tx, n| tx.send(n).unwrap(),
            |rx| rx.recv().unwrap(),
        )
    } else {
        let (tx, rx) = mpmc::channel();
        batch(
            clones(tx, shape.producers),
            clones(rx, shape.consumers),
            |tx, n| tx.send(n).unwrap(),
            |rx| rx.recv().unwrap(),
        )
    }
}

/// std's receiver cannot be cloned: several consumers share it behind a
/// mutex, the usual std idiom (the consumer holding the lock waits in `recv`
/// while the others wait for the lock).
fn std_sync_channel(shape: Shape) -> Batch {
    let (tx, rx) = std::sync::mpsc::sync_channel(CAPACITY);
    batch(
        clones(tx, shape.producers),
        clones(Arc::new(Mutex::new(rx)), shape.consumers),
        |tx, n| tx.send(n).unwrap(),
        |rx| rx.lock().unwrap().recv().unwrap(),
    )
}

fn crossbeam_bounded(shape: Shape) -> Batch {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    batch(
        clones(tx, shape.producers),
        clones(rx, shape.consumers),
        |tx, n| tx.send(n).unwrap(),
        |rx| rx.recv().unwrap(),
    )
}

/// Where a batch's tasks run.
#[derive(Clone, Copy)]
enum Runner {
    Coroutines,
    /// std's and crossbeam's bounded channels block the OS thread while the
    /// buffer is full or empty: on a coroutine that would block a may worker
    /// (and can deadlock once every worker waits), so they run between OS
    /// threads only.
    Threads,
}

/// Start `task` as a coroutine or a thread; the result is its `join`.
fn spawn<T: Send + 'static>(runner: Runner, task: impl FnOnce() -> T + Send + 'static) -> Task<T> {
    match runner {
        Runner::Coroutines => {
            let handle = go!(task);
            Box::new(move || handle.join().unwrap())
        }
        Runner::Threads => {
            let handle = std::thread::spawn(task);
            Box::new(move || handle.join().unwrap())
        }
    }
}

/// Run one batch and time it from the first task leaving the start gate to
/// the last consumer reaching the end marker, so neither spawning nor joining
/// is counted.
fn time_batch(runner: Runner, batch: Batch) -> Duration {
    // may's barrier parks threads and coroutines alike. Every task waits at
    // it, so a consumer thread still starting up does not count as channel
    // time.
    let gate = Arc::new(Barrier::new(batch.producers.len() + batch.consumers.len()));
    let consumers: Vec<Task<(u64, Instant)>> = batch
        .consumers
        .into_iter()
        .map(|consume| {
            let gate = Arc::clone(&gate);
            spawn(runner, move || {
                gate.wait();
                (consume(), Instant::now())
            })
        })
        .collect();
    let producers: Vec<Task<Instant>> = batch
        .producers
        .into_iter()
        .map(|produce| {
            let gate = Arc::clone(&gate);
            spawn(runner, move || {
                gate.wait();
                let start = Instant::now();
                produce();
                start
            })
        })
        .collect();
    let start = producers.into_iter().map(|join| join()).min().unwrap();
    let (received, end) = consumers
        .into_iter()
        .map(|join| join())
        .fold((0, start), |(total, last), (n, end)| {
            (total + n, last.max(end))
        });
    assert_eq!(received, BATCH, "a message was lost or duplicated");
    end - start
}

fn bench_transport(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    runner: Runner,
    shape: Shape,
    make: fn(Shape) -> Batch,
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_batch(runner, make(shape))).sum())
    });
}

fn transfer(c: &mut Criterion, shape: Shape) {
    let mut group = c.benchmark_group(shape.group);
    group.throughput(Throughput::Elements(BATCH));
    bench_transport(
        &mut group,
        "may_bounded",
        Runner::Coroutines,
        shape,
        may_bounded,
    );
    bench_transport(
        &mut group,
        "may_unbounded",
        Runner::Coroutines,
        shape,
        may_unbounded,
    );
    bench_transport(
        &mut group,
        "std_sync_channel",
        Runner::Threads,
        shape,
        std_sync_channel,
    );
    bench_transport(
        &mut group,
        "crossbeam_bounded",
        Runner::Threads,
        shape,
        crossbeam_bounded,
    );
    group.finish();
}

fn main() {
    support::configure_may();
    let mut c = support::criterion();
    transfer(&mut c, ONE_TO_ONE);
    transfer(&mut c, FOUR_TO_FOUR);
    c.final_summary();
    support::write_table_columns(
        &Table {
            chapter: "producer_consumer_bounded",
            note: &format!(
                "Each cell is the time per message: criterion's median time to move a \
                 batch of {BATCH} `u64` messages, divided by {BATCH}; a batch is timed from \
                 the first task starting to the last consumer done, without spawning or \
                 joining. Capacity {CAPACITY} for every bounded channel. `may bounded` is \
                 `may_patterns::bounded` and `may unbounded` is may's `mpsc` (1 consumer) \
                 or `mpmc` (4 consumers), which have no backpressure, both between \
                 coroutines on 2 may workers. `std sync_channel` (4 consumers share its \
                 receiver behind a `Mutex`) and `crossbeam bounded` run between OS \
                 threads, because they would block a may worker. A ratio above 1 means \
                 `may bounded` is faster."
            ),
            columns: &[
                ("may bounded", "may_bounded"),
                ("may unbounded", "may_unbounded"),
                ("std sync_channel", "std_sync_channel"),
                ("crossbeam bounded", "crossbeam_bounded"),
            ],
            ratio: Ratio::ColumnOverFirst,
            items_per_iteration: BATCH,
        },
        &[
            Row {
                what: "1 producer → 1 consumer",
                group: ONE_TO_ONE.group,
            },
            Row {
                what: "4 producers → 4 consumers",
                group: FOUR_TO_FOUR.group,
            },
        ],
    );
}
