//! Step 2: the same chain, with one loop per shape of stage instead of one
//! per stage. A source makes records and sends them on, a relay receives,
//! works and sends, a sink receives and consumes; each takes its work as a
//! closure. Step 3 measures inside these three loops, and only there.
//!
//! Run it: `cargo run --example step2_stage_shapes`

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::runtime::{configure_once, Settings};

/// What the read stage produces: one raw line, `id,customer,amount_cents`.
struct Line {
    id: u64,
    text: String,
}

/// What the parse stage produces.
struct Order {
    id: u64,
    customer: u32,
    cents: u64,
    /// A checksum of the line: the parse stage's CPU work, kept so it is used.
    digest: u64,
}

/// What the enrich stage produces: the order plus a looked-up region.
struct Enriched {
    order: Order,
    region: &'static str,
}

/// What one record costs in each stage.
#[derive(Clone, Copy, Debug)]
struct Costs {
    /// I/O-like: waiting for the next line from a file or socket.
    read: Duration,
    /// CPU-like: KiB of data hashed per record.
    parse_kib: usize,
    /// I/O-like: a lookup in a remote service; the slowest stage.
    enrich: Duration,
    /// I/O-like: the sink's write.
    write: Duration,
}

/// Whole milliseconds: short may sleeps can corrupt may 0.3.51's heap (book: Pitfalls reference).
const COSTS: Costs = Costs {
    read: Duration::from_millis(1),
    parse_kib: 4,
    enrich: Duration::from_millis(4),
    write: Duration::from_millis(2),
};

/// Simulated I/O: park this coroutine (never its worker thread).
fn io_wait(cost: Duration) {
    if !cost.is_zero() {
        may::coroutine::sleep(cost);
    }
}

fn read_line(id: u64, cost: Duration) -> Line {
    io_wait(cost);
    let text = format!("{id},{},{}", id % 97, 100 + id * 37 % 9_000);
    Line { id, text }
}

fn parse(line: Line, kib: usize) -> Order {
    let fields: Vec<&str> = line.text.split(',').collect();
    Order {
        id: line.id,
        customer: fields[1].parse().expect("the reader writes numbers"),
        cents: fields[2].parse().expect("the reader writes numbers"),
        digest: checksum(&line.text, kib),
    }
}

/// CPU-like cost: FNV-1a over `kib` KiB made of the line's bytes, repeated.
fn checksum(text: &str, kib: usize) -> u64 {
    text.bytes()
        .cycle()
        .take(kib * 1024)
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

fn enrich(order: Order, cost: Duration) -> Enriched {
    const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
    io_wait(cost); // the lookup service answers
    let region = REGIONS[order.customer as usize % REGIONS.len()];
    Enriched { order, region }
}

/// "Write" the record: format its output line and wait for the sink.
/// Returns the record's id and the bytes written.
fn write(record: Enriched, cost: Duration) -> (u64, usize) {
    let Enriched { order, region } = record;
    let out = format!(
        "{},{},{region},{},{:016x}\n",
        order.id, order.customer, order.cents, order.digest
    );
    io_wait(cost);
    (order.id, out.len())
}

// ANCHOR: shapes
/// The first stage: make `items` records, send each on.
fn source<O>(items: u64, output: Sender<O>, make: impl Fn(u64) -> O) {
    for id in 0..items {
        output.send(make(id)).expect("the next stage stopped early");
    }
}

/// A middle stage: receive, work, send, until its input ends.
fn relay<I, O>(input: Receiver<I>, output: Sender<O>, work: impl Fn(I) -> O) {
    for item in input {
        output
            .send(work(item))
            .expect("the next stage stopped early");
    }
}

/// The last stage: receive and consume, until its input ends.
fn sink<I>(input: Receiver<I>, consume: impl FnMut(I)) {
    input.into_iter().for_each(consume);
}
// ANCHOR_END: shapes

/// What reached the sink: ids in arrival order, and bytes written.
struct Written {
    ids: Vec<u64>,
    bytes: usize,
}

// ANCHOR: pipeline
fn run_pipeline(items: u64, capacity: usize, costs: Costs) -> Written {
    let (lines_tx, lines_rx) = bounded::channel::<Line>(capacity);
    let (orders_tx, orders_rx) = bounded::channel::<Order>(capacity);
    let (enriched_tx, enriched_rx) = bounded::channel::<Enriched>(capacity);

    let reader = go!(move || source(items, lines_tx, |id| read_line(id, costs.read)));
    let parser = go!(move || relay(lines_rx, orders_tx, |l| parse(l, costs.parse_kib)));
    let enricher = go!(move || relay(orders_rx, enriched_tx, |o| enrich(o, costs.enrich)));
    let writer = go!(move || {
        let mut written = Written {
            ids: Vec::new(),
            bytes: 0,
        };
        sink(enriched_rx, |record| {
            let (id, bytes) = write(record, costs.write);
            written.ids.push(id);
            written.bytes += bytes;
        });
        written
    });

    for stage in [reader, parser, enricher] {
        stage.join().expect("a stage panicked");
    }
    writer.join().expect("the writer panicked")
}
// ANCHOR_END: pipeline

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let items = 100;
    let started = Instant::now();
    let written = run_pipeline(items, 8, COSTS);
    let elapsed = started.elapsed();
    println!(
        "{} of {items} records went read -> parse -> enrich -> write ({} bytes) in {elapsed:.1?}",
        written.ids.len(),
        written.bytes
    );
    println!(
        "throughput ~{:.0} records/s; one record alone waits {:?} in all",
        items as f64 / elapsed.as_secs_f64(),
        COSTS.read + COSTS.enrich + COSTS.write
    );
    let in_order = written.ids.iter().copied().eq(0..items);
    println!("written once each, in the order read: {in_order}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    const FAST: Costs = Costs {
        read: Duration::from_millis(1),
        parse_kib: 1,
        enrich: Duration::from_millis(1),
        write: Duration::from_millis(1),
    };

    /// Run `f` on a coroutine and fail the test if it takes more than 10 s.
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done_tx, done_rx) = may::sync::mpsc::channel();
        go!(move || {
            let _ = done_tx.send(f());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the pipeline did not finish within 10 s")
    }

    #[test]
    fn every_record_is_written_once_in_order() {
        configure_for_tests();
        let written = within_10s(|| run_pipeline(40, 4, FAST));
        assert_eq!(written.ids, (0..40).collect::<Vec<u64>>());
    }

    #[test]
    fn a_queue_of_one_slot_still_delivers_everything() {
        configure_for_tests();
        let written = within_10s(|| run_pipeline(20, 1, FAST));
        assert_eq!(written.ids, (0..20).collect::<Vec<u64>>());
    }

    #[test]
    fn no_records_means_every_stage_ends_at_once() {
        configure_for_tests();
        let written = within_10s(|| run_pipeline(0, 4, FAST));
        assert!(written.ids.is_empty());
        assert_eq!(written.bytes, 0);
    }

    #[test]
    fn parse_reads_the_fields_the_reader_wrote() {
        let order = parse(read_line(42, Duration::ZERO), 1);
        assert_eq!((order.id, order.customer, order.cents), (42, 42, 1654));
        assert_eq!(order.digest, checksum("42,42,1654", 1));
    }
}
