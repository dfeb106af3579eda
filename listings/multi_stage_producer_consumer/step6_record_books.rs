//! Step 6: the books of the whole chain. Step 5's three ways to stop, and
//! where every record read is at the end: written, rejected, or abandoned,
//! either in a stage's hand or still in a queue when the stage reading that
//! queue stopped. The books balance for every way of stopping, and a shorter
//! queue abandons less when the sink fails.
//!
//! Run it: `cargo run --example step6_record_books`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::go;
use may_patterns::bounded::{self, Receiver, SendError, Sender};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;

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

/// Faults to inject, to see how the chain copes.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Every n-th line the reader produces is malformed.
    bad_every: Option<u64>,
    /// The sink fails for good once it has written this many records.
    sink_fails_after: Option<u64>,
}

fn read_line(id: u64, cost: Duration, faults: Faults) -> Line {
    io_wait(cost);
    let (customer, cents) = (id % 97, 100 + id * 37 % 9_000);
    let bad = faults.bad_every.filter(|n| (id + 1).is_multiple_of(*n));
    let text = match bad {
        // Bad records alternate: a missing field, then a broken amount.
        Some(n) if (id + 1) / n % 2 == 1 => format!("{id},{customer}"),
        Some(_) => format!("{id},{customer},{cents}.5.0"),
        None => format!("{id},{customer},{cents}"),
    };
    Line { id, text }
}

/// Why a record was rejected; counted per reason.
type Reject = &'static str;

/// A bad line is an error to count, not a reason to stop the chain.
fn parse(line: Line, kib: usize) -> Result<Order, Reject> {
    let mut fields = line.text.split(',').skip(1);
    let (Some(customer), Some(cents)) = (fields.next(), fields.next()) else {
        return Err("missing field");
    };
    Ok(Order {
        id: line.id,
        customer: customer.parse().map_err(|_| "customer is not a number")?,
        cents: cents.parse().map_err(|_| "amount is not a number")?,
        digest: checksum(&line.text, kib),
    })
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

/// Where one stage's time and records went.
#[derive(Debug, Default)]
struct StageStats {
    items_in: u64,
    items_out: u64,
    /// Records this stage refused, by reason.
    rejected: BTreeMap<Reject, u64>,
    /// Records this stage held when the stages after it had stopped.
    abandoned: u64,
    busy: Duration,
    starved: Duration,
    blocked: Duration,
    input_high_water: Option<usize>,
    workers: usize,
    peak_working: usize,
}

impl StageStats {
    fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Every record that came in went out, was rejected, or was abandoned.
    fn balances(&self) -> bool {
        self.items_in == self.items_out + self.rejected_total() + self.abandoned
    }
}

/// Run `f`, adding the time it took to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    *total += started.elapsed();
    result
}

/// The first stage: make records until `items` are made, `stop` is
/// triggered, or the next stage is gone.
fn source<O>(
    items: u64,
    output: Sender<O>,
    stop: &Shutdown,
    make: impl Fn(u64) -> O,
) -> StageStats {
    let mut stats = StageStats::default();
    for id in 0..items {
        if stop.is_triggered() || output.is_closed() {
            break; // read no more; dropping `output` lets the chain drain
        }
        let item = timed(&mut stats.busy, || make(id));
        stats.items_in += 1;
        match timed(&mut stats.blocked, || output.send(item)) {
            Ok(()) => stats.items_out += 1,
            Err(SendError(_record)) => {
                stats.abandoned += 1; // the channel handed it back: count it
                break;
            }
        }
    }
    stats
}

/// A middle stage: receive, work, send, until its input ends or the next
/// stage is gone. A rejected record is counted and the loop goes on.
fn relay<I, O>(
    input: Receiver<I>,
    output: Sender<O>,
    work: impl Fn(I) -> Result<O, Reject>,
) -> StageStats {
    let mut stats = StageStats::default();
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        stats.items_in += 1;
        if output.is_closed() {
            stats.abandoned += 1; // nobody would take the result: skip the work
            break;
        }
        match timed(&mut stats.busy, || work(item)) {
            Err(reason) => *stats.rejected.entry(reason).or_default() += 1,
            Ok(out) => match timed(&mut stats.blocked, || output.send(out)) {
                Ok(()) => stats.items_out += 1,
                Err(SendError(_record)) => {
                    stats.abandoned += 1;
                    break;
                }
            },
        }
    }
    stats.input_high_water = Some(input.high_water());
    stats
    // `input` drops here. When the last worker of this stage returns, sends
    // into its queue fail, and the stage before it stops the same way.
}

