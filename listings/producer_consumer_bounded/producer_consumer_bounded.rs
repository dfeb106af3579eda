//! Producer-consumer with a bounded buffer: the finished program.
//!
//! **Purpose.** Move work from producers to consumers that run at different
//! speeds without letting the queue, or memory, grow without bound; report
//! what backpressure cost.
//!
//! **Architecture.** `--producers` coroutines share the items to produce and
//! push them into one `may_patterns::bounded` channel of `--capacity` slots;
//! `--consumers` coroutines take them out. With `--policy block` a producer
//! parks while the buffer is full (backpressure); with `--policy shed` it
//! drops the item and counts it (load shedding). Ctrl-C stops the producers;
//! the consumers drain what is buffered for up to `--drain-ms`, and whatever is
//! left after that is counted as abandoned, never silently lost.
//!
//! **Usage.**
//! `cargo run --example producer_consumer_bounded -- --producers 4 --consumers 2 --capacity 64 --items 2000 --consume-us 500`
//! (`--help` lists every flag; `--json` prints the report as one JSON object).
//!
//! **Performance.** The bench `cargo bench --bench producer_consumer_bounded`
//! compares this channel with may's unbounded channel, std's `sync_channel`
//! and crossbeam's `bounded`; the chapter shows the table.
//!
//! **Customization.** Replace `produce_one` and `consume_one` with real work.
//! Work that waits (network, a database over a may socket) fits a coroutine;
//! CPU-heavy or blocking work (file I/O, compression) belongs on OS threads
//! that talk to the coroutines through this same channel.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use may::go;
use may_patterns::bounded::{self, TrySendError};
use may_patterns::cli::at_least_one;
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;

/// Move items from producers to consumers through a bounded buffer, and
/// report what backpressure cost.
#[derive(Parser, Debug)]
#[command(name = "producer_consumer_bounded")]
struct Args {
    /// Producer coroutines; they share the items between them.
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<u64>)]
    producers: u64,
    /// Consumer coroutines taking items out of the buffer.
    #[arg(long, default_value_t = 2, value_parser = at_least_one::<u64>)]
    consumers: u64,
    /// Slots in the buffer: the most items that can wait between the two sides.
    #[arg(long, default_value_t = 64, value_parser = at_least_one::<u64>)]
    capacity: u64,
    /// Items to produce in total.
    #[arg(long, default_value_t = 2000)]
    items: u64,
    /// Simulated wait per item on the producing side, in microseconds (waits
    /// under 1 ms are added up and slept in 1 ms chunks).
    #[arg(long, default_value_t = 0)]
    produce_us: u64,
    /// Simulated wait per item on the consuming side, in microseconds (waits
    /// under 1 ms are added up and slept in 1 ms chunks).
    #[arg(long, default_value_t = 500)]
    consume_us: u64,
    /// What a producer does when the buffer is full.
    #[arg(long, value_enum, default_value_t = Policy::Block)]
    policy: Policy,
    /// After Ctrl-C, how long consumers keep draining the buffer before the
    /// rest is abandoned (and counted).
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What a producer does when the buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    /// Park until there is room: nothing is lost, producers slow down.
    Block,
    /// Drop the item and count it: producers never wait, work is lost.
    Shed,
}

/// Everything `run` needs; built from the command line by `main`.
#[derive(Clone, Debug)]
pub struct Config {
    pub producers: u64,
    pub consumers: u64,
    pub capacity: usize,
    pub items: u64,
    pub produce_cost: Duration,
    pub consume_cost: Duration,
    pub policy: Policy,
    pub drain: Duration,
}

/// What happened. `produced == consumed + abandoned` always holds, and
/// `produced + shed + not_started == items`.
#[derive(Debug)]
pub struct Report {
    pub produced: u64,
    pub consumed: u64,
    pub shed: u64,
    pub abandoned: u64,
    pub not_started: u64,
    pub max_queue_depth: usize,
    pub capacity: usize,
    /// Summed over producers: time spent parked waiting for room.
    pub producers_blocked: Duration,
    pub elapsed: Duration,
    pub stopped_early: bool,
}

/// Counters the coroutines update.
#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    consumed: AtomicU64,
    shed: AtomicU64,
    blocked_ns: AtomicU64,
}

