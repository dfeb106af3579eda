//! Exercise 1 (solution): a writer that batches whatever is already waiting.
//!
//! Run it: `cargo run --example exercise1_batch_writer_solution`

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver};

/// One call to the sink: costs `cost` however many records it carries.
fn write_batch(batch: &[u64], cost: Duration) {
    assert!(!batch.is_empty(), "never write an empty batch");
    may::coroutine::sleep(cost);
}

// ANCHOR: solution
fn write_in_batches(input: Receiver<u64>, max_batch: usize, cost: Duration) -> Vec<Vec<u64>> {
    let mut batches = Vec::new();
    // Park for the first record: an idle writer costs nothing.
    while let Ok(first) = input.recv() {
        let mut batch = vec![first];
        // Then take only what is already queued: never wait for more.
        while batch.len() < max_batch {
            match input.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break, // empty now (or closed): write what we have
            }
        }
        write_batch(&batch, cost);
        batches.push(batch);
    }
    batches
}
// ANCHOR_END: solution

fn main() {
    may::config().set_workers(2);
    let (tx, rx) = bounded::channel::<u64>(16);
    let started = Instant::now();
    // Records arrive one per millisecond; a write costs 2 ms.
    let reader = go!(move || {
        for id in 0..100 {
            may::coroutine::sleep(Duration::from_millis(1));
            tx.send(id).unwrap();
        }
    });
    let batches = write_in_batches(rx, 16, Duration::from_millis(2));
    reader.join().unwrap();
    println!(
        "{} records in ~{} write calls, {:.1?}",
        batches.iter().map(Vec::len).sum::<usize>(),
        batches.len(),
        started.elapsed()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// A channel already holding `0..n`, its sender dropped.
    fn queued(n: u64) -> Receiver<u64> {
        let (tx, rx) = bounded::channel(64);
        (0..n).for_each(|id| tx.send(id).unwrap());
        rx
    }

    #[test]
    fn waiting_records_are_written_in_full_batches_in_order() {
        configure_for_tests();
        let batches = write_in_batches(queued(10), 4, Duration::from_millis(1));
        assert_eq!(
            batches,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
    }

    #[test]
    fn a_batch_of_one_writes_every_record_alone() {
        configure_for_tests();
        let batches = write_in_batches(queued(5), 1, Duration::from_millis(1));
        assert_eq!(batches.len(), 5);
    }

    #[test]
    fn a_slow_trickle_is_not_held_back_to_fill_a_batch() {
        configure_for_tests();
        let (tx, rx) = bounded::channel(8);
        let (done_tx, done_rx) = may::sync::mpsc::channel();
        go!(move || {
            let _ = done_tx.send(write_in_batches(rx, 100, Duration::from_millis(1)));
        });
        tx.send(1).unwrap();
        // The writer must write record 1 on its own, without waiting for more:
        // wait until the buffer is empty again, then send the second.
        while !tx.is_empty() {
            may::coroutine::sleep(Duration::from_millis(1));
        }
        may::coroutine::sleep(Duration::from_millis(100));
        tx.send(2).unwrap();
        drop(tx);
        let batches = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(batches, vec![vec![1], vec![2]]);
    }
}
