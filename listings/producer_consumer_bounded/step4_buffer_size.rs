//! Step 4: several producers and consumers at different rates. Producers send
//! in bursts; consumers work at a steady pace. The buffer's capacity decides
//! who waits: a small buffer makes producers wait, a large one makes items
//! wait.
//!
//! Run it: `cargo run --example step4_buffer_size`

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded;
use may_patterns::runtime::{configure_once, Settings};

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let load = Load {
        producers: 4,
        bursts: 5,
        burst_len: 8,
        pause: Duration::from_millis(20),
        consumers: 2,
        consume_each: Duration::from_millis(1),
    };
    println!(
        "{} producers send bursts of {} then pause {:?}; {} consumers take {:?} per item",
        load.producers, load.burst_len, load.pause, load.consumers, load.consume_each
    );
    for capacity in [1, 4, 16, 64] {
        let r = run(&load, capacity);
        println!(
            "capacity {capacity:>2}: ~{:.0} items/s, waited in queue median {:.1?} p99 {:.1?}, producers parked {:.0}%",
            r.throughput, r.median_wait, r.p99_wait, r.producers_parked_pct
        );
    }
}

/// The workload: bursty producers, steady consumers.
pub struct Load {
    pub producers: usize,
    pub bursts: usize,
    pub burst_len: usize,
    pub pause: Duration,
    pub consumers: usize,
    pub consume_each: Duration,
}

pub struct Outcome {
    pub received: usize,
    pub high_water: usize,
    pub throughput: f64,
    pub median_wait: Duration,
    pub p99_wait: Duration,
    pub producers_parked_pct: f64,
}

// ANCHOR: run
fn run(load: &Load, capacity: usize) -> Outcome {
    let (tx, rx) = bounded::channel::<Instant>(capacity);
    let started = Instant::now();
    let producers: Vec<_> = (0..load.producers)
        .map(|_| {
            let tx = tx.clone();
            let (bursts, burst_len, pause) = (load.bursts, load.burst_len, load.pause);
            go!(move || {
                let mut parked = Duration::ZERO;
                for _ in 0..bursts {
                    for _ in 0..burst_len {
                        let before = Instant::now();
                        tx.send(Instant::now()).unwrap(); // the item: its birth time
                        parked += before.elapsed();
                    }
                    may::coroutine::sleep(pause);
                }
                parked
            })
        })
        .collect();
    drop(tx); // the consumers stop when every producer's sender is gone

    let consumers: Vec<_> = (0..load.consumers)
        .map(|_| {
            let (rx, consume_each) = (rx.clone(), load.consume_each);
            go!(move || {
                let mut waits = Vec::new();
                for born in rx.iter() {
                    waits.push(born.elapsed()); // time spent in the queue
                    may::coroutine::sleep(consume_each);
                }
                waits
            })
        })
        .collect();
    // ANCHOR_END: run

    let parked: Duration = producers.into_iter().map(|p| p.join().unwrap()).sum();
    let mut waits: Vec<Duration> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    waits.sort();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
    Outcome {
        received: waits.len(),
        high_water: rx.high_water(),
        throughput: waits.len() as f64 / elapsed.as_secs_f64(),
        median_wait: at(0.5),
        p99_wait: at(0.99),
        producers_parked_pct: 100.0 * parked.as_secs_f64()
            / (load.producers as f64 * elapsed.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn small_load() -> Load {
        Load {
            producers: 3,
            bursts: 2,
            burst_len: 5,
            pause: Duration::from_millis(5),
            consumers: 2,
            consume_each: Duration::from_millis(1),
        }
    }

    #[test]
    fn every_item_is_received_once_and_the_queue_stays_within_capacity() {
        configure_for_tests();
        for capacity in [1, 4, 64] {
            let outcome = run(&small_load(), capacity);
            assert_eq!(outcome.received, 3 * 2 * 5);
            assert!(outcome.high_water <= capacity);
        }
    }

    #[test]
    fn a_buffer_larger_than_a_burst_absorbs_it() {
        configure_for_tests();
        // Three producers burst 5 items each at once; with room for all of
        // them, the queue gets deeper than a single burst.
        let outcome = run(&small_load(), 64);
        assert!(outcome.high_water > 5, "high water {}", outcome.high_water);
    }
}
