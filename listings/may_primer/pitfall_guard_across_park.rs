//! Pitfall: a std `MutexGuard` held across a may park. The coroutine can
//! resume on another OS thread, so the guard is unlocked on a thread that did
//! not lock it; and a waiter blocks its whole worker. With one worker that is
//! a deadlock whenever the holder waits for something only that worker runs.
//!
//! Run it: `cargo run --example pitfall_guard_across_park`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use may::coroutine;
use may::go;
use may::sync::mpsc;

const HOLD: Duration = Duration::from_millis(50);
const GIVE_UP: Duration = Duration::from_millis(300);

fn main() {
    // One worker: the only thread that can run a coroutine woken by another
    // coroutine, so a blocked worker is everything.
    may::config().set_workers(1);
    may::config().set_worker_pin(false);

    let (locked_on, unlocked_on) = guard_across_sleep();
    let moved = if locked_on == unlocked_on {
        "the same"
    } else {
        "another"
    };
    println!("a std MutexGuard held across may::coroutine::sleep({HOLD:?}):");
    println!("  locked on a worker, unlocked on {moved} OS thread");
    let waited = waiter_next_to_sleeping_holder();
    println!("a second coroutine calls lock() while the holder sleeps, one worker:");
    println!("  it got the lock after {waited:?}: the timer thread ran the holder");
    let r = holder_waits_for_a_message();
    println!("the holder waits for a message from a third coroutine instead:");
    println!(
        "  recv_timeout({GIVE_UP:?}) timed out: {}; the sender ran only after that: {}",
        r.timed_out, r.sender_ran_after_timeout
    );
}

// ANCHOR: guard_across_sleep
/// The thread that locked a std mutex, and the thread that unlocked it.
fn guard_across_sleep() -> (ThreadId, ThreadId) {
    let lock = Mutex::new(0);
    go!(move || {
        let mut guard = lock.lock().unwrap();
        let locked_on = thread::current().id();
        // A may park while holding a std guard: the coroutine resumes on
        // the timer thread (scheduler.rs:55), and so does the guard.
        coroutine::sleep(HOLD);
        *guard += 1;
        let unlocked_on = thread::current().id();
        drop(guard);
        (locked_on, unlocked_on)
    })
    .join()
    .unwrap()
}
// ANCHOR_END: guard_across_sleep

/// How long a second coroutine's `lock()` blocks (and its worker with it)
/// while the holder sleeps with the guard.
fn waiter_next_to_sleeping_holder() -> Duration {
    let lock = Arc::new(Mutex::new(()));
    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let holder = go!({
        let lock = lock.clone();
        move || {
            let _guard = lock.lock().unwrap();
            locked_tx.send(()).unwrap();
            coroutine::sleep(HOLD);
        }
    });
    locked_rx.recv().unwrap();
    let waiter = go!(move || {
        let start = Instant::now();
        drop(lock.lock().unwrap());
        start.elapsed()
    });
    holder.join().unwrap();
    waiter.join().unwrap()
}

#[derive(Debug)]
struct Stuck {
    timed_out: bool,
    sender_ran_after_timeout: bool,
}

// ANCHOR: holder_waits
/// The holder waits, guard held, for a message a third coroutine would send;
/// the waiter's `lock()` holds the only worker, so the sender cannot run and
/// only the holder's timeout (run on the timer thread) ends it.
fn holder_waits_for_a_message() -> Stuck {
    let lock = Arc::new(Mutex::new(()));
    let gave_up = Arc::new(AtomicBool::new(false));
    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let (msg_tx, msg_rx) = mpsc::channel::<()>();
    let holder = go!({
        let (lock, gave_up) = (lock.clone(), gave_up.clone());
        move || {
            let guard = lock.lock().unwrap();
            locked_tx.send(()).unwrap();
            let timed_out = msg_rx.recv_timeout(GIVE_UP).is_err();
            gave_up.store(true, Ordering::Release);
            drop(guard);
            timed_out
        }
    });
    locked_rx.recv().unwrap();
    // Both queued for the one worker: the waiter first, then the sender.
    let waiter = go!(move || drop(lock.lock().unwrap()));
    let sender = go!(move || {
        let _ = msg_tx.send(());
        gave_up.load(Ordering::Acquire)
    });
    let timed_out = holder.join().unwrap();
    waiter.join().unwrap();
    Stuck {
        timed_out,
        sender_ran_after_timeout: sender.join().unwrap(),
    }
}
// ANCHOR_END: holder_waits

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::{configure_once, Settings};

    /// The cases block the one worker on purpose, so they run one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_worker() -> std::sync::MutexGuard<'static, ()> {
        let s = configure_once(Settings {
            workers: 1,
            stack_words: 0x1000,
        });
        assert_eq!(s.workers, 1);
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_guard_held_across_a_sleep_is_unlocked_on_another_thread() {
        let _one = one_worker();
        let (locked_on, unlocked_on) = guard_across_sleep();
        assert_ne!(locked_on, unlocked_on);
    }

    #[test]
    fn a_sleeping_holder_is_not_a_deadlock_but_blocks_the_worker() {
        let _one = one_worker();
        let waited = waiter_next_to_sleeping_holder();
        assert!(waited >= HOLD / 2, "{waited:?}");
        assert!(waited < GIVE_UP, "{waited:?}");
    }

    #[test]
    fn a_holder_waiting_for_a_coroutine_is_a_deadlock_until_its_timeout() {
        let _one = one_worker();
        let r = holder_waits_for_a_message();
        assert!(r.timed_out, "{r:?}");
        assert!(r.sender_ran_after_timeout, "{r:?}");
    }
}