// ANCHOR: run
/// Run producers and consumers until every item is consumed or `shutdown`
/// is triggered; return when every coroutine has finished.
pub fn run(config: &Config, shutdown: &Shutdown) -> Report {
    let started = Instant::now();
    let (tx, rx) = bounded::channel::<u64>(config.capacity);
    let counters = Arc::new(Counters::default());

    let producers: Vec<_> = (0..config.producers)
        .map(|index| {
            let (tx, counters, shutdown) = (tx.clone(), counters.clone(), shutdown.clone());
            let config = config.clone();
            go!(move || produce(index, &config, &tx, &counters, &shutdown))
        })
        .collect();
    drop(tx); // consumers see the end once every producer has finished

    let consumers: Vec<_> = (0..config.consumers)
        .map(|_| {
            let (rx, counters, shutdown) = (rx.clone(), counters.clone(), shutdown.clone());
            let (cost, drain) = (config.consume_cost, config.drain);
            go!(move || consume(&rx, cost, drain, &counters, &shutdown))
        })
        .collect();

    for consumer in consumers {
        consumer.join().expect("a consumer panicked");
    }
    // The consumers stop early only after a shutdown whose drain time ran
    // out. Take what is left, so parked producers wake, see the shutdown and
    // finish; count it as abandoned. `iter` ends when the last producer has.
    let abandoned = rx.iter().count() as u64;
    for producer in producers {
        producer.join().expect("a producer panicked");
    }
    // ANCHOR_END: run

    let produced = counters.produced.load(Ordering::SeqCst);
    let shed = counters.shed.load(Ordering::SeqCst);
    Report {
        produced,
        consumed: counters.consumed.load(Ordering::SeqCst),
        shed,
        abandoned,
        not_started: config.items - produced - shed,
        max_queue_depth: rx.high_water(),
        capacity: config.capacity,
        producers_blocked: Duration::from_nanos(counters.blocked_ns.load(Ordering::SeqCst)),
        elapsed: started.elapsed(),
        stopped_early: shutdown.is_triggered(),
    }
}

