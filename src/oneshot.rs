//! A one-shot channel: one value, sent at most once, waited for by one
//! receiver that is a coroutine or a plain OS thread.
//!
//! A may mpsc channel does the job too, but it is built for a stream: each
//! one allocates two blocks of 64 queue slots up front and zeroes their
//! flags (may_queue-0.1.24 `src/mpsc.rs:203-206`), about 3 KiB resident,
//! and the pool's job handles and the alarm's waits make one per job. This one is a small shared record, a std `Mutex` around the value,
//! a "done" flag and the parked receiver, plus may's `Blocker` for the
//! park. The lock is held only to store or take those three (no park, no
//! wake-up inside it), so it never holds up a may worker for long.
//!
//! The `Blocker` the receiver makes for its wait parks a coroutine or
//! blocks a thread, whichever calls it, and a wait without a timeout arms
//! no may timer: `Park::subscribe` adds one only for `Some(duration)`
//! (may-0.3.51 `src/park.rs:204-207`), and a thread waits on a condvar
//! with no deadline (`src/sync/blocking.rs:24-29`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use may::sync::Blocker;

/// What both sides share.
struct State<T> {
    /// The sender has sent its value or is gone: a wait returns at once.
    done: bool,
    /// The value, until the receiver takes it.
    value: Option<T>,
    /// The receiver's blocker while it waits, for the sender to wake.
    waiter: Option<Arc<Blocker>>,
}

type Shared<T> = Arc<Mutex<State<T>>>;

/// The sending side: sends once, by value; dropping it unsent ends the
/// receiver's wait with nothing.
pub(crate) struct Sender<T> {
    shared: Shared<T>,
}

/// The receiving side.
pub(crate) struct Receiver<T> {
    shared: Shared<T>,
}

/// A new channel's two sides.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        done: false,
        value: None,
        waiter: None,
    }));
    let sender = Sender {
        shared: Arc::clone(&shared),
    };
    (sender, Receiver { shared })
}

/// Nothing that can panic runs under the lock (stores, takes and a small
/// allocation), so a poisoned lock still holds a whole state.
fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Sender<T> {
    /// Hand `value` to the receiver and wake it if it waits. A receiver
    /// that is gone is not an error: the value is dropped with the state.
    pub(crate) fn send(self, value: T) {
        self.finish(Some(value));
        // Drop runs `finish(None)` next, which finds the channel done.
    }

    fn finish(&self, value: Option<T>) {
        let waiter = {
            let mut state = lock(&self.shared);
            if state.done {
                return;
            }
            state.done = true;
            state.value = value;
            state.waiter.take()
        };
        // Woken outside the lock: the receiver's first step is to take it.
        if let Some(waiter) = waiter {
            waiter.unpark();
        }
    }
}

impl<T> Drop for Sender<T> {
    /// Dropped unsent: the receiver stops waiting and gets nothing.
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl<T> Receiver<T> {
    /// Wait for the value: parks a coroutine, blocks a thread. `None` if
    /// the sender was dropped without sending.
    pub(crate) fn recv(self) -> Option<T> {
        loop {
            let blocker = {
                let mut state = lock(&self.shared);
                if state.done {
                    return state.value.take();
                }
                // Made here, by the waiter: a `Blocker` parks the kind of
                // caller (coroutine or thread) that made it.
                let blocker = Blocker::current();
                state.waiter = Some(Arc::clone(&blocker));
                blocker
            };
            // The sender wakes the blocker after setting `done`, so a wake
            // that came before the park is kept and the park returns at
            // once. A cancelled coroutine unwinds out of the park, as out
            // of any may wait. The loop looks again in any case.
            let _ = blocker.park(None);
        }
    }

    /// Whether the value was sent or the sender dropped, so that `recv`
    /// returns at once.
    pub(crate) fn is_done(&self) -> bool {
        lock(&self.shared).done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::configure_for_tests;
    use may::go;

    #[test]
    fn a_coroutine_and_a_thread_each_get_the_value_sent_before_or_after_they_wait() {
        configure_for_tests();
        // Sent before the wait: recv returns at once.
        let (tx, rx) = channel();
        tx.send(1);
        assert!(rx.is_done());
        assert_eq!(rx.recv(), Some(1));
        // Sent while a coroutine is parked on it, from a thread.
        let (tx, rx) = channel();
        let waiter = go!(move || rx.recv());
        std::thread::spawn(move || tx.send(2)).join().unwrap();
        assert_eq!(waiter.join().unwrap(), Some(2));
        // Sent while this thread is blocked on it, from a coroutine.
        let (tx, rx) = channel();
        assert!(!rx.is_done());
        let sender = go!(move || tx.send(3));
        assert_eq!(rx.recv(), Some(3));
        sender.join().unwrap();
    }

    #[test]
    fn a_dropped_sender_ends_the_wait_with_nothing() {
        configure_for_tests();
        let (tx, rx) = channel::<u32>();
        let waiter = go!(move || rx.recv());
        drop(tx);
        assert_eq!(waiter.join().unwrap(), None);
        let (tx, rx) = channel::<u32>();
        let dropper = std::thread::spawn(move || drop(tx));
        assert_eq!(rx.recv(), None);
        dropper.join().unwrap();
    }

    #[test]
    fn many_waits_each_wake_exactly_their_own_waiter() {
        configure_for_tests();
        let (senders, waiters): (Vec<_>, Vec<_>) = (0..1_000u32)
            .map(|i| {
                let (tx, rx) = channel();
                (tx, go!(move || (i, rx.recv())))
            })
            .unzip();
        // Sent from another thread, in reverse, racing the parks.
        let sending = std::thread::spawn(move || {
            for (i, tx) in senders.into_iter().enumerate().rev() {
                tx.send(i as u32);
            }
        });
        for waiter in waiters {
            let (i, got) = waiter.join().unwrap();
            assert_eq!(got, Some(i));
        }
        sending.join().unwrap();
    }
}
