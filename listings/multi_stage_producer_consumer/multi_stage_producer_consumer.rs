//! Multi-stage producer-consumer: the finished program.
//!
//! **Purpose.** Move records through stages that cost different amounts
//! (read -> parse -> enrich -> write), keep memory bounded between them, find
//! the stage that limits throughput, and stop, on Ctrl-C or on a fatal error,
//! without losing or duplicating a record.
//!
//! **Architecture.** Four stages joined by `may_patterns::bounded` queues of
//! `--capacity` slots. The reader is one coroutine; parse and enrich are each
//! shared by `--parse-workers` / `--enrich-workers` coroutines holding clones
//! of the stage's input receiver and output sender (the library's
//! `may_patterns::stage` runs them); the writer is one coroutine. A full queue parks the stage in front of it (backpressure).
//! Ctrl-C stops the reader; each stage drains its input and ends when its
//! input closes. A malformed record is rejected and counted by reason. A
//! fatal sink error ends the writer, whose receiver drops: sends into its
//! queue fail and hand the record back, so each stage upstream counts it as
//! abandoned and stops in turn. Every stage times its work, its waits for
//! input and its waits for room, and the report balances the books:
//! read = written + rejected + abandoned.
//!
//! **Usage.** `cargo run --example multi_stage_producer_consumer -- --items 500 --enrich-workers 2 --bad-every 50`
//! (`--help` lists every flag and its default; `--json` prints one JSON object).
//! The exit status is 1 after a fatal error or if the books do not balance.
//!
//! **Performance.** `cargo bench --bench multi_stage_producer_consumer`
//! compares such a chain with the same work done in one sequential loop; the
//! chapter shows the table. With I/O-like stages the chain runs at the pace of
//! its slowest stage, where a stage's pace is its cost per record divided by
//! its workers.
//!
//! **Customization.** Replace `read_line`, `parse`, `enrich` and `write` with
//! real work; keep their signatures. Work that waits (a socket, a may channel)
//! fits a coroutine. CPU-heavy or blocking work (large parses, compression,
//! file I/O) belongs on OS threads that talk to the chain through the same
//! bounded channels, which work from threads too.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use may::go;
use may_patterns::bounded::{self, Receiver, SendError, Sender};
use may_patterns::cli::at_least_one;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;
use may_patterns::stage::{timed, Outcome, Stage, StageStats};

/// Run records through read -> parse -> enrich -> write, four stages joined by
/// bounded queues, and report where the time went and where every record ended.
///
/// Stage waits are whole milliseconds: they are may sleeps, and short may
/// sleeps can corrupt may 0.3.51's heap (see the book's Pitfalls reference).
#[derive(Parser, Debug)]
#[command(name = "multi_stage_producer_consumer")]
struct Args {
    /// Records the read stage produces.
    #[arg(long, default_value_t = 200)]
    items: u64,
    /// Slots in each queue between two stages.
    #[arg(long, default_value_t = 8, value_parser = at_least_one::<u64>)]
    capacity: u64,
    /// Coroutines sharing the parse stage.
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u64>)]
    parse_workers: u64,
    /// Coroutines sharing the enrich stage.
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<u64>)]
    enrich_workers: u64,
    /// Simulated I/O wait per record in the read stage, in milliseconds (0: none).
    #[arg(long, default_value_t = 1)]
    read_ms: u64,
    /// CPU work per record in the parse stage: KiB of data hashed.
    #[arg(long, default_value_t = 4)]
    parse_kib: usize,
    /// Simulated lookup per record in the enrich stage, in milliseconds (0: none).
    #[arg(long, default_value_t = 4)]
    enrich_ms: u64,
    /// Simulated write per record in the write stage, in milliseconds (0: none).
    #[arg(long, default_value_t = 2)]
    write_ms: u64,
    /// Make every N-th record malformed: parse rejects it, counts why, goes on.
    #[arg(long, value_parser = at_least_one::<u64>)]
    bad_every: Option<u64>,
    /// Make the sink fail for good after N records: the whole chain stops.
    #[arg(long)]
    sink_fails_after: Option<u64>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

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
    /// A checksum of the line: the parse stage's CPU work.
    digest: u64,
}

/// What the enrich stage produces: the order plus a looked-up region.
struct Enriched {
    order: Order,
    region: &'static str,
}

