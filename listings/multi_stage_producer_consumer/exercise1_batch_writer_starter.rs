//! Exercise 1 (starter): a writer that batches. The write stage is the
//! bottleneck once enrich has enough workers, and a real sink (a database, a
//! file, a socket) often costs about the same per call whether it writes one
//! record or twenty. Make the writer take every record already waiting, up
//! to `max_batch`, and pay for one write per batch.
//!
//! Run it: `cargo run --example exercise1_batch_writer_starter`
//! (it panics at the `todo!()` until you write `write_in_batches`).

// ANCHOR: starter
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver};

/// One call to the sink: costs `cost` however many records it carries.
fn write_batch(batch: &[u64], cost: Duration) {
    assert!(!batch.is_empty(), "never write an empty batch");
    may::coroutine::sleep(cost);
}

/// Take records from `input` until it ends, and write them with
/// `write_batch`, at most `max_batch` per call. Return the batches written,
/// in order.
fn write_in_batches(input: Receiver<u64>, max_batch: usize, cost: Duration) -> Vec<Vec<u64>> {
    // Hint: park in `recv` for the first record of a batch, then add records
    // with `try_recv` only while they are already waiting: a batch must never
    // wait to fill up, or a quiet stream would stall.
    let _ = (input, max_batch, cost, write_batch(&[0], Duration::ZERO));
    todo!("batch the records and write each batch once")
}

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
        "{} records in {} write calls, {:.1?}",
        batches.iter().map(Vec::len).sum::<usize>(),
        batches.len(),
        started.elapsed()
    );
}
// ANCHOR_END: starter