/// The last stage: consume until the input ends or `consume` fails for good.
/// Returning drops `input`, which is what stops the stages upstream.
fn sink<I>(
    input: Receiver<I>,
    mut consume: impl FnMut(I) -> Result<(), String>,
) -> (StageStats, Option<String>) {
    let mut stats = StageStats::default();
    let mut fatal = None;
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        stats.items_in += 1;
        match timed(&mut stats.busy, || consume(item)) {
            Ok(()) => stats.items_out += 1,
            Err(error) => {
                stats.abandoned += 1; // the record that could not be written
                fatal = Some(error);
                break;
            }
        }
    }
    stats.input_high_water = Some(input.high_water());
    (stats, fatal)
}

/// A middle stage run by several worker coroutines.
struct Stage {
    workers: Vec<JoinHandle<StageStats>>,
    peak_working: Arc<AtomicUsize>,
}

/// Start `workers` coroutines sharing one stage (see step 4).
fn spawn_stage<I, O, W>(workers: usize, input: Receiver<I>, output: Sender<O>, work: W) -> Stage
where
    I: Send + 'static,
    O: Send + 'static,
    W: Fn(I) -> Result<O, Reject> + Clone + Send + 'static,
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
            for (reason, n) in s.rejected {
                *total.rejected.entry(reason).or_default() += n;
            }
            total.abandoned += s.abandoned;
            total.busy += s.busy;
            total.starved += s.starved;
            total.blocked += s.blocked;
            total.input_high_water = total.input_high_water.max(s.input_high_water);
        }
        total.peak_working = self.peak_working.load(Ordering::SeqCst);
        total
    }
}

/// A single coroutine's numbers, as a one-worker stage.
fn single(stats: StageStats) -> StageStats {
    StageStats {
        workers: 1,
        peak_working: 1,
        ..stats
    }
}

/// One run's settings.
#[derive(Clone, Copy, Debug)]
struct Config {
    items: u64,
    capacity: usize,
    enrich_workers: usize,
    costs: Costs,
    faults: Faults,
}

/// One finished run.
struct Report {
    elapsed: Duration,
    stages: Vec<(&'static str, StageStats)>,
    /// Ids in the order the sink wrote them.
    written: Vec<u64>,
    /// The sink's fatal error, if it had one.
    fatal: Option<String>,
    stopped_early: bool,
}

/// Run the chain until every record is through, `stop` is triggered, or the
/// sink fails for good. Returns once every coroutine of the chain has ended.
fn run_pipeline(config: Config, stop: &Shutdown) -> Report {
    let started = Instant::now();
    let Config { costs, faults, .. } = config;
    let (lines_tx, lines_rx) = bounded::channel::<Line>(config.capacity);
    let (orders_tx, orders_rx) = bounded::channel::<Order>(config.capacity);
    let (enriched_tx, enriched_rx) = bounded::channel::<Enriched>(config.capacity);

    let stop_reading = stop.clone();
    let reader = go!(move || {
        source(config.items, lines_tx, &stop_reading, |id| {
            read_line(id, costs.read, faults)
        })
    });
    let parser = go!(move || relay(lines_rx, orders_tx, |l| parse(l, costs.parse_kib)));
    let enricher = spawn_stage(config.enrich_workers, orders_rx, enriched_tx, move |o| {
        Ok(enrich(o, costs.enrich))
    });
    let writer = go!(move || {
        let mut written = Vec::new();
        let (stats, fatal) = sink(enriched_rx, |record| {
            if faults.sink_fails_after == Some(written.len() as u64) {
                return Err(format!("disk full after {} records", written.len()));
            }
            written.push(write(record, costs.write).0);
            Ok(())
        });
        (stats, fatal, written)
    });

    let read_stats = single(reader.join().expect("the reader panicked"));
    let parse_stats = single(parser.join().expect("the parser panicked"));
    let enrich_stats = enricher.join();
    let (write_stats, fatal, written) = writer.join().expect("the writer panicked");
    Report {
        elapsed: started.elapsed(),
        stages: vec![
            ("read", read_stats),
            ("parse", parse_stats),
            ("enrich", enrich_stats),
            ("write", single(write_stats)),
        ],
        written,
        fatal,
        stopped_early: stop.is_triggered(),
    }
}

// ANCHOR: books
impl Report {
    fn read(&self) -> u64 {
        self.stages[0].1.items_in
    }