/// What one record costs in each stage.
#[derive(Clone, Copy, Debug)]
pub struct Costs {
    /// I/O-like: waiting for the next line from a file or socket.
    pub read: Duration,
    /// CPU-like: KiB of data hashed per record.
    pub parse_kib: usize,
    /// I/O-like: a lookup in a remote service.
    pub enrich: Duration,
    /// I/O-like: the sink's write.
    pub write: Duration,
}

/// Faults to inject, to see how the chain copes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Every n-th line the reader produces is malformed.
    pub bad_every: Option<u64>,
    /// The sink fails for good once it has written this many records.
    pub sink_fails_after: Option<u64>,
}

/// Everything `run` needs; `main` builds it from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub items: u64,
    pub capacity: usize,
    pub parse_workers: usize,
    pub enrich_workers: usize,
    pub costs: Costs,
    pub faults: Faults,
}

/// Why a record was rejected; counted per reason.
pub type Reject = &'static str;

/// Simulated I/O: park this coroutine (never its worker thread).
fn io_wait(cost: Duration) {
    if !cost.is_zero() {
        may::coroutine::sleep(cost);
    }
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
/// Returns the record's id.
fn write(record: Enriched, cost: Duration) -> u64 {
    let Enriched { order, region } = record;
    let line = format!(
        "{},{},{region},{},{:016x}\n",
        order.id, order.customer, order.cents, order.digest
    );
    io_wait(cost);
    std::hint::black_box(line); // a real sink would write these bytes
    order.id
}

/// The first stage: make records until `items` are made, `stop` is
/// triggered, or the next stage is gone.
fn source<O>(
    items: u64,
    output: Sender<O>,
    stop: &Shutdown,
    make: impl Fn(u64) -> O,
) -> StageStats {
    let mut stats = StageStats::new("read", 1);
    stats.peak_working = 1;
    for id in 0..items {
        if stop.is_triggered() || output.is_closed() {
            break;
        }
        let item = timed(&mut stats.busy, || make(id));
        stats.items_in += 1;
        match timed(&mut stats.blocked, || output.send(item)) {
            Ok(()) => stats.items_out += 1,
            Err(SendError(_record)) => {
                stats.abandoned += 1;
                break;
            }
        }
    }
    stats
}

/// The last stage: consume until the input ends or `consume` fails for good.
/// Returning drops `input`, which is what stops the stages upstream.
fn sink<I>(
    input: Receiver<I>,
    mut consume: impl FnMut(I) -> Result<(), String>,
) -> (StageStats, Option<String>) {
    let mut stats = StageStats::new("write", 1);
    stats.peak_working = 1;
    let mut fatal = None;
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        stats.items_in += 1;
        match timed(&mut stats.busy, || consume(item)) {
            Ok(()) => stats.items_out += 1,
            Err(error) => {
                stats.abandoned += 1;
                fatal = Some(error);
                break;
            }
        }
    }
    stats.input_high_water = Some(input.high_water());
    (stats, fatal)
}

/// What happened in one run.
#[derive(Debug)]
pub struct Report {
    pub elapsed: Duration,
    pub capacity: usize,
    /// In chain order: read, parse, enrich, write.
    pub stages: Vec<StageStats>,
    /// Ids in the order the sink wrote them.
    pub written: Vec<u64>,
    /// The sink's fatal error, if it had one.
    pub fatal: Option<String>,
    /// Whether the stop signal (Ctrl-C) ended the run.
    pub stopped_early: bool,
}

