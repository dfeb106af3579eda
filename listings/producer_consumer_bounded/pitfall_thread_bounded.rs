//! Pitfall: a std `sync_channel` or crossbeam `bounded` channel used from a
//! coroutine. When it is full, `send` blocks the *worker thread*, and every
//! coroutine queued on that worker waits with it. may_patterns::bounded parks
//! only the sending coroutine.
//!
//! Run it: `cargo run --example pitfall_thread_bounded`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::sync::mpsc;
use may_patterns::bounded;
use may_patterns::runtime::{configure_once, Settings};

/// The consumer is an OS thread that takes one item every 50 ms.
const CONSUMER_PACE: Duration = Duration::from_millis(50);

fn main() {
    // One worker, so the blocked thread is the only one there is.
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    for kind in [
        Kind::StdSyncChannel,
        Kind::CrossbeamBounded,
        Kind::MayPatternsBounded,
    ] {
        println!(
            "{kind:?}: slowest ping answer while the producer waited: {:.1?}",
            slowest_ping(kind, 6)
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    StdSyncChannel,
    CrossbeamBounded,
    MayPatternsBounded,
}

// ANCHOR: channels
type SendFn = Box<dyn Fn(u32) + Send>;
type RecvFn = Box<dyn Fn() -> Option<u32> + Send>;

/// A capacity-1 channel of the given kind, as a boxed send and receive.
fn channel(kind: Kind) -> (SendFn, RecvFn) {
    match kind {
        Kind::StdSyncChannel => {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            (
                Box::new(move |n| tx.send(n).unwrap()),
                Box::new(move || rx.recv().ok()),
            )
        }
        Kind::CrossbeamBounded => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            (
                Box::new(move |n| tx.send(n).unwrap()),
                Box::new(move || rx.recv().ok()),
            )
        }
        Kind::MayPatternsBounded => {
            let (tx, rx) = bounded::channel(1);
            (
                Box::new(move |n| tx.send(n).unwrap()),
                Box::new(move || rx.recv().ok()),
            )
        }
    }
}
// ANCHOR_END: channels

/// A producer coroutine sends `items` to a slow consumer thread while two
/// other coroutines play ping-pong every 2 ms on the same worker. Returns the
/// slowest ping's round trip.
fn slowest_ping(kind: Kind, items: u32) -> Duration {
    let (send, recv) = channel(kind);
    let consumer = std::thread::spawn(move || {
        while recv().is_some() {
            std::thread::sleep(CONSUMER_PACE); // an OS thread may sleep
        }
    });
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (pong_tx, pong_rx) = mpsc::channel::<()>();
    let echo = go!(move || ping_rx.iter().for_each(|()| pong_tx.send(()).unwrap()));
    let producing = Arc::new(AtomicBool::new(true));
    let pinger = {
        let producing = producing.clone();
        go!(move || {
            let mut slowest = Duration::ZERO;
            while producing.load(Ordering::SeqCst) {
                let sent = Instant::now();
                ping_tx.send(()).unwrap();
                pong_rx.recv().unwrap();
                slowest = slowest.max(sent.elapsed());
                may::coroutine::sleep(Duration::from_millis(2));
            }
            slowest
        })
    };
    // ANCHOR: producer
    let producer = go!(move || {
        for n in 0..items {
            send(n); // blocks the worker (std, crossbeam) or parks (bounded)
        }
    });
    // ANCHOR_END: producer
    producer.join().unwrap();
    producing.store(false, Ordering::SeqCst);
    let slowest = pinger.join().unwrap();
    echo.join().unwrap();
    consumer.join().unwrap();
    slowest
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, not three: tests run in parallel in one process, and a
    // blocked worker in one would stall the coroutines of the others.
    #[test]
    fn thread_blocking_channels_stall_other_coroutines_and_bounded_does_not() {
        configure_once(Settings {
            workers: 1,
            stack_words: 0x1000,
        });
        for kind in [Kind::StdSyncChannel, Kind::CrossbeamBounded] {
            let slowest = slowest_ping(kind, 4);
            // The producer held the only worker while the consumer slept.
            assert!(slowest >= CONSUMER_PACE / 2, "{kind:?}: {slowest:?}");
        }
        let slowest = slowest_ping(Kind::MayPatternsBounded, 4);
        assert!(slowest < CONSUMER_PACE / 2, "bounded: {slowest:?}");
    }
}
