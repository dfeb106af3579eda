//! Pitfall: waiting for room with `try_send` + `yield_now` in a loop. It looks
//! co-operative, but the producer never parks: it is rescheduled again and
//! again, burning a core while it waits. `send` parks it instead.
//!
//! Run it: `cargo run --example pitfall_yield_retry`

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, TrySendError};
use may_patterns::runtime::{configure_once, Settings};

const ITEMS: usize = 100;

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    for how in [Wait::YieldAndRetry, Wait::Park] {
        let r = produce(how, ITEMS, Duration::from_millis(1));
        println!(
            "{how:?}: {ITEMS} items in {:.0?}, ~{} retries, CPU time {:.0?}",
            r.elapsed, r.retries, r.cpu
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    YieldAndRetry,
    Park,
}

struct Run {
    elapsed: Duration,
    retries: u64,
    cpu: Duration,
}

// ANCHOR: spin
/// The wrong way: spin until there is room.
fn send_spinning<T>(tx: &bounded::Sender<T>, mut item: T) -> u64 {
    let mut retries = 0;
    loop {
        match tx.try_send(item) {
            Ok(()) => return retries,
            Err(TrySendError::Full(back)) => {
                item = back;
                retries += 1;
                may::coroutine::yield_now(); // runs again almost at once
            }
            Err(TrySendError::Disconnected(_)) => panic!("consumer gone"),
        }
    }
}
// ANCHOR_END: spin

/// One producer, one consumer that takes `consume_each` per item, a buffer of 1.
fn produce(how: Wait, items: usize, consume_each: Duration) -> Run {
    let (tx, rx) = bounded::channel::<usize>(1);
    let consumer = go!(move || rx.iter().for_each(|_| may::coroutine::sleep(consume_each)));
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let retries = go!(move || {
        let mut retries = 0;
        for item in 0..items {
            match how {
                Wait::YieldAndRetry => retries += send_spinning(&tx, item),
                Wait::Park => tx.send(item).unwrap(), // parks until there is room
            }
        }
        retries
    })
    .join()
    .unwrap();
    consumer.join().unwrap();
    Run {
        elapsed: started.elapsed(),
        retries,
        cpu: process_cpu_time().saturating_sub(cpu_before),
    }
}

/// User + system CPU time of this process so far, from `/proc/self/stat`
/// (Linux; in clock ticks of 10 ms). Zero where that file does not exist.
fn process_cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses): utime is the
    // 12th, stime the 13th.
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(10 * fields.iter().sum::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn spinning_retries_thousands_of_times_where_parking_waits_once() {
        configure_for_tests();
        let spin = produce(Wait::YieldAndRetry, 20, Duration::from_millis(1));
        // Each item waits about a millisecond for room; a yield takes well
        // under a microsecond, so the spinner comes back many times per item.
        assert!(spin.retries > 20 * 10, "only {} retries", spin.retries);
        let park = produce(Wait::Park, 20, Duration::from_millis(1));
        assert_eq!(park.retries, 0);
    }
}