// ANCHOR: run
/// Run the chain until every record is through, `shutdown` is triggered, or
/// the sink fails for good. Returns once every coroutine of the chain ended.
pub fn run(config: &Config, shutdown: &Shutdown) -> Report {
    let started = Instant::now();
    let Config { costs, faults, .. } = *config;
    let (lines_tx, lines_rx) = bounded::channel::<Line>(config.capacity);
    let (orders_tx, orders_rx) = bounded::channel::<Order>(config.capacity);
    let (enriched_tx, enriched_rx) = bounded::channel::<Enriched>(config.capacity);

    let (items, stop) = (config.items, shutdown.clone());
    let reader = go!(move || {
        source(items, lines_tx, &stop, |id| {
            read_line(id, costs.read, faults)
        })
    });
    let parser = Stage::new("parse", config.parse_workers).spawn(lines_rx, orders_tx, || {
        move |line| parse(line, costs.parse_kib).into()
    });
    let enricher =
        Stage::new("enrich", config.enrich_workers).spawn(orders_rx, enriched_tx, || {
            move |order| Outcome::Out(enrich(order, costs.enrich))
        });
    let writer = go!(move || {
        let mut written = Vec::new();
        let (stats, fatal) = sink(enriched_rx, |record| {
            if faults.sink_fails_after == Some(written.len() as u64) {
                return Err(format!("disk full after {} records", written.len()));
            }
            written.push(write(record, costs.write));
            Ok(())
        });
        (stats, fatal, written)
    });

    let read_stats = reader.join().expect("the reader panicked");
    let (parse_stats, enrich_stats) = (parser.join(), enricher.join());
    let (write_stats, fatal, written) = writer.join().expect("the writer panicked");
    Report {
        elapsed: started.elapsed(),
        capacity: config.capacity,
        stages: vec![read_stats, parse_stats, enrich_stats, write_stats],
        written,
        fatal,
        stopped_early: shutdown.is_triggered(),
    }
}
// ANCHOR_END: run

/// `part` as a percentage of `whole` (0 for an empty run).
fn pct(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        return 0.0;
    }
    100.0 * part.as_secs_f64() / whole.as_secs_f64()
}

impl Report {
    pub fn read(&self) -> u64 {
        self.stages[0].items_in
    }

    pub fn rejected(&self) -> BTreeMap<Reject, u64> {
        let mut all = BTreeMap::new();
        for stage in &self.stages {
            for (reason, n) in &stage.rejected {
                *all.entry(*reason).or_default() += n;
            }
        }
        all
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected().values().sum()
    }

    /// Records a stage sent on that the next stage never took: they were
    /// still in a queue when the stage reading it stopped.
    pub fn left_in_queues(&self) -> u64 {
        self.stages
            .windows(2)
            .map(|pair| pair[0].items_out - pair[1].items_in)
            .sum()
    }

    pub fn abandoned_in_hand(&self) -> u64 {
        self.stages.iter().map(|s| s.abandoned).sum()
    }

    pub fn abandoned(&self) -> u64 {
        self.abandoned_in_hand() + self.left_in_queues()
    }

    /// Every record read was written, rejected or abandoned, and every stage
    /// balances its own books.
    pub fn conserved(&self) -> bool {
        self.stages.iter().all(StageStats::balances)
            && self.read() == self.written.len() as u64 + self.rejected_total() + self.abandoned()
    }

    /// No fatal error, and the books balance.
    pub fn succeeded(&self) -> bool {
        self.fatal.is_none() && self.conserved()
    }

