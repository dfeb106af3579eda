//! Step 2: the same producer and consumer over `may_patterns::bounded`. When
//! the buffer is full, `send` parks the producer until the consumer frees a
//! slot, so the queue and memory stay flat.
//!
//! Run it: `cargo run --example step2_bounded`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, TrySendError};
use may_patterns::runtime::{configure_once, Settings};

const PAYLOAD_BYTES: usize = 1024;
const CAPACITY: usize = 64;

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let report = run_bounded(
        CAPACITY,
        Duration::from_millis(200),
        Duration::from_millis(1),
    );
    for (at, queued) in &report.samples {
        println!("after {at:.0?}: ~{queued} items queued (capacity {CAPACITY})");
    }
    println!(
        "deepest the queue got: {} items; consumed ~{} items",
        report.high_water, report.consumed
    );
    println!(
        "the producer spent {:.1}% of the run parked by backpressure",
        100.0 * report.producer_blocked.as_secs_f64() / report.ran_for.as_secs_f64()
    );
}

pub struct Report {
    /// (time since start, items queued then)
    pub samples: Vec<(Duration, usize)>,
    pub high_water: usize,
    pub consumed: usize,
    pub producer_blocked: Duration,
    pub ran_for: Duration,
}

fn run_bounded(capacity: usize, run_for: Duration, consume_each: Duration) -> Report {
    // ANCHOR: bounded
    let (tx, rx) = bounded::channel::<Vec<u8>>(capacity);
    // ANCHOR_END: bounded
    let consumed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let depth = tx.clone(); // only to sample the queue length from main

    // ANCHOR: producer
    let producer = go!(move || {
        let mut blocked = Duration::ZERO;
        loop {
            let item = vec![0u8; PAYLOAD_BYTES];
            match tx.try_send(item) {
                Ok(()) => {}
                // Full: wait for room, and time how long backpressure held us.
                Err(TrySendError::Full(item)) => {
                    let parked_at = Instant::now();
                    if tx.send(item).is_err() {
                        break; // the consumer is gone
                    }
                    blocked += parked_at.elapsed();
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        blocked
    });
    // ANCHOR_END: producer
    let consumer = {
        let (consumed, stop) = (consumed.clone(), stop.clone());
        go!(move || {
            for item in rx.iter() {
                may::coroutine::sleep(consume_each);
                drop(item);
                consumed.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            rx.high_water() // then `rx` is dropped: the producer's send fails
        })
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(50)); // main is an OS thread
        samples.push((started.elapsed(), depth.len()));
    }
    stop.store(true, Ordering::Relaxed);
    let high_water = consumer.join().unwrap();
    Report {
        samples,
        high_water,
        consumed: consumed.load(Ordering::Relaxed),
        producer_blocked: producer.join().unwrap(),
        ran_for: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_queue_never_exceeds_the_capacity_and_the_producer_waits() {
        configure_for_tests();
        let report = run_bounded(16, Duration::from_millis(150), Duration::from_millis(1));
        assert!(report.high_water <= 16, "high water {}", report.high_water);
        assert!(report.samples.iter().all(|&(_, queued)| queued <= 16));
        // The consumer is the bottleneck: the producer spends most of the run
        // parked, not piling up work.
        assert!(report.producer_blocked > report.ran_for / 2);
        assert!(report.consumed > 0);
    }
}
