//! Step 2: a chain of synchronous operators, with a tap between them that
//! logs the demand passing upstream: `filter` and `distinct_until_changed`
//! ask for one more in place of each item they drop; `take` asks for no
//! more than it needs, then cancels.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use may_patterns::reactive::{Control, Error, Flux, Probe, Signal, Subscriber, Subscription};
use may_patterns::runtime::{configure_once, Settings};

/// Every request and cancel seen by the taps, as `(tap, what)`.
type Log = Arc<Mutex<Vec<(&'static str, String)>>>;

// ANCHOR: tap
/// An operator that changes nothing and logs the demand and cancels its
/// downstream sends upstream. Built with `lift`, like the library's own.
fn tap<T: Send + 'static>(flux: Flux<T>, name: &'static str, log: &Log) -> Flux<T> {
    let log = log.clone();
    flux.lift(move |down| {
        Box::new(Tap {
            down,
            name,
            log: log.clone(),
        })
    })
}

struct Tap<T> {
    down: Box<dyn Subscriber<T>>,
    name: &'static str,
    log: Log,
}

/// The subscription `Tap` hands downstream: log, then pass on.
struct Logged {
    upstream: Subscription,
    name: &'static str,
    log: Log,
}

impl Control for Logged {
    fn request(&self, n: u64) {
        let shown = if n == u64::MAX {
            "MAX".into()
        } else {
            n.to_string()
        };
        self.log.lock().unwrap().push((self.name, shown));
        self.upstream.request(n)
    }
    fn cancel(&self) {
        self.log.lock().unwrap().push((self.name, "cancel".into()));
        self.upstream.cancel()
    }
}

impl<T: Send + 'static> Subscriber<T> for Tap<T> {
    fn on_subscribe(&mut self, upstream: Subscription) {
        let (name, log) = (self.name, self.log.clone());
        self.down.on_subscribe(Subscription::new(Logged {
            upstream,
            name,
            log,
        }))
    }
    fn on_next(&mut self, item: T) {
        self.down.on_next(item)
    }
    fn on_error(&mut self, error: Error) {
        self.down.on_error(error)
    }
    fn on_complete(&mut self) {
        self.down.on_complete()
    }
}
// ANCHOR_END: tap

// ANCHOR: chain
/// Readings from a sensor that repeats itself: keep the changes, keep the
/// even ones, scale them, and report a running total of the first four.
fn pipeline(log: &Log) -> Flux<u64> {
    let readings = Flux::from_iter(|| [5, 5, 6, 6, 6, 8, 3, 3, 10, 12, 12, 7, 14, 16]);
    let changes = tap(readings, "source", log).distinct_until_changed();
    let even = tap(changes, "distinct", log).filter(|n| n % 2 == 0);
    let totals = tap(even, "filter", log)
        .map(|n| n * 10)
        .scan(0, |total, n| total + n);
    tap(totals.take(4), "take", log)
}
// ANCHOR_END: chain

/// The log so far, one line per tap, upstream last; and empties it.
fn drain(log: &Log) -> Vec<String> {
    let entries = std::mem::take(&mut *log.lock().unwrap());
    ["take", "filter", "distinct", "source"]
        .iter()
        .map(|tap| {
            let asked: Vec<&str> = entries
                .iter()
                .filter(|(name, _)| name == tap)
                .map(|(_, what)| what.as_str())
                .collect();
            format!("  {tap:>8} was asked: {}", asked.join(", "))
        })
        .collect()
}

const WAIT: Duration = Duration::from_secs(5);

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let log = Log::default();
    let (probe, subscriber) = Probe::new();
    pipeline(&log).subscribe(subscriber);

    probe.request(2);
    probe.wait(2, WAIT);
    println!("request(2) -> {:?}", probe.items());
    drain(&log).iter().for_each(|line| println!("{line}"));

    probe.request(10);
    let ended = probe.wait_terminal(WAIT).last() == Some(&Signal::Complete);
    probe.wait_dropped(WAIT);
    println!(
        "request(10) -> {:?}, complete: {ended}",
        &probe.items()[2..]
    );
    drain(&log).iter().for_each(|line| println!("{line}"));
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_computes_running_totals_of_even_changes() {
        may_patterns::runtime::configure_for_tests();
        let log = Log::default();
        assert_eq!(pipeline(&log).collect_vec(), Ok(vec![60, 140, 240, 360]));
    }

    #[test]
    fn every_dropped_item_is_asked_for_again_upstream() {
        may_patterns::runtime::configure_for_tests();
        let log = Log::default();
        let (probe, subscriber) = Probe::new();
        pipeline(&log).subscribe(subscriber);
        probe.request(1);
        probe.wait(1, WAIT);
        // 5 (odd) and the second 5 (a repeat) were dropped on the way to 6.
        let source: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(tap, _)| *tap == "source")
            .map(|(_, what)| what.clone())
            .collect();
        assert_eq!(source, vec!["1", "1", "1"]);
        assert_eq!(probe.violations(), Vec::<String>::new());
    }
}