    /// Records written per second of the run.
    pub fn throughput(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.written.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// A stage's share of the time its workers had: `busy 100%` means every
    /// worker of the stage worked for the whole run.
    fn share(&self, stats: &StageStats, time: Duration) -> f64 {
        pct(time, self.elapsed) / stats.workers.max(1) as f64
    }

    /// The stage whose workers spent the largest share of the run working.
    pub fn bottleneck(&self) -> (&'static str, f64) {
        self.stages
            .iter()
            .map(|s| (s.name, self.share(s, s.busy)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a chain has stages")
    }
}

impl Report {
    fn print_text(&self) {
        let chain: Vec<String> = self
            .stages
            .iter()
            .map(|s| match s.workers {
                1 => s.name.to_string(),
                n => format!("{} x{n}", s.name),
            })
            .collect();
        println!("{}, queues of {} slots", chain.join(" -> "), self.capacity);
        println!(
            "{} records read in {:.1?}: ~{:.0} records/s written",
            self.read(),
            self.elapsed,
            self.throughput()
        );
        println!("stage   workers     in    out  rejected  abandoned");
        for s in &self.stages {
            let queue = match s.input_high_water {
                Some(depth) => format!(", input queue max ~{depth} of {}", self.capacity),
                None => String::new(),
            };
            println!(
                "{:<7}{:>8}{:>7}{:>7}{:>10}{:>11}  busy {:.1}%, starved {:.1}%, blocked {:.1}%{queue}, working at once ~{}",
                s.name,
                s.workers,
                s.items_in,
                s.items_out,
                s.rejected_total(),
                s.abandoned,
                self.share(s, s.busy),
                self.share(s, s.starved),
                self.share(s, s.blocked),
                s.peak_working,
            );
        }
        let (bottleneck, busy) = self.bottleneck();
        println!("bottleneck: {bottleneck} (busy {busy:.1}%)");
        let verdict = match self.conserved() {
            true => "conserved",
            false => "NOT CONSERVED",
        };
        println!(
            "books: read {} = written {} + rejected {} + abandoned {} ({} in hand, {} left in queues): {verdict}",
            self.read(),
            self.written.len(),
            self.rejected_total(),
            self.abandoned(),
            self.abandoned_in_hand(),
            self.left_in_queues()
        );
        for (reason, n) in self.rejected() {
            println!("rejected: {reason}: {n}");
        }
        if self.stopped_early {
            println!("stopped early by the stop signal (Ctrl-C)");
        }
        if let Some(error) = &self.fatal {
            println!("fatal: {error}");
        }
    }
}

impl Report {
    /// The report as one JSON object.
    fn to_json(&self) -> serde_json::Value {
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "workers": s.workers,
                    "in": s.items_in,
                    "out": s.items_out,
                    "rejected": s.rejected_total(),
                    "abandoned": s.abandoned,
                    "busy_pct": self.share(s, s.busy),
                    "starved_pct": self.share(s, s.starved),
                    "blocked_pct": self.share(s, s.blocked),
                    "input_queue_max": s.input_high_water,
                    "peak_working": s.peak_working,
                })
            })
            .collect();
        serde_json::json!({
            "elapsed_ms": self.elapsed.as_secs_f64() * 1e3,
            "throughput_per_s": self.throughput(),
            "capacity": self.capacity,
            "read": self.read(),
            "written": self.written.len(),
            "rejected": self.rejected_total(),
            "rejected_by_reason": self.rejected(),
            "abandoned": self.abandoned(),
            "abandoned_in_hand": self.abandoned_in_hand(),
            "left_in_queues": self.left_in_queues(),
            "conserved": self.conserved(),
            "bottleneck": self.bottleneck().0,
            "stopped_early": self.stopped_early,
            "fatal": self.fatal,
            "stages": stages,
        })
    }
}

