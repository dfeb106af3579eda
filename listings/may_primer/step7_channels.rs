//! Step 7: may's three channel kinds, and which one to reach for.
//!
//! Run it: `cargo run --example step7_channels`

use may::go;
use may::sync::{mpmc, mpsc, spsc};

fn main() {
    may::config().set_workers(2);
    println!(
        "mpsc: 4 producers sent {} messages to one consumer",
        mpsc_fan_in(4, 1_000)
    );
    let shares = mpmc_work_sharing(3, 3_000);
    println!(
        "mpmc: 3 consumers shared 3000 jobs; total handled {}",
        shares.iter().sum::<usize>()
    );
    println!(
        "spsc: {} values passed through a one-to-one channel",
        spsc_relay(10_000)
    );
}

// ANCHOR: mpsc
/// Many producers, one consumer. The receiver is not Clone.
fn mpsc_fan_in(producers: usize, per_producer: usize) -> usize {
    let (tx, rx) = mpsc::channel();
    for p in 0..producers {
        let tx = tx.clone();
        go!(move || {
            for i in 0..per_producer {
                tx.send((p, i)).expect("the consumer is alive");
            }
        });
    }
    drop(tx); // the loop below ends once every sender is gone
    rx.iter().count()
}
// ANCHOR_END: mpsc

// ANCHOR: mpmc
/// One producer, many consumers taking from one queue: each job is received
/// by exactly one consumer. Returns how many jobs each consumer handled.
fn mpmc_work_sharing(consumers: usize, jobs: usize) -> Vec<usize> {
    let (tx, rx) = mpmc::channel::<Option<usize>>();
    let workers: Vec<_> = (0..consumers)
        .map(|_| {
            // An mpmc Receiver is Clone. Each clone stops at an end marker
            // (None), not at disconnection: see the note below.
            let rx = rx.clone();
            go!(move || rx.iter().map_while(|job| job).count())
        })
        .collect();
    for job in 0..jobs {
        tx.send(Some(job)).unwrap();
    }
    for _ in 0..consumers {
        tx.send(None).unwrap(); // one end marker per consumer
    }
    workers.into_iter().map(|w| w.join().unwrap()).collect()
}
// ANCHOR_END: mpmc

// ANCHOR: spsc
/// Exactly one sender and one receiver (neither is Clone). Its Receiver has
/// no `recv_timeout`: a wait with a deadline needs mpsc or mpmc.
fn spsc_relay(count: u64) -> u64 {
    let (tx, rx) = spsc::channel();
    let consumer = go!(move || rx.iter().sum::<u64>());
    for v in 0..count {
        tx.send(v).unwrap();
    }
    drop(tx);
    let sum = consumer.join().unwrap();
    assert_eq!(sum, count * (count.saturating_sub(1)) / 2);
    count
}
// ANCHOR_END: spsc

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn mpsc_delivers_every_message() {
        configure_for_tests();
        assert_eq!(mpsc_fan_in(8, 500), 4_000);
    }

    #[test]
    fn mpmc_hands_each_job_to_exactly_one_consumer() {
        configure_for_tests();
        let shares = mpmc_work_sharing(4, 10_000);
        assert_eq!(shares.len(), 4);
        assert_eq!(shares.iter().sum::<usize>(), 10_000);
    }

    #[test]
    fn spsc_keeps_order_and_loses_nothing() {
        configure_for_tests();
        let (tx, rx) = spsc::channel();
        go!(move || (0..1_000).for_each(|v| tx.send(v).unwrap()));
        let got: Vec<i32> = rx.iter().collect();
        assert_eq!(got, (0..1_000).collect::<Vec<_>>());
        assert_eq!(spsc_relay(100), 100);
    }

    #[test]
    fn a_send_to_a_dropped_receiver_fails_instead_of_blocking() {
        configure_for_tests();
        let (tx, rx) = mpsc::channel::<u8>();
        drop(rx);
        assert!(tx.send(1).is_err());
    }
}