// ANCHOR: produce
/// Producer `index` makes items `index`, `index + producers`, ... until they
/// run out or a shutdown starts.
fn produce(
    index: u64,
    config: &Config,
    tx: &bounded::Sender<u64>,
    counters: &Counters,
    shutdown: &Shutdown,
) {
    let mut pacer = Pacer::new();
    for item in (index..config.items).step_by(config.producers as usize) {
        if shutdown.is_triggered() {
            return;
        }
        produce_one(&mut pacer, config.produce_cost);
        let item = match tx.try_send(item) {
            Ok(()) => {
                counters.produced.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(TrySendError::Full(item)) => item,
            Err(TrySendError::Disconnected(_)) => return,
        };
        match config.policy {
            Policy::Shed => {
                counters.shed.fetch_add(1, Ordering::SeqCst);
            }
            Policy::Block => {
                let parked_at = Instant::now();
                if tx.send(item).is_err() {
                    return; // every consumer is gone
                }
                let parked = parked_at.elapsed().as_nanos() as u64;
                counters.blocked_ns.fetch_add(parked, Ordering::SeqCst);
                counters.produced.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}
// ANCHOR_END: produce

/// Take items until the producers are done and the buffer is empty, or until
/// `drain` has passed since a shutdown was first seen.
fn consume(
    rx: &bounded::Receiver<u64>,
    cost: Duration,
    drain: Duration,
    counters: &Counters,
    shutdown: &Shutdown,
) {
    let mut pacer = Pacer::new();
    let mut drain_deadline = None;
    loop {
        if shutdown.is_triggered() {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
            if Instant::now() >= deadline {
                return; // `run` counts what is left as abandoned
            }
        }
        // A timeout, not a bare `recv`, so a shutdown is noticed while idle.
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(item) => {
                consume_one(&mut pacer, cost, item);
                counters.consumed.fetch_add(1, Ordering::SeqCst);
            }
            Err(bounded::RecvTimeoutError::Timeout) => {}
            Err(bounded::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Stand-in for real production work: wait `cost` (see `Pacer`).
fn produce_one(pacer: &mut Pacer, cost: Duration) {
    pacer.wait(cost);
}

/// Stand-in for real consuming work on `item`: wait `cost`.
fn consume_one(pacer: &mut Pacer, cost: Duration, _item: u64) {
    pacer.wait(cost);
}

impl Report {
    fn throughput(&self) -> f64 {
        self.consumed as f64 / self.elapsed.as_secs_f64()
    }

    fn print_text(&self) {
        let stop = if self.stopped_early {
            " (stopped early)"
        } else {
            ""
        };
        println!("ran {:.0?}{stop}", self.elapsed);
        println!(
            "produced {}, consumed {}, shed {}, abandoned {}, not started {}",
            self.produced, self.consumed, self.shed, self.abandoned, self.not_started
        );
        println!(
            "max queue depth {} of {}; producers blocked {:.0?} in total",
            self.max_queue_depth, self.capacity, self.producers_blocked
        );
        println!("throughput ~{:.0} items/s", self.throughput());
    }

    fn print_json(&self) {
        let json = serde_json::json!({
            "produced": self.produced,
            "consumed": self.consumed,
            "shed": self.shed,
            "abandoned": self.abandoned,
            "not_started": self.not_started,
            "max_queue_depth": self.max_queue_depth,
            "capacity": self.capacity,
            "producers_blocked_ms": self.producers_blocked.as_secs_f64() * 1e3,
            "elapsed_ms": self.elapsed.as_secs_f64() * 1e3,
            "throughput_per_s": self.throughput(),
            "stopped_early": self.stopped_early,
        });
        println!("{json}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let config = Config {
        producers: args.producers,
        consumers: args.consumers,
        capacity: args.capacity as usize,
        items: args.items,
        produce_cost: Duration::from_micros(args.produce_us),
        consume_cost: Duration::from_micros(args.consume_us),
        policy: args.policy,
        drain: Duration::from_millis(args.drain_ms),
    };
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    if let Err(err) = ctrlc::set_handler(move || on_ctrl_c.trigger()) {
        eprintln!("cannot install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    let report = run(&config, &shutdown);
    if args.json {
        report.print_json();
    } else {
        report.print_text();
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use may::sync::mpsc;
    use may_patterns::runtime::configure_for_tests;

    fn config(items: u64, policy: Policy) -> Config {
        Config {
            producers: 3,
            consumers: 2,
            capacity: 4,
            items,
            produce_cost: Duration::ZERO,
            consume_cost: Duration::from_micros(200),
            policy,
            drain: Duration::from_secs(5),
        }
    }

    /// Run on an OS thread and give up after 10 s, so a hang fails the test.
    fn run_bounded_in_time(config: Config, shutdown: Shutdown) -> Report {
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || done_tx.send(run(&config, &shutdown)).unwrap());
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("run did not return: a coroutine was left behind")
    }

    fn assert_conserved(report: &Report, items: u64) {
        assert_eq!(
            report.produced,
            report.consumed + report.abandoned,
            "{report:?}"
        );
        assert_eq!(
            report.produced + report.shed + report.not_started,
            items,
            "{report:?}"
        );
        assert!(report.max_queue_depth <= report.capacity, "{report:?}");
    }

    #[test]
    fn blocking_delivers_every_item() {
        configure_for_tests();
        let report = run_bounded_in_time(config(300, Policy::Block), Shutdown::new());
        assert_conserved(&report, 300);
        assert_eq!(report.consumed, 300);
        assert_eq!((report.shed, report.abandoned), (0, 0));
        assert!(report.producers_blocked > Duration::ZERO);
    }

    #[test]
    fn shedding_counts_every_dropped_item() {
        configure_for_tests();
        let report = run_bounded_in_time(config(300, Policy::Shed), Shutdown::new());
        assert_conserved(&report, 300);
        // The consumers are far slower than the producers: most is shed.
        assert!(report.shed > 0, "{report:?}");
        assert_eq!(report.consumed, report.produced);
        assert_eq!(report.producers_blocked, Duration::ZERO);
    }

    #[test]
    fn a_shutdown_with_no_drain_time_abandons_and_counts_the_rest() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let mut cfg = config(100_000, Policy::Block);
        cfg.drain = Duration::ZERO;
        let stopper = shutdown.clone();
        go!(move || {
            may::coroutine::sleep(Duration::from_millis(30));
            stopper.trigger();
        });
        let report = run_bounded_in_time(cfg, shutdown);
        assert!(report.stopped_early);
        assert_conserved(&report, 100_000);
        assert!(report.not_started > 0, "{report:?}");
    }

    #[test]
    fn a_shutdown_with_drain_time_consumes_everything_produced() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let stopper = shutdown.clone();
        go!(move || {
            may::coroutine::sleep(Duration::from_millis(30));
            stopper.trigger();
        });
        let report = run_bounded_in_time(config(100_000, Policy::Block), shutdown);
        assert_conserved(&report, 100_000);
        assert_eq!(report.abandoned, 0);
        assert_eq!(report.consumed, report.produced);
    }

    #[test]
    fn the_command_line_refuses_a_zero_capacity() {
        let err = Args::try_parse_from(["pcb", "--capacity", "0"]).unwrap_err();
        assert!(err.to_string().contains("--capacity"), "{err}");
    }
}
