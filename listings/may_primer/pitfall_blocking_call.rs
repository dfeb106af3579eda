//! Pitfall: a blocking std call freezes its worker thread; with one worker,
//! that is every coroutine in the process.
//!
//! Run it: `cargo run --example pitfall_blocking_call`

use std::time::{Duration, Instant};

use may::coroutine;
use may::go;
use may::sync::mpsc;

fn main() {
    // One worker makes the effect total. With more, one blocked worker still
    // freezes its own sockets and wake-ups: see pitfall_one_blocked_worker.
    may::config().set_workers(1);
    may::config().set_worker_pin(false);

    // ANCHOR: compare
    let blocked = slowest_reply_next_to(|| std::thread::sleep(Duration::from_millis(300)));
    let parked = slowest_reply_next_to(|| coroutine::sleep(Duration::from_millis(300)));
    println!("slowest reply from a coroutine answering a ping every 10ms:");
    println!("  while a coroutine ran std::thread::sleep(300ms): {blocked:?}");
    println!("  while a coroutine ran may::coroutine::sleep(300ms): {parked:?}");
    // ANCHOR_END: compare
}

// ANCHOR: slowest_reply
/// A "responder" coroutine answers pings; a second coroutine runs `nap`.
/// This thread pings every 10 ms for 400 ms and returns the slowest reply.
fn slowest_reply_next_to(nap: fn()) -> Duration {
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (pong_tx, pong_rx) = mpsc::channel::<()>();
    let responder = go!(move || {
        for () in ping_rx.iter() {
            pong_tx.send(()).unwrap();
        }
    });
    let napper = go!(nap);

    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let sent = Instant::now();
        ping_tx.send(()).unwrap();
        pong_rx.recv().unwrap();
        slowest = slowest.max(sent.elapsed());
        // This loop runs on main's own OS thread, not on a may worker, so a
        // std sleep blocks nobody else here.
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(ping_tx);
    napper.join().unwrap();
    responder.join().unwrap();
    slowest
}
// ANCHOR_END: slowest_reply

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::{configure_once, Settings};

    #[test]
    fn a_std_sleep_stalls_its_neighbours_and_a_may_sleep_does_not() {
        configure_once(Settings {
            workers: 1,
            stack_words: 0x1000,
        });
        let blocked = slowest_reply_next_to(|| std::thread::sleep(Duration::from_millis(300)));
        let parked = slowest_reply_next_to(|| coroutine::sleep(Duration::from_millis(300)));
        // The only worker sleeps for 300 ms, so a ping sent early in the nap
        // waits most of it; with may's sleep the worker stays free. The bounds
        // leave wide margins for a loaded machine.
        assert!(
            blocked >= Duration::from_millis(200),
            "blocked: {blocked:?}"
        );
        assert!(parked < Duration::from_millis(150), "parked: {parked:?}");
    }
}
