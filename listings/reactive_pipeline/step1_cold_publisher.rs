//! Step 1: a cold publisher written by hand on `Demand`, and a subscriber
//! that asks for items a few at a time. Nothing is sent that was not
//! requested; `request(0)` is an error; `cancel` stops the source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may_patterns::reactive::{Demand, Flux, Probe, Publisher, Signal, Subscriber};
use may_patterns::runtime::{configure_once, Settings};

/// What the source did, in order, as the source's coroutine saw it.
type Log = Arc<Mutex<Vec<String>>>;

// ANCHOR: source
/// The numbers `0..limit`, one per unit of demand. Cold: each subscriber
/// gets a coroutine of its own that starts again from 0.
struct Numbers {
    limit: u64,
    log: Log,
}

impl Publisher<u64> for Numbers {
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<u64>>) {
        let (limit, log) = (self.limit, self.log.clone());
        may::go!(move || {
            let (subscription, demand) = Demand::new();
            subscriber.on_subscribe(subscription); // first, and once
            let mut sent = 0;
            let end = loop {
                if sent == limit {
                    subscriber.on_complete();
                    break "completed";
                }
                // Parks this coroutine until there is demand (or a cancel).
                match demand.take_one() {
                    Ok(true) => {
                        subscriber.on_next(sent);
                        sent += 1;
                    }
                    Ok(false) => break "cancelled",
                    Err(error) => {
                        subscriber.on_error(error);
                        break "failed";
                    }
                }
            };
            log.lock()
                .unwrap()
                .push(format!("{end} after sending {sent}"));
            // Returning drops `subscriber`: the source lets go of it.
        });
    }
}
// ANCHOR_END: source

/// The items among `signals` from the `skip`th on, then how the stream
/// ended, if it did.
fn describe(signals: &[Signal<u64>], skip: usize) -> String {
    let items: Vec<u64> = signals
        .iter()
        .filter_map(|s| match s {
            Signal::Next(n) => Some(*n),
            _ => None,
        })
        .skip(skip)
        .collect();
    match signals.last() {
        Some(Signal::Complete) => format!("{items:?} then complete"),
        Some(Signal::Error(e)) => format!("{items:?} then error: {e}"),
        _ => format!("{items:?}"),
    }
}

const WAIT: Duration = Duration::from_secs(5);

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let log = Log::default();
    let numbers = Flux::new(Numbers {
        limit: 10,
        log: log.clone(),
    });

    let (first, subscriber) = Probe::new();
    numbers.subscribe(subscriber);
    let none = first.wait(1, Duration::from_millis(50));
    println!("subscribed, nothing requested: {}", describe(&none, 0));
    first.request(2);
    println!("request(2): {}", describe(&first.wait(2, WAIT), 0));
    first.request(3);
    println!("request(3): {}", describe(&first.wait(5, WAIT), 2));
    let quiet = Instant::now();
    let still = first.wait(6, Duration::from_millis(50)).len();
    println!(
        "{:.1?} later, no new demand: still {still} items",
        quiet.elapsed()
    );
    first.cancel();
    first.wait_dropped(WAIT);
    println!("cancel: the source {}", log.lock().unwrap()[0]);

    let (second, subscriber) = Probe::new();
    numbers.subscribe(subscriber);
    second.request(u64::MAX);
    println!(
        "a second subscriber, request(u64::MAX): {}",
        describe(&second.wait_terminal(WAIT), 0)
    );
    second.wait_dropped(WAIT);
    println!("  the source {}", log.lock().unwrap()[1]);

    let (third, subscriber) = Probe::new();
    numbers.subscribe(subscriber);
    third.request(0);
    println!(
        "a third, request(0): {}",
        describe(&third.wait_terminal(WAIT), 0)
    );
    third.wait_dropped(WAIT);
    println!("  the source {}", log.lock().unwrap()[2]);

    // The library's own source does the same for any iterator.
    let library = Flux::range(0, 10).collect_vec();
    println!("Flux::range(0, 10).collect_vec(): {library:?}");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(limit: u64) -> (Flux<u64>, Log) {
        may_patterns::runtime::configure_for_tests();
        let log = Log::default();
        let flux = Flux::new(Numbers {
            limit,
            log: log.clone(),
        });
        (flux, log)
    }

    #[test]
    fn numbers_sends_only_what_was_requested() {
        let (flux, _) = numbers(100);
        let (probe, subscriber) = Probe::new();
        flux.subscribe(subscriber);
        probe.request(4);
        assert_eq!(probe.wait(4, WAIT).len(), 4);
        assert_eq!(probe.wait(5, Duration::from_millis(50)).len(), 4);
        assert_eq!(probe.violations(), Vec::<String>::new());
    }

    #[test]
    fn cancel_wakes_the_parked_source_and_it_stops() {
        let (flux, log) = numbers(100);
        let (probe, subscriber) = Probe::new();
        flux.subscribe(subscriber);
        probe.request(3);
        probe.wait(3, WAIT);
        probe.cancel();
        assert!(probe.wait_dropped(WAIT));
        assert_eq!(*log.lock().unwrap(), vec!["cancelled after sending 3"]);
        assert!(!probe.is_terminated());
    }

    #[test]
    fn request_zero_fails_the_stream() {
        let (flux, log) = numbers(100);
        let (probe, subscriber) = Probe::new();
        flux.subscribe(subscriber);
        probe.request(1);
        probe.wait(1, WAIT);
        probe.request(0);
        let signals = probe.wait_terminal(WAIT);
        assert!(matches!(signals.last(), Some(Signal::Error(_))));
        assert!(probe.wait_dropped(WAIT));
        assert_eq!(*log.lock().unwrap(), vec!["failed after sending 1"]);
    }
}