    fn rejected(&self) -> BTreeMap<Reject, u64> {
        let mut all = BTreeMap::new();
        for (_, stage) in &self.stages {
            for (reason, n) in &stage.rejected {
                *all.entry(*reason).or_default() += n;
            }
        }
        all
    }

    /// Records a stage sent on that the next stage never took: they were
    /// still in a queue when the stage reading it stopped.
    fn left_in_queues(&self) -> u64 {
        let stages: Vec<&StageStats> = self.stages.iter().map(|(_, s)| s).collect();
        stages
            .windows(2)
            .map(|pair| pair[0].items_out - pair[1].items_in)
            .sum()
    }

    fn abandoned_in_hand(&self) -> u64 {
        self.stages.iter().map(|(_, s)| s.abandoned).sum()
    }

    fn abandoned(&self) -> u64 {
        self.abandoned_in_hand() + self.left_in_queues()
    }

    /// Every record read was written, rejected or abandoned, and every stage
    /// balances its own books.
    fn conserved(&self) -> bool {
        let rejected: u64 = self.rejected().values().sum();
        self.stages.iter().all(|(_, s)| s.balances())
            && self.read() == self.written.len() as u64 + rejected + self.abandoned()
    }
}
// ANCHOR_END: books

impl Report {
    /// Print the books. Counts that depend on timing (where a stop or a
    /// failure caught the chain) are printed as `~N`.
    fn print(&self, timing_dependent: bool) {
        let n = |count: u64| match timing_dependent {
            true => format!("~{count}"),
            false => count.to_string(),
        };
        let verdict = match self.conserved() {
            true => "conserved",
            false => "NOT CONSERVED",
        };
        println!(
            "  read {} = written {} + rejected {} + abandoned {} ({} in hand, {} left in queues): {verdict}",
            n(self.read()),
            n(self.written.len() as u64),
            n(self.rejected().values().sum()),
            n(self.abandoned()),
            n(self.abandoned_in_hand()),
            n(self.left_in_queues()),
        );
        for (name, s) in &self.stages {
            println!(
                "    {name:<6} x{}: in {}, out {}, rejected {}, abandoned {}",
                s.workers,
                n(s.items_in),
                n(s.items_out),
                n(s.rejected_total()),
                n(s.abandoned)
            );
        }
        let rejected: Vec<String> = self
            .rejected()
            .iter()
            .map(|(reason, count)| format!("{reason}: {}", n(*count)))
            .collect();
        if !rejected.is_empty() {
            println!("  rejected: {}", rejected.join(", "));
        }
        if let Some(error) = &self.fatal {
            println!("  fatal: {error}");
        }
        println!(
            "  ran {:.1?}; stopped early: {}",
            self.elapsed, self.stopped_early
        );
    }
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let config = |items, faults| Config {
        items,
        capacity: 8,
        enrich_workers: 4,
        costs: COSTS,
        faults,
    };
    let no_faults = Faults::default();

    println!("every 10th of 60 records is malformed:");
    let bad_records = Faults {
        bad_every: Some(10),
        ..no_faults
    };
    run_pipeline(config(60, bad_records), &Shutdown::new()).print(false);

    println!("a stop signal after 40ms, with 10000 records to read:");
    let stop = Shutdown::new();
    let stopper = stop.clone();
    go!(move || {
        may::coroutine::sleep(Duration::from_millis(40));
        stopper.trigger();
    });
    run_pipeline(config(10_000, no_faults), &stop).print(true);

    println!("the sink fails for good after 20 records, with 10000 to read:");
    let failing_sink = Faults {
        sink_fails_after: Some(20),
        ..no_faults
    };
    run_pipeline(config(10_000, failing_sink), &Shutdown::new()).print(true);

