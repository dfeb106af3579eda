//! Step 3: measure each stage. Every stage times what it does with its
//! time: working, waiting for input (starved), or waiting for room downstream
//! (blocked); each queue reports the deepest it got. The stage that works
//! nearly all the time, with a full queue in front of it, is the bottleneck.
//!
//! Run it: `cargo run --example step3_stage_utilisation`

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

// ANCHOR: stats
/// Where one stage's time went, and how deep its input queue got.
#[derive(Debug, Default)]
struct StageStats {
    items_in: u64,
    items_out: u64,
    /// Doing its own work, its own I/O waits included.
    busy: Duration,
    /// Parked in `recv`: the stages before it do not keep up.
    starved: Duration,
    /// Parked in `send`: the next stage's queue is full.
    blocked: Duration,
    /// The deepest its input queue got (the source has no input queue).
    input_high_water: Option<usize>,
}

/// Run `f`, adding the time it took to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    *total += started.elapsed();
    result
}
// ANCHOR_END: stats

// ANCHOR: stages
/// The first stage: make `items` records, send each on.
fn source<O>(items: u64, output: Sender<O>, make: impl Fn(u64) -> O) -> StageStats {
    let mut stats = StageStats::default();
    for id in 0..items {
        let item = timed(&mut stats.busy, || make(id));
        stats.items_in += 1;
        timed(&mut stats.blocked, || output.send(item)).expect("the next stage stopped early");
        stats.items_out += 1;
    }
    stats
}

/// A middle stage: receive, work, send, until its input ends.
fn relay<I, O>(input: Receiver<I>, output: Sender<O>, work: impl Fn(I) -> O) -> StageStats {
    let mut stats = StageStats::default();
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        stats.items_in += 1;
        let item = timed(&mut stats.busy, || work(item));
        timed(&mut stats.blocked, || output.send(item)).expect("the next stage stopped early");
        stats.items_out += 1;
    }
    stats.input_high_water = Some(input.high_water());
    stats
}

/// The last stage: receive and consume, until its input ends.
fn sink<I>(input: Receiver<I>, mut consume: impl FnMut(I)) -> StageStats {
    let mut stats = StageStats::default();
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        stats.items_in += 1;
        timed(&mut stats.busy, || consume(item));
        stats.items_out += 1;
    }
    stats.input_high_water = Some(input.high_water());
    stats
}
// ANCHOR_END: stages

/// One finished run: how long it took, each stage's numbers, what was written.
struct Run {
    elapsed: Duration,
    capacity: usize,
    stages: Vec<(&'static str, StageStats)>,
    written: Vec<u64>,
}

fn run_pipeline(items: u64, capacity: usize, costs: Costs) -> Run {
    let started = Instant::now();
    let (lines_tx, lines_rx) = bounded::channel::<Line>(capacity);
    let (orders_tx, orders_rx) = bounded::channel::<Order>(capacity);
    let (enriched_tx, enriched_rx) = bounded::channel::<Enriched>(capacity);

    let reader = go!(move || source(items, lines_tx, |id| read_line(id, costs.read)));
    let parser = go!(move || relay(lines_rx, orders_tx, |l| parse(l, costs.parse_kib)));
    let enricher = go!(move || relay(orders_rx, enriched_tx, |o| enrich(o, costs.enrich)));
    let writer = go!(move || {
        let mut written = Vec::new();
        let stats = sink(enriched_rx, |record| {
            written.push(write(record, costs.write).0);
        });
        (stats, written)
    });

    let mut stages = Vec::new();
    for (name, stage) in [("read", reader), ("parse", parser), ("enrich", enricher)] {
        stages.push((name, stage.join().expect("a stage panicked")));
    }
    let (write_stats, written) = writer.join().expect("the writer panicked");
    stages.push(("write", write_stats));
    Run {
        elapsed: started.elapsed(),
        capacity,
        stages,
        written,
    }
}

// ANCHOR: report
/// `part` as a percentage of `whole`.
fn pct(part: Duration, whole: Duration) -> f64 {
    100.0 * part.as_secs_f64() / whole.as_secs_f64()
}

impl Run {
    /// The stage that spent the largest share of the run working.
    fn bottleneck(&self) -> &'static str {
        let busiest = self
            .stages
            .iter()
            .max_by_key(|(_, stats)| stats.busy)
            .expect("a pipeline has stages");
        busiest.0
    }

    fn print(&self) {
        for (name, s) in &self.stages {
            let queue = match s.input_high_water {
                Some(depth) => format!(", input queue max ~{depth} of {}", self.capacity),
                None => String::new(),
            };
            println!(
                "  {name:<6} busy {:.1}%, starved {:.1}%, blocked {:.1}%{queue}",
                pct(s.busy, self.elapsed),
                pct(s.starved, self.elapsed),
                pct(s.blocked, self.elapsed),
            );
        }
        println!("  bottleneck: {}", self.bottleneck());
    }
}
// ANCHOR_END: report

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let items = 100;
    let run = run_pipeline(items, 8, COSTS);
    println!(
        "{} records in {:.1?} (~{:.0} records/s), queues of {} slots:",
        run.written.len(),
        run.elapsed,
        items as f64 / run.elapsed.as_secs_f64(),
        run.capacity
    );
    run.print();
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// Enrich is four times slower than every other stage.
    const SLOW_ENRICH: Costs = Costs {
        read: Duration::from_millis(1),
        parse_kib: 1,
        enrich: Duration::from_millis(4),
        write: Duration::from_millis(1),
    };

    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done_tx, done_rx) = may::sync::mpsc::channel();
        go!(move || {
            let _ = done_tx.send(f());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the pipeline did not finish within 10 s")
    }

    fn stage<'a>(run: &'a Run, name: &str) -> &'a StageStats {
        &run.stages.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn every_stage_counts_every_record_in_and_out() {
        configure_for_tests();
        let run = within_10s(|| run_pipeline(30, 4, SLOW_ENRICH));
        assert_eq!(run.written, (0..30).collect::<Vec<u64>>());
        for (name, stats) in &run.stages {
            assert_eq!((stats.items_in, stats.items_out), (30, 30), "{name}");
        }
    }

    #[test]
    fn the_slow_stage_is_found_with_a_full_queue_in_front_of_it() {
        configure_for_tests();
        let run = within_10s(|| run_pipeline(30, 4, SLOW_ENRICH));
        assert_eq!(run.bottleneck(), "enrich");
        // The reader outruns enrich, so enrich's queue fills up...
        assert_eq!(stage(&run, "enrich").input_high_water, Some(4));
        // ...and the stages in front of it spend time parked in `send`.
        assert!(stage(&run, "read").blocked > Duration::ZERO);
    }

    #[test]
    fn queue_depths_never_exceed_the_capacity() {
        configure_for_tests();
        let run = within_10s(|| run_pipeline(30, 2, SLOW_ENRICH));
        for (name, stats) in &run.stages {
            assert!(stats.input_high_water.unwrap_or(0) <= 2, "{name}");
        }
    }
}
