//! Pitfall: a zero or few-microsecond `may::coroutine::sleep` in coroutines
//! that also park on a channel. With may 0.3.51 this corrupts the heap: the
//! process aborts or segfaults, in debug and release builds alike; the chapter
//! shows how often. `may_patterns::pace::Pacer` never sleeps less than 1 ms.
//!
//! Run it: `cargo run --example pitfall_short_sleep` (1 ms sleeps), or
//! `cargo run --example pitfall_short_sleep -- 0` to sleep 0 µs (crashes).

use std::time::Duration;

use may::go;
use may_patterns::bounded;
use may_patterns::runtime::{configure_once, Settings};

const ROUNDS: u64 = 100;

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let sleep_us: u64 = match std::env::args().nth(1) {
        None => 1000,
        Some(arg) => arg
            .parse()
            .expect("the argument is a sleep in microseconds"),
    };
    let (sent, received) = stress(ROUNDS, Duration::from_micros(sleep_us));
    println!("{ROUNDS} rounds, sleeps of {sleep_us} µs: sent {sent}, received {received}");
}

// ANCHOR: stress
/// `rounds` times: a random number of producers push a random number of
/// items into a small buffer; producers and the consumer pause at random
/// (a yield, or a sleep of `nap`), so they keep parking on the channel
/// and waking from timers. Returns (items sent, items received).
fn stress(rounds: u64, nap: Duration) -> (usize, usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut sent, mut received) = (0, 0);
    for _ in 0..rounds {
        let (tx, rx) = bounded::channel::<usize>(rng.usize(1..=8));
        let producers: Vec<_> = (0..rng.usize(1..=8))
            .map(|_| {
                let tx = tx.clone();
                let mut rng = fastrand::Rng::with_seed(rng.u64(..));
                go!(move || {
                    let items = rng.usize(0..=60);
                    for n in 0..items {
                        tx.send(n).unwrap(); // parks while the buffer is full
                        pause(&mut rng, nap);
                    }
                    items
                })
            })
            .collect();
        drop(tx);
        let mut consumer_rng = fastrand::Rng::with_seed(rng.u64(..));
        let consumer = go!(move || {
            let mut count = 0;
            for _ in rx.iter() {
                count += 1;
                pause(&mut consumer_rng, nap);
            }
            count
        });
        sent += producers
            .into_iter()
            .map(|p| p.join().unwrap())
            .sum::<usize>();
        received += consumer.join().unwrap();
    }
    (sent, received)
}

/// Nothing, a yield, or a sleep of up to `nap`.
fn pause(rng: &mut fastrand::Rng, nap: Duration) {
    match rng.u8(0..4) {
        0 => may::coroutine::yield_now(),
        1 => may::coroutine::sleep(nap),
        _ => {}
    }
}
// ANCHOR_END: stress

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn with_millisecond_sleeps_every_item_arrives() {
        configure_for_tests();
        let (sent, received) = stress(5, Duration::from_millis(1));
        assert!(sent > 0);
        assert_eq!(sent, received);
    }
}
