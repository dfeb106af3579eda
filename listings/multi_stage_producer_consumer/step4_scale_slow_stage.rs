//! Step 4: give the slow stage more workers. Several coroutines share one
//! stage by cloning its input `Receiver` and output `Sender`; each record
//! goes to exactly one of them. The run is measured with one enrich worker,
//! then with four, and the bottleneck moves.
//!
//! Run it: `cargo run --example step4_scale_slow_stage`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
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
    /// Coroutines sharing the stage, and the most that were working at once.
    workers: usize,
    peak_working: usize,
}

/// Run `f`, adding the time it took to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    *total += started.elapsed();
    result
}

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

/// One finished run: how long it took, each stage's numbers, what was written.
struct Run {
    elapsed: Duration,
    capacity: usize,
    stages: Vec<(&'static str, StageStats)>,
    written: Vec<u64>,
}

// ANCHOR: spawn_stage
/// A middle stage run by several worker coroutines.
struct Stage {
    workers: Vec<JoinHandle<StageStats>>,
    peak_working: Arc<AtomicUsize>,
}

/// Start `workers` coroutines that share one stage: each gets a clone of the
/// input receiver (a record goes to exactly one of them) and of the output
/// sender (the next stage's input ends when the last worker has finished).
fn spawn_stage<I, O, W>(workers: usize, input: Receiver<I>, output: Sender<O>, work: W) -> Stage
where
    I: Send + 'static,
    O: Send + 'static,
    W: Fn(I) -> O + Clone + Send + 'static,
{
    let working = Arc::new(AtomicUsize::new(0));
    let peak_working = Arc::new(AtomicUsize::new(0));
    let workers = (0..workers)
        .map(|_| {
            let (input, output, work) = (input.clone(), output.clone(), work.clone());
            let (working, peak) = (working.clone(), peak_working.clone());
            go!(move || {
                relay(input, output, move |item| {
                    let now = working.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let out = work(item);
                    working.fetch_sub(1, Ordering::SeqCst);
                    out
                })
            })
        })
        .collect();
    // `input` and `output` drop here, so only the workers hold the channels:
    // a clone kept here would keep the next stage waiting for input forever.
    Stage {
        workers,
        peak_working,
    }
}

impl Stage {
    /// Wait for every worker; add up their numbers.
    fn join(self) -> StageStats {
        let mut total = StageStats {
            workers: self.workers.len(),
            ..StageStats::default()
        };
        for worker in self.workers {
            let s = worker.join().expect("a stage worker panicked");
            total.items_in += s.items_in;
            total.items_out += s.items_out;
            total.busy += s.busy;
            total.starved += s.starved;
            total.blocked += s.blocked;
            total.input_high_water = total.input_high_water.max(s.input_high_water);
        }
        total.peak_working = self.peak_working.load(Ordering::SeqCst);
        total
    }
}
// ANCHOR_END: spawn_stage

/// A single coroutine's numbers, as a one-worker stage.
fn single(stats: StageStats) -> StageStats {
    StageStats {
        workers: 1,
        peak_working: 1,
        ..stats
    }
}

// ANCHOR: pipeline
fn run_pipeline(items: u64, capacity: usize, enrich_workers: usize, costs: Costs) -> Run {
    let started = Instant::now();
    let (lines_tx, lines_rx) = bounded::channel::<Line>(capacity);
    let (orders_tx, orders_rx) = bounded::channel::<Order>(capacity);
    let (enriched_tx, enriched_rx) = bounded::channel::<Enriched>(capacity);

    let reader = go!(move || source(items, lines_tx, |id| read_line(id, costs.read)));
    let parser = go!(move || relay(lines_rx, orders_tx, |l| parse(l, costs.parse_kib)));
    let enricher = spawn_stage(enrich_workers, orders_rx, enriched_tx, move |o| {
        enrich(o, costs.enrich)
    });
    // ANCHOR_END: pipeline
    let writer = go!(move || {
        let mut written = Vec::new();
        let stats = sink(enriched_rx, |record| {
            written.push(write(record, costs.write).0);
        });
        (stats, written)
    });

    let read_stats = single(reader.join().expect("the reader panicked"));
    let parse_stats = single(parser.join().expect("the parser panicked"));
    let enrich_stats = enricher.join();
    let (write_stats, written) = writer.join().expect("the writer panicked");
    Run {
        elapsed: started.elapsed(),
        capacity,
        stages: vec![
            ("read", read_stats),
            ("parse", parse_stats),
            ("enrich", enrich_stats),
            ("write", single(write_stats)),
        ],
        written,
    }
}

/// `part` as a percentage of `whole`.
fn pct(part: Duration, whole: Duration) -> f64 {
    100.0 * part.as_secs_f64() / whole.as_secs_f64()
}

// ANCHOR: report
impl Run {
    /// A stage's share of the time its workers had: `busy 100%` means every
    /// worker of the stage worked for the whole run.
    fn share(&self, stats: &StageStats, time: Duration) -> f64 {
        pct(time, self.elapsed) / stats.workers as f64
    }