impl Args {
    fn config(&self) -> Config {
        Config {
            items: self.items,
            capacity: self.capacity as usize,
            parse_workers: self.parse_workers as usize,
            enrich_workers: self.enrich_workers as usize,
            costs: Costs {
                read: Duration::from_millis(self.read_ms),
                parse_kib: self.parse_kib,
                enrich: Duration::from_millis(self.enrich_ms),
                write: Duration::from_millis(self.write_ms),
            },
            faults: Faults {
                bad_every: self.bad_every,
                sink_fails_after: self.sink_fails_after,
            },
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    if let Err(err) = ctrlc::set_handler(move || on_ctrl_c.trigger()) {
        eprintln!("cannot install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    let report = run(&args.config(), &shutdown);
    if args.json {
        println!("{}", report.to_json());
    } else {
        report.print_text();
    }
    match report.succeeded() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn config(items: u64) -> Config {
        Config {
            items,
            capacity: 4,
            parse_workers: 2,
            enrich_workers: 3,
            costs: Costs {
                read: Duration::from_millis(1),
                parse_kib: 1,
                enrich: Duration::from_millis(3),
                write: Duration::from_millis(1),
            },
            faults: Faults::default(),
        }
    }

    /// Run on a coroutine; fail if `run` (so some stage) has not returned
    /// after 10 s.
    fn run_within_10s(config: Config, shutdown: Shutdown) -> Report {
        let (done_tx, done_rx) = may::sync::mpsc::channel();
        go!(move || {
            let _ = done_tx.send(run(&config, &shutdown));
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a stage did not end within 10 s")
    }

    fn trigger_after(shutdown: &Shutdown, after: Duration) {
        let shutdown = shutdown.clone();
        go!(move || {
            may::coroutine::sleep(after);
            shutdown.trigger();
        });
    }

    fn sorted(ids: &[u64]) -> Vec<u64> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    }

    fn assert_no_duplicates(report: &Report) {
        let mut ids = sorted(&report.written);
        ids.dedup();
        assert_eq!(
            ids.len(),
            report.written.len(),
            "a record was written twice"
        );
    }

    fn stage<'a>(report: &'a Report, name: &str) -> &'a StageStats {
        report.stages.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn every_good_record_is_written_once_and_bad_ones_are_counted() {
        configure_for_tests();
        let mut cfg = config(60);
        cfg.faults.bad_every = Some(6);
        let report = run_within_10s(cfg, Shutdown::new());
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(report.read(), 60);
        let good: Vec<u64> = (0..60)
            .filter(|id: &u64| !(id + 1).is_multiple_of(6))
            .collect();
        assert_eq!(sorted(&report.written), good);
        let reasons: Vec<(Reject, u64)> = report.rejected().into_iter().collect();
        assert_eq!(
            reasons,
            vec![("amount is not a number", 5), ("missing field", 5)]
        );
        assert_eq!(report.abandoned(), 0);
    }

    #[test]
    fn more_enrich_workers_work_at_the_same_time() {
        configure_for_tests();
        let report = run_within_10s(config(40), Shutdown::new());
        let enrich = stage(&report, "enrich");
        assert_eq!(enrich.workers, 3);
        assert!(enrich.peak_working > 1, "{enrich:?}");
        assert_no_duplicates(&report);
    }

    #[test]
    fn queues_never_hold_more_than_their_capacity() {
        configure_for_tests();
        let report = run_within_10s(config(40), Shutdown::new());
        for s in &report.stages {
            assert!(s.input_high_water.unwrap_or(0) <= 4, "{s:?}");
        }
        assert!(stage(&report, "read").input_high_water.is_none());
    }

    #[test]
    fn a_stop_signal_mid_run_drains_and_ends_every_stage() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        trigger_after(&shutdown, Duration::from_millis(30));
        let report = run_within_10s(config(1_000_000), shutdown);
        assert!(report.stopped_early);
        assert!(report.read() > 0 && report.read() < 1_000_000);
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(report.abandoned(), 0, "a stop drains, it abandons nothing");
        assert_eq!(
            sorted(&report.written),
            (0..report.read()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_fatal_sink_error_stops_every_stage_and_is_reported() {
        configure_for_tests();
        let mut cfg = config(1_000_000);
        cfg.faults.sink_fails_after = Some(15);
        let report = run_within_10s(cfg, Shutdown::new());
        assert_eq!(report.fatal.as_deref(), Some("disk full after 15 records"));
        assert!(!report.succeeded());
        assert!(report.conserved(), "{report:?}");
        assert_eq!(report.written.len(), 15);
        assert!(report.read() < 1_000_000, "the reader stopped by itself");
        assert!(report.abandoned() >= 1);
        assert_no_duplicates(&report);
    }

    #[test]
    fn the_json_report_is_one_valid_object_that_adds_up() {
        configure_for_tests();
        let mut cfg = config(30);
        cfg.faults.bad_every = Some(10);
        let report = run_within_10s(cfg, Shutdown::new());
        // What `--json` prints, read back as a consumer would.
        let json: serde_json::Value = serde_json::from_str(&report.to_json().to_string()).unwrap();
        let n = |key: &str| json[key].as_u64().unwrap();
        assert_eq!(n("read"), n("written") + n("rejected") + n("abandoned"));
        assert_eq!(json["rejected_by_reason"]["missing field"], 2);
        assert_eq!(json["fatal"], serde_json::Value::Null);
        assert_eq!(json["stages"].as_array().unwrap().len(), 4);
        assert_eq!(json["stages"][2]["name"], "enrich");
    }

    #[test]
    fn the_command_line_has_defaults_and_refuses_zero_workers_or_capacity() {
        let args = Args::try_parse_from(["msp"]).unwrap();
        let cfg = args.config();
        assert_eq!((cfg.items, cfg.capacity, cfg.enrich_workers), (200, 8, 4));
        assert_eq!(cfg.costs.enrich, Duration::from_millis(4));
        for flag in ["--capacity", "--parse-workers", "--enrich-workers"] {
            let err = Args::try_parse_from(["msp", flag, "0"]).unwrap_err();
            assert!(err.to_string().contains(flag), "{err}");
        }
    }
}
