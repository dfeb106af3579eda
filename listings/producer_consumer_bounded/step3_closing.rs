//! Step 3: closing, in both directions. When the last receiver is dropped,
//! every producer parked on the full buffer wakes, and its `send` fails with
//! the item handed back. When the last sender is dropped, every consumer's
//! loop ends once the buffer is drained, however many consumers there are.
//!
//! Run it: `cargo run --example step3_closing`

use may::go;
use may_patterns::bounded::{self, SendError};
use may_patterns::runtime::{configure_once, Settings};

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let handed_back = consumer_leaves(2, 4);
    println!(
        "4 producers send into a full buffer of 2, then the receiver is dropped: \
         {} sends failed, handing back items {handed_back:?}",
        handed_back.len()
    );
    let per_consumer = producers_leave(2, 10, 3);
    println!(
        "2 producers send 10 items each and return; 3 consumers: {} loops ended, \
         {} items received",
        per_consumer.len(),
        per_consumer.iter().sum::<usize>()
    );
}

// ANCHOR: consumer_leaves
/// Fill a buffer of `capacity`, start `producers` that each send one more
/// item (so they park, or are about to), then drop the only receiver. Every
/// send fails and hands its item back; returns those items, sorted.
fn consumer_leaves(capacity: usize, producers: u32) -> Vec<u32> {
    let (tx, rx) = bounded::channel::<u32>(capacity);
    for filler in 0..capacity as u32 {
        tx.send(1000 + filler).unwrap();
    }
    let parked: Vec<_> = (0..producers)
        .map(|id| {
            let tx = tx.clone();
            go!(move || match tx.send(id) {
                Ok(()) => None,
                Err(SendError(item)) => Some(item), // the item comes back
            })
        })
        .collect();
    drop(rx); // the buffer's two items are dropped with it
    let mut handed_back: Vec<u32> = parked
        .into_iter()
        .filter_map(|p| p.join().unwrap())
        .collect();
    handed_back.sort_unstable();
    handed_back
}
// ANCHOR_END: consumer_leaves

// ANCHOR: producers_leave
/// `producers` each send `items` and return; `consumers` share the receiver
/// and loop until it ends. Returns how many items each consumer received.
fn producers_leave(producers: usize, items: usize, consumers: usize) -> Vec<usize> {
    let (tx, rx) = bounded::channel::<usize>(4);
    let consumers: Vec<_> = (0..consumers)
        .map(|_| {
            let rx = rx.clone();
            go!(move || rx.iter().count()) // ends when every sender is gone
        })
        .collect();
    drop(rx);
    for _ in 0..producers {
        let tx = tx.clone();
        go!(move || {
            for item in 0..items {
                tx.send(item).unwrap();
            }
        });
    }
    drop(tx); // now only the producers hold senders
    consumers.into_iter().map(|c| c.join().unwrap()).collect()
}
// ANCHOR_END: producers_leave

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// Run `f` on a coroutine; fail the test if it has not returned in 10 s:
    /// a producer or consumer left parked shows up here, not as a hang.
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done_tx, done_rx) = may::sync::mpsc::channel();
        go!(move || {
            let _ = done_tx.send(f());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a producer or consumer stayed parked")
    }

    #[test]
    fn dropping_the_receiver_fails_every_parked_send_and_returns_its_item() {
        configure_for_tests();
        for _ in 0..20 {
            let handed_back = within_10s(|| consumer_leaves(2, 6));
            assert_eq!(handed_back, (0..6).collect::<Vec<u32>>());
        }
    }

    #[test]
    fn dropping_every_sender_ends_every_consumer_after_the_last_item() {
        configure_for_tests();
        for _ in 0..20 {
            let per_consumer = within_10s(|| producers_leave(3, 50, 4));
            assert_eq!(per_consumer.len(), 4);
            assert_eq!(per_consumer.iter().sum::<usize>(), 150);
        }
    }
}
