//! Exercise 1 (starter): a consumer that takes items in batches.
//!
//! Run it: `cargo run --example exercise1_batching_starter`
//! (it panics at the `todo!()` until you write `next_batch`).

// ANCHOR: starter
use std::time::Duration;

use may::go;
use may_patterns::bounded;

/// Wait for the first item, then keep taking items until the batch holds
/// `max` of them or `linger` has passed since the first one arrived.
/// Return an empty batch only when every sender is gone and nothing is left.
fn next_batch<T>(rx: &bounded::Receiver<T>, max: usize, linger: Duration) -> Vec<T> {
    // Hint: `recv` for the first item, then `recv_timeout` with the time
    // that is left until the deadline.
    let _ = (rx, max, linger);
    todo!("collect one batch")
}

fn main() {
    may::config().set_workers(2);
    let (tx, rx) = bounded::channel(16);
    let producer = go!(move || (0..100).for_each(|n| tx.send(n).unwrap()));
    let mut batches = 0;
    while !next_batch(&rx, 10, Duration::from_millis(5)).is_empty() {
        batches += 1;
    }
    producer.join().unwrap();
    println!("100 items arrived in {batches} batches of at most 10");
}
// ANCHOR_END: starter