    /// The stage whose workers spent the largest share of the run working.
    fn bottleneck(&self) -> &'static str {
        let busy_share = |s: &StageStats| self.share(s, s.busy);
        let busiest = self
            .stages
            .iter()
            .max_by(|(_, a), (_, b)| busy_share(a).total_cmp(&busy_share(b)))
            .expect("a pipeline has stages");
        busiest.0
    }

    fn throughput(&self) -> f64 {
        self.written.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        for (name, s) in &self.stages {
            let queue = match s.input_high_water {
                Some(depth) => format!(", input queue max ~{depth} of {}", self.capacity),
                None => String::new(),
            };
            println!(
                "  {name:<6} x{} busy {:.1}%, starved {:.1}%, blocked {:.1}%{queue}, working at once ~{}",
                s.workers,
                self.share(s, s.busy),
                self.share(s, s.starved),
                self.share(s, s.blocked),
                s.peak_working,
            );
        }
        println!("  bottleneck: {}", self.bottleneck());
    }
}
// ANCHOR_END: report

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let items = 100;
    let mut throughputs = Vec::new();
    for enrich_workers in [1, 4] {
        let run = run_pipeline(items, 8, enrich_workers, COSTS);
        println!(
            "{enrich_workers} enrich worker(s): {} records in {:.1?} (~{:.0} records/s)",
            run.written.len(),
            run.elapsed,
            run.throughput()
        );
        run.print();
        throughputs.push(run.throughput());
    }
    println!(
        "4 enrich workers instead of 1: throughput x~{:.1}",
        throughputs[1] / throughputs[0]
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

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
    fn several_workers_write_every_record_exactly_once() {
        configure_for_tests();
        let run = within_10s(|| run_pipeline(40, 4, 3, SLOW_ENRICH));
        // Several workers finish in any order: compare as sets.
        let mut ids = run.written.clone();
        ids.sort_unstable();
        assert_eq!(ids, (0..40).collect::<Vec<u64>>());
        let enrich = stage(&run, "enrich");
        assert_eq!((enrich.items_in, enrich.items_out), (40, 40));
    }

    #[test]
    fn the_workers_of_the_slow_stage_really_work_at_the_same_time() {
        configure_for_tests();
        // A structural fact, not a timing: with its queue full, more than one
        // enrich worker is inside its 4 ms wait at the same moment.
        let run = within_10s(|| run_pipeline(40, 4, 4, SLOW_ENRICH));
        let enrich = stage(&run, "enrich");
        assert_eq!(enrich.workers, 4);
        assert!(enrich.peak_working > 1, "peak {}", enrich.peak_working);
        assert!(enrich.peak_working <= 4);
    }

    #[test]
    fn a_single_worker_never_overlaps_with_itself() {
        configure_for_tests();
        let run = within_10s(|| run_pipeline(20, 4, 1, SLOW_ENRICH));
        assert_eq!(stage(&run, "enrich").peak_working, 1);
    }
}
