//! Exercise 1 (solution): a consumer that takes items in batches, so the
//! cost of each write (a database round trip, a syscall) is shared by many
//! items, while `linger` bounds how long an item waits for its batch.
//!
//! Run it: `cargo run --example exercise1_batching_solution`

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, RecvTimeoutError};

// ANCHOR: solution
fn next_batch<T>(rx: &bounded::Receiver<T>, max: usize, linger: Duration) -> Vec<T> {
    let Ok(first) = rx.recv() else {
        return Vec::new(); // every sender is gone and the buffer is empty
    };
    let deadline = Instant::now() + linger;
    let mut batch = vec![first];
    while batch.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(item) => batch.push(item),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    batch
}
// ANCHOR_END: solution

fn main() {
    may::config().set_workers(2);
    let (tx, rx) = bounded::channel(16);
    let producer = go!(move || (0..100).for_each(|n| tx.send(n).unwrap()));
    let mut batches = 0;
    while !next_batch(&rx, 10, Duration::from_millis(5)).is_empty() {
        batches += 1;
    }
    producer.join().unwrap();
    println!("100 items arrived in ~{batches} batches of at most 10");
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_full_buffer_gives_full_batches_in_order() {
        configure_for_tests();
        let (tx, rx) = bounded::channel(32);
        (0..25).for_each(|n| tx.send(n).unwrap());
        drop(tx);
        assert_eq!(
            next_batch(&rx, 10, Duration::from_secs(5)),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(
            next_batch(&rx, 10, Duration::from_secs(5)),
            (10..20).collect::<Vec<_>>()
        );
        assert_eq!(
            next_batch(&rx, 10, Duration::from_secs(5)),
            (20..25).collect::<Vec<_>>()
        );
        assert!(next_batch(&rx, 10, Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn a_quiet_producer_gets_a_short_batch_after_the_linger_time() {
        configure_for_tests();
        let (tx, rx) = bounded::channel(4);
        tx.send(1).unwrap();
        let started = Instant::now();
        assert_eq!(next_batch(&rx, 10, Duration::from_millis(30)), vec![1]);
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(tx);
    }
}