    println!("the same failure with queues of 1 slot instead of 8:");
    let short_queues = Config {
        capacity: 1,
        ..config(10_000, failing_sink)
    };
    run_pipeline(short_queues, &Shutdown::new()).print(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    const FAST: Costs = Costs {
        read: Duration::from_millis(1),
        parse_kib: 1,
        enrich: Duration::from_millis(2),
        write: Duration::from_millis(1),
    };

    fn config(items: u64, faults: Faults) -> Config {
        Config {
            items,
            capacity: 4,
            enrich_workers: 3,
            costs: FAST,
            faults,
        }
    }

    /// Run the chain on a coroutine; fail if it has not returned (so if any
    /// of its coroutines is still running) after 10 s.
    fn run_within_10s(config: Config, stop: Shutdown) -> Report {
        let (done_tx, done_rx) = may::sync::mpsc::channel();
        go!(move || {
            let _ = done_tx.send(run_pipeline(config, &stop));
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a stage did not end within 10 s")
    }

    /// Trigger `stop` once `after` has passed.
    fn trigger_after(stop: &Shutdown, after: Duration) {
        let stop = stop.clone();
        go!(move || {
            may::coroutine::sleep(after);
            stop.trigger();
        });
    }

    fn assert_no_duplicates(report: &Report) {
        let mut ids = report.written.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            report.written.len(),
            "a record was written twice"
        );
    }

    #[test]
    fn bad_records_are_rejected_with_their_reason_and_the_rest_go_on() {
        configure_for_tests();
        let faults = Faults {
            bad_every: Some(5),
            ..Faults::default()
        };
        let report = run_within_10s(config(40, faults), Shutdown::new());
        assert!(report.conserved());
        assert_eq!(report.read(), 40);
        let reasons: Vec<(Reject, u64)> = report.rejected().into_iter().collect();
        assert_eq!(
            reasons,
            vec![("amount is not a number", 4), ("missing field", 4)]
        );
        assert_eq!(report.abandoned(), 0);
        let mut written = report.written.clone();
        written.sort_unstable();
        let good: Vec<u64> = (0..40)
            .filter(|id: &u64| !(id + 1).is_multiple_of(5))
            .collect();
        assert_eq!(written, good, "every good record, once");
    }

    #[test]
    fn a_stop_signal_drains_the_chain_and_ends_every_stage() {
        configure_for_tests();
        let stop = Shutdown::new();
        trigger_after(&stop, Duration::from_millis(30));
        let report = run_within_10s(config(100_000, Faults::default()), stop);
        assert!(report.stopped_early);
        assert!(report.read() < 100_000);
        assert!(report.conserved());
        // A stop is not a failure: what was read is written, none abandoned.
        assert_eq!(report.abandoned(), 0);
        assert_eq!(report.written.len() as u64, report.read());
        assert_no_duplicates(&report);
    }

    #[test]
    fn a_stop_before_the_start_reads_nothing() {
        configure_for_tests();
        let stop = Shutdown::new();
        stop.trigger();
        let report = run_within_10s(config(100, Faults::default()), stop);
        assert_eq!(report.read(), 0);
        assert!(report.written.is_empty());
        assert!(report.conserved());
    }

    #[test]
    fn a_fatal_sink_error_stops_every_stage_and_is_reported() {
        configure_for_tests();
        let faults = Faults {
            sink_fails_after: Some(10),
            ..Faults::default()
        };
        let report = run_within_10s(config(100_000, faults), Shutdown::new());
        assert_eq!(report.fatal.as_deref(), Some("disk full after 10 records"));
        assert_eq!(report.written.len(), 10);
        assert!(
            !report.stopped_early,
            "nobody pressed stop: the failure did"
        );
        assert!(report.read() < 100_000, "the reader stopped by itself");
        // At least the record the sink failed on is abandoned, and counted.
        assert!(report.abandoned() >= 1);
        assert!(report.conserved(), "every stage balances its books");
        assert_no_duplicates(&report);
    }

    #[test]
    fn a_fatal_error_leaves_at_most_a_full_queue_between_two_stages() {
        configure_for_tests();
        let faults = Faults {
            sink_fails_after: Some(10),
            ..Faults::default()
        };
        for capacity in [1, 4] {
            let cfg = Config {
                capacity,
                ..config(100_000, faults)
            };
            let report = run_within_10s(cfg, Shutdown::new());
            assert!(report.conserved());
            // Three queues between four stages, none holds more than `capacity`.
            assert!(
                report.left_in_queues() <= 3 * capacity as u64,
                "capacity {capacity}"
            );
        }
    }

    #[test]
    fn faults_and_a_stop_together_still_balance() {
        configure_for_tests();
        let faults = Faults {
            bad_every: Some(3),
            sink_fails_after: Some(25),
        };
        let stop = Shutdown::new();
        trigger_after(&stop, Duration::from_millis(20));
        let report = run_within_10s(config(100_000, faults), stop);
        assert!(report.conserved());
        assert_no_duplicates(&report);
    }
}
