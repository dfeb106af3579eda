//! What one operator costs: items a second through a chain of N maps
//! (N = 1, 4, 16) built three ways, and the cost per map from the
//! difference between 16 maps and 1.
//!
//! - an iterator chain, each map boxed (`Box<dyn Iterator>`), so that, like
//!   the other two, the chain is built at run time and not inlined away;
//! - the chapter's `Flux`: `Flux::range` and N `map`s, pulled by
//!   `iter(256)` (requests in batches of 128 once the first 256 are out);
//!   every map runs inline on the source's coroutine;
//! - the same `Flux` with one subscriber that requests `u64::MAX` and sums
//!   on the source's coroutine: the maps without the bridge to a thread;
//! - channels between coroutines: a source coroutine and one coroutine per
//!   map, joined by `may_patterns::bounded` channels of 256.
//!
//! Each is pulled by this bench's main thread, over 200,000 items, 5 runs
//! after one warm-up, median. `cargo bench --bench reactive_operators` (a
//! few seconds) rewrites `book/reactive_pipeline/operators.md`.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded;
use may_patterns::reactive::{Error, Flux, Subscriber, Subscription};
use support::Cell;

const ITEMS: u64 = 200_000;
const RUNS: usize = 5;
const CHAINS: [usize; 3] = [1, 4, 16];
const PREFETCH: usize = 256;
const CAPACITY: usize = 256;

fn step(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

fn iterator_chain(maps: usize) -> u64 {
    let mut chain: Box<dyn Iterator<Item = u64>> = Box::new(0..ITEMS);
    for _ in 0..maps {
        chain = Box::new(chain.map(step));
    }
    chain.fold(0, u64::wrapping_add)
}

fn flux_chain(maps: usize) -> u64 {
    let mut flux = Flux::range(0, ITEMS);
    for _ in 0..maps {
        flux = flux.map(step);
    }
    flux.iter(PREFETCH)
        .map(|item| item.expect("range does not fail"))
        .fold(0, u64::wrapping_add)
}

/// Sums what it is sent, asking for everything at once (`u64::MAX` is
/// "no limit", rule 3.17): the chain runs without a hop to another thread.
struct Sum {
    total: u64,
    done: may::sync::mpsc::Sender<u64>,
}

impl Subscriber<u64> for Sum {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, item: u64) {
        self.total = self.total.wrapping_add(item);
    }
    fn on_error(&mut self, error: Error) {
        panic!("range does not fail: {error}");
    }
    fn on_complete(&mut self) {
        let _ = self.done.send(self.total);
    }
}

fn flux_subscribed(maps: usize) -> u64 {
    let mut flux = Flux::range(0, ITEMS);
    for _ in 0..maps {
        flux = flux.map(step);
    }
    let (done, total) = may::sync::mpsc::channel();
    flux.subscribe(Sum { total: 0, done });
    total.recv().expect("the stream completes")
}

fn channel_chain(maps: usize) -> u64 {
    let (tx, mut rx) = bounded::channel(CAPACITY);
    let mut stages = vec![go!(move || {
        for x in 0..ITEMS {
            tx.send(x).expect("the next stage is running");
        }
    })];
    for _ in 0..maps {
        let (tx, next) = bounded::channel(CAPACITY);
        let upstream = std::mem::replace(&mut rx, next);
        stages.push(go!(move || {
            for x in upstream.iter() {
                tx.send(step(x)).expect("the next stage is running");
            }
        }));
    }
    let sum = rx.iter().fold(0, u64::wrapping_add);
    for stage in stages {
        stage.join().expect("a stage does not panic");
    }
    sum
}

/// Median time of `RUNS` runs of `chain(maps)`, after one warm-up; every
/// run must give the same sum (each item went through every map).
fn median(chain: fn(usize) -> u64, maps: usize) -> Duration {
    let expected = (0..ITEMS)
        .map(|x| x + maps as u64)
        .fold(0, u64::wrapping_add);
    assert_eq!(chain(maps), expected, "warm-up");
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(chain(maps), expected);
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[RUNS / 2]
}

fn row(what: &str, chain: fn(usize) -> u64) -> (String, Vec<Cell>) {
    let times: Vec<Duration> = CHAINS.iter().map(|&n| median(chain, n)).collect();
    let mut cells: Vec<Cell> = times
        .iter()
        .map(|t| Cell::PerSecond(ITEMS as f64 / t.as_secs_f64()))
        .collect();
    let (first, last) = (times[0], times[CHAINS.len() - 1]);
    let extra_maps = (CHAINS[CHAINS.len() - 1] - CHAINS[0]) as f64;
    // A chain of 16 that is not slower than a chain of 1 has a per-map cost
    // below the noise of the runs: shown as a dash, not as a number.
    match last.checked_sub(first) {
        Some(extra) => cells.push(Cell::Nanos(
            extra.as_nanos() as f64 / extra_maps / ITEMS as f64,
        )),
        None => cells.push(Cell::Empty),
    }
    eprintln!("{what}: {times:?}");
    (what.to_owned(), cells)
}

fn main() {
    support::configure_may();
    // Other work on the machine shows in every row: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_owned();
    let rows = vec![
        row("iterator chain (boxed maps)", iterator_chain),
        row("Flux, pulled with iter(256)", flux_chain),
        row("Flux, one subscriber asking for all", flux_subscribed),
        row("channels between coroutines", channel_chain),
    ];
    let note = format!(
        "Items a second through a chain of N `map`s (200,000 items, median of 5 runs, pulled \
         by the bench's main thread, 2 may workers); the last column is the cost of one more \
         map per item, from the 1-map and 16-map chains (a dash: the 16-map chain was not \
         slower, the cost is below the runs' noise). Load average before the runs: {load}."
    );
    support::write_cells_table_of(
        "reactive_operators",
        "reactive_pipeline",
        "operators.md",
        &note,
        &["1 map", "4 maps", "16 maps", "per map, per item"],
        &rows,
    );
}
