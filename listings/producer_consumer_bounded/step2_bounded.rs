//! Step 2: the same producer and consumer over `may_patterns::bounded`. When
//! the buffer is full, `send` parks the producer until the consumer frees a
//! slot, so the queue stays at its capacity and resident memory stops
//! growing; `main` samples both, as step 1 does.
//!
//! Run it: `cargo run --example step2_bounded`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded;
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
    for sample in &report.samples {
        println!(
            "after {:.0?}: ~{} items queued (capacity {CAPACITY}), ~{} MiB resident",
            sample.at,
            sample.queued,
            sample.resident_kib / 1024
        );
    }
    println!(
        "deepest the queue got: {} items; consumed ~{} items",
        report.high_water, report.consumed
    );
    println!(
        "the producer spent {:.1}% of the run inside `send`, parked by backpressure",
        100.0 * report.producer_in_send.as_secs_f64() / report.ran_for.as_secs_f64()
    );
}

/// What the queue looked like at one moment.
pub struct Sample {
    pub at: Duration,
    pub queued: usize,
    pub resident_kib: u64,
}

pub struct Report {
    pub samples: Vec<Sample>,
    pub high_water: usize,
    pub consumed: usize,
    /// Time the producer spent in `send`: almost all of it parked.
    pub producer_in_send: Duration,
    pub ran_for: Duration,
}

fn run_bounded(capacity: usize, run_for: Duration, consume_each: Duration) -> Report {
    // ANCHOR: bounded
    let (tx, rx) = bounded::channel::<Vec<u8>>(capacity);
    // ANCHOR_END: bounded
    let consumed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A second Sender, only to read the queue's length from main. Were the
    // consumer waiting for every sender to go (`for item in rx.iter()` to its
    // end), this clone would keep it waiting forever: it stops on `stop`.
    let depth = tx.clone();

    // ANCHOR: producer
    let producer = go!(move || {
        let mut in_send = Duration::ZERO;
        loop {
            let item = vec![0u8; PAYLOAD_BYTES];
            let called = Instant::now();
            let sent = tx.send(item); // parks while the buffer is full
            in_send += called.elapsed();
            if sent.is_err() {
                break; // the consumer is gone
            }
        }
        in_send
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
        samples.push(Sample {
            at: started.elapsed(),
            queued: depth.len(),
            resident_kib: resident_kib(),
        });
    }
    stop.store(true, Ordering::Relaxed);
    let high_water = consumer.join().unwrap();
    Report {
        samples,
        high_water,
        consumed: consumed.load(Ordering::Relaxed),
        producer_in_send: producer.join().unwrap(),
        ran_for: started.elapsed(),
    }
}

/// This process's resident memory in KiB, from `/proc/self/status` (Linux);
/// 0 where that file does not exist.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
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
        assert!(report.samples.iter().all(|s| s.queued <= 16));
        // The consumer is the bottleneck: the producer spends most of the run
        // parked, not piling up work.
        assert!(report.producer_in_send > report.ran_for / 2);
        assert!(report.consumed > 0);
    }

    #[test]
    fn resident_memory_stops_growing_once_the_buffer_is_full() {
        configure_for_tests();
        let report = run_bounded(16, Duration::from_millis(150), Duration::from_millis(1));
        let (first, last) = (&report.samples[0], report.samples.last().unwrap());
        // Step 1 grew by tens of MiB between two samples; here the buffer
        // holds 16 KiB of items, so anything near a MiB would be a leak.
        assert!(
            last.resident_kib <= first.resident_kib + 1024,
            "{} KiB then {} KiB",
            first.resident_kib,
            last.resident_kib
        );
    }
}
