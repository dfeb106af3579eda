//! Memory of a hot publisher with a fast emitter and a slow subscriber, per
//! backpressure strategy: each run is a child process of this bench (so one
//! run's heap does not hide in another's peak), which reports its own peak
//! resident memory (`VmHWM` in `/proc/self/status`). Writes
//! `book/reactive_pipeline/memory.md`.
//!
//! The emitter is an OS thread emitting `n` items of 1 KiB as fast as it
//! can; the subscriber takes one item, waits 20 µs on the alarm, and asks
//! for the next. When the emitter is done the subscriber is cancelled, so
//! every run ends (a `Buffer` run takes as long as the subscriber needs;
//! the others end when the emitter does).

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::reactive::{Backpressure, Error, Hot, Subscriber, Subscription};

#[path = "support/mod.rs"]
mod support;

use support::Cell;

const ITEM_BYTES: usize = 1024;
const PACE: Duration = Duration::from_micros(20);
const STRATEGY_VAR: &str = "REACTIVE_MEMORY_STRATEGY";
const ITEMS_VAR: &str = "REACTIVE_MEMORY_ITEMS";

const STRATEGIES: [Backpressure; 5] = [
    Backpressure::Buffer(64),
    Backpressure::Drop(64),
    Backpressure::Latest,
    Backpressure::Error(64),
    Backpressure::Unbounded,
];

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// The slow subscriber: one item, a pause, the next.
struct Slow {
    subscription: Arc<Mutex<Option<Subscription>>>,
}

impl Subscriber<Vec<u8>> for Slow {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(1);
        *self.subscription.lock().unwrap() = Some(subscription);
    }
    fn on_next(&mut self, _item: Vec<u8>) {
        alarm::shared().sleep(PACE);
        if let Some(subscription) = &*self.subscription.lock().unwrap() {
            subscription.request(1);
        }
    }
    fn on_error(&mut self, _error: Error) {}
    fn on_complete(&mut self) {}
}

/// One run, in the child: print `key=value` lines for the parent.
fn child(strategy: Backpressure, items: u64) {
    may::config().set_workers(2);
    may::config().set_worker_pin(false);
    let hot = Hot::new();
    let subscription = Arc::new(Mutex::new(None));
    hot.flux(strategy).subscribe(Slow {
        subscription: subscription.clone(),
    });
    let before = peak_rss_kib();
    let feed = hot.clone();
    let started = Instant::now();
    let emitter = std::thread::spawn(move || {
        for i in 0..items {
            feed.emit(vec![i as u8; ITEM_BYTES]);
        }
        started.elapsed()
    });
    let took = emitter.join().expect("the emitter ends");
    let after = peak_rss_kib();
    if let Some(subscription) = &*subscription.lock().unwrap() {
        subscription.cancel();
    }
    let stats = hot.stats();
    let s = stats.of(strategy).expect("one subscriber");
    println!("grew_kib={}", after.saturating_sub(before));
    println!("peak_kib={after}");
    println!("high_water={}", s.high_water);
    println!("dropped={}", s.dropped);
    println!("overflowed={}", s.overflowed);
    println!("emitter_ns={}", took.as_nanos());
}

fn name(strategy: Backpressure) -> String {
    strategy.to_string()
}

fn parse_strategy(text: &str) -> Backpressure {
    STRATEGIES
        .into_iter()
        .find(|s| name(*s) == text)
        .unwrap_or_else(|| fail(&format!("unknown strategy {text}")))
}

fn fail(message: &str) -> ! {
    eprintln!("reactive_memory bench: {message}");
    std::process::exit(1);
}

/// Run one child and read its lines.
fn run(strategy: Backpressure, items: u64) -> HashMap<String, f64> {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(STRATEGY_VAR, name(strategy))
        .env(ITEMS_VAR, items.to_string())
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot start the child: {e}")));
    if !output.status.success() {
        fail(&format!(
            "the {strategy} child failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
        .collect()
}

fn main() {
    if let Ok(strategy) = std::env::var(STRATEGY_VAR) {
        let items = std::env::var(ITEMS_VAR)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| fail("REACTIVE_MEMORY_ITEMS is not a number"));
        return child(parse_strategy(&strategy), items);
    }
    let mut rows = Vec::new();
    for items in [10_000u64, 100_000] {
        for strategy in STRATEGIES {
            let r = run(strategy, items);
            let get = |key: &str| r.get(key).copied().unwrap_or_else(|| fail(key));
            rows.push((
                format!("{strategy}, {items} items"),
                vec![
                    Cell::Bytes(get("grew_kib") * 1024.0),
                    Cell::Bytes(get("peak_kib") * 1024.0),
                    Cell::Whole(get("high_water") as u64),
                    Cell::Whole(get("dropped") as u64),
                    Cell::Whole(get("overflowed") as u64),
                    Cell::Nanos(get("emitter_ns")),
                ],
            ));
        }
    }
    support::write_cells_table_of(
        "reactive_memory",
        "reactive_pipeline",
        "memory.md",
        "One child process per row: an OS thread emits the items (1 KiB each) as fast as it \
         can to one subscriber that takes an item, waits 20 µs, and asks for the next. \
         Memory is the child's peak resident set (VmHWM): its growth while the emitter ran, \
         and the peak itself. Held: the most items buffered for the subscriber at once.",
        &[
            "peak RSS growth",
            "peak RSS",
            "most held",
            "dropped",
            "overflowed (subscribers)",
            "emitter's time",
        ],
        &rows,
    );
}
