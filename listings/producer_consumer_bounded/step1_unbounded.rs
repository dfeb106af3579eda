//! Step 1: a fast producer, a slow consumer, and may's unbounded channel.
//! Nothing slows the producer down, so the queue (and memory) grows for as
//! long as the program runs.
//!
//! Run it: `cargo run --example step1_unbounded`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::sync::mpsc;
use may_patterns::runtime::{configure_once, Settings};

/// Each item carries a 1 KiB payload, like a small request or log line.
const PAYLOAD_BYTES: usize = 1024;

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let report = run_unbounded(Duration::from_millis(200), Duration::from_millis(1));
    for sample in &report.samples {
        println!(
            "after {:.0?}: ~{} items queued, ~{} MiB resident",
            sample.at,
            sample.queued,
            sample.resident_kib / 1024
        );
    }
    println!(
        "consumed ~{} items in {:.0?}",
        report.consumed, report.ran_for
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
    pub consumed: usize,
    pub ran_for: Duration,
}

// ANCHOR: unbounded
/// Run a producer that sends as fast as it can and a consumer that needs
/// `consume_each` per item, for `run_for`; sample the queue every 50 ms.
fn run_unbounded(run_for: Duration, consume_each: Duration) -> Report {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let producer = {
        let (queued, stop) = (queued.clone(), stop.clone());
        go!(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if tx.send(vec![0u8; PAYLOAD_BYTES]).is_err() {
                    break; // the consumer has stopped
                }
                queued.fetch_add(1, Ordering::Relaxed);
                sent += 1;
                if sent.is_multiple_of(64) {
                    may::coroutine::yield_now(); // share the worker, that's all
                }
            }
        })
    };
    let consumer = {
        let (queued, consumed, stop) = (queued.clone(), consumed.clone(), stop.clone());
        go!(move || {
            for item in rx.iter() {
                may::coroutine::sleep(consume_each); // the slow part
                drop(item);
                queued.fetch_sub(1, Ordering::Relaxed);
                consumed.fetch_add(1, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    break; // whatever is still queued is dropped with `rx`
                }
            }
        })
    };
    // ANCHOR_END: unbounded

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < run_for {
        // main is an OS thread, not a coroutine: this sleep blocks no worker.
        std::thread::sleep(Duration::from_millis(50));
        samples.push(Sample {
            at: started.elapsed(),
            queued: queued.load(Ordering::Relaxed),
            resident_kib: resident_kib(),
        });
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    consumer.join().unwrap();
    Report {
        samples,
        consumed: consumed.load(Ordering::Relaxed),
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
    fn the_queue_keeps_growing_while_the_consumer_falls_behind() {
        configure_for_tests();
        let report = run_unbounded(Duration::from_millis(150), Duration::from_millis(1));
        let depths: Vec<usize> = report.samples.iter().map(|s| s.queued).collect();
        assert!(depths.len() >= 2, "{depths:?}");
        assert!(
            depths.windows(2).all(|w| w[1] > w[0]),
            "the queue should grow at every sample: {depths:?}"
        );
        // The producer outran the consumer many times over.
        assert!(*depths.last().unwrap() > 10 * report.consumed.max(1));
    }
}
