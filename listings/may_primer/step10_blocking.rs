//! Step 10: blocking work off the workers. Four coroutines each make a
//! 200 ms blocking call, first on the coroutine itself, then through a
//! `may_patterns::blocking::BlockingPool`, while a fifth coroutine answers
//! pings; the worst reply shows whether the only worker stayed free.
//!
//! Run it: `cargo run --example step10_blocking`

use std::time::{Duration, Instant};

use may::go;
use may::sync::mpsc;
use may_patterns::blocking::BlockingPool;

const CALLERS: usize = 4;
const CALL: Duration = Duration::from_millis(200);

// ANCHOR: call
/// Stands in for a call that blocks its OS thread for `CALL`: a read from a
/// slow disk, a DNS lookup, a query through a C library.
fn blocking_call() -> usize {
    std::thread::sleep(CALL);
    CALL.as_millis() as usize
}
// ANCHOR_END: call

fn main() {
    may::config().set_workers(1); // one worker makes the effect plain
    may::config().set_worker_pin(false);

    // ANCHOR: compare
    let on_coroutine = ping_while(blocking_call);
    let pool = BlockingPool::new(CALLERS, 16).expect("start the pool's threads");
    let through_pool = ping_while(move || pool.run(blocking_call).expect("the call ran"));
    // ANCHOR_END: compare
    println!("{CALLERS} coroutines each make a {CALL:?} blocking call on a 1-worker runtime:");
    for (how, run) in [
        ("on the coroutine", on_coroutine),
        ("through a 4-thread BlockingPool", through_pool),
    ] {
        println!(
            "  {how}: worst ping reply {:?}, all calls done after {:?}",
            run.worst_reply, run.calls_done
        );
    }
}

/// What [`ping_while`] measured.
struct Run {
    /// The slowest reply of a coroutine answering a ping every 5 ms.
    worst_reply: Duration,
    /// When the last of the callers had its result.
    calls_done: Duration,
}

// ANCHOR: ping_while
/// Start `CALLERS` coroutines that each run `call` once, ping a responder
/// coroutine from this (plain) thread every 5 ms until they are done, and
/// report the slowest reply.
fn ping_while(call: impl Fn() -> usize + Send + Sync + 'static) -> Run {
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (pong_tx, pong_rx) = mpsc::channel::<()>();
    let responder = go!(move || ping_rx.iter().for_each(|()| pong_tx.send(()).unwrap()));

    let started = Instant::now();
    let call = std::sync::Arc::new(call);
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..CALLERS {
        let (call, done) = (call.clone(), done_tx.clone());
        go!(move || done.send(call()).unwrap());
    }
    let (mut worst_reply, mut finished) = (Duration::ZERO, 0);
    while finished < CALLERS {
        let sent = Instant::now();
        ping_tx.send(()).unwrap();
        pong_rx.recv().unwrap();
        worst_reply = worst_reply.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(5)); // main's own thread
        finished += done_rx.try_iter().count();
    }
    let calls_done = started.elapsed();
    drop(ping_tx);
    responder.join().unwrap();
    Run {
        worst_reply,
        calls_done,
    }
}
// ANCHOR_END: ping_while

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::{configure_once, Settings};

    #[test]
    fn the_pool_keeps_the_only_worker_free_and_runs_the_calls_side_by_side() {
        configure_once(Settings {
            workers: 1,
            stack_words: 0x1000,
        });
        let on_coroutine = ping_while(blocking_call);
        let pool = BlockingPool::new(CALLERS, 16).unwrap();
        let through_pool = ping_while(move || pool.run(blocking_call).unwrap());
        // On the worker, the four calls run one after another and a ping
        // can wait for a whole call; through the pool they overlap and the
        // worker answers at once. Wide margins for a loaded machine.
        assert!(
            on_coroutine.worst_reply >= CALL / 2,
            "{:?}",
            on_coroutine.worst_reply
        );
        assert!(on_coroutine.calls_done >= CALL * CALLERS as u32);
        assert!(
            through_pool.worst_reply < CALL / 2,
            "{:?}",
            through_pool.worst_reply
        );
        assert!(
            through_pool.calls_done < CALL * 3,
            "{:?}",
            through_pool.calls_done
        );
    }
}
