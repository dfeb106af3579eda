//! Workers with nothing to do park instead of spinning, and are woken by new
//! work or by the job they wait for finishing.
//!
//! A worker announces that it goes to sleep, then looks once more for a
//! reason to stay awake; a waker first makes its reason visible (pushes a
//! job, marks one done), then looks for a sleeper. Both sides put a SeqCst
//! fence between the two steps, so at least one of them sees the other: no
//! wake-up is lost, and a worker that finds work on its last look does not
//! park at all.
//!
//! The pool's workers are OS threads, so they park as threads do
//! (`std::thread::park`, with its wake-up token: an `unpark` that comes
//! before the `park` makes it return at once).

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::{self, Thread};

pub(super) struct Sleep {
    slots: Vec<Slot>,
    /// How many workers are asleep: pushing a job reads only this, one
    /// atomic load, when nobody sleeps.
    sleeping: AtomicUsize,
}

struct Slot {
    asleep: AtomicBool,
    /// Set by the worker's thread before it can first fall asleep.
    thread: OnceLock<Thread>,
}

impl Sleep {
    pub(super) fn new(workers: usize) -> Sleep {
        Sleep {
            slots: (0..workers)
                .map(|_| Slot {
                    asleep: AtomicBool::new(false),
                    thread: OnceLock::new(),
                })
                .collect(),
            sleeping: AtomicUsize::new(0),
        }
    }

    /// Called by worker `index` on its own thread, first thing.
    pub(super) fn register(&self, index: usize) {
        let _ = self.slots[index].thread.set(thread::current());
    }

    /// Park worker `index` until woken, unless `stay_awake` (checked after
    /// the announcement) finds something to do; `parking` runs just before
    /// the thread parks.
    pub(super) fn sleep(
        &self,
        index: usize,
        stay_awake: impl Fn() -> bool,
        parking: impl FnOnce(),
    ) {
        let slot = &self.slots[index];
        slot.asleep.store(true, Ordering::SeqCst);
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if stay_awake() {
            // Unless a waker got here first and already counted us awake.
            if slot.asleep.swap(false, Ordering::SeqCst) {
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        }
        parking();
        while slot.asleep.load(Ordering::SeqCst) {
            thread::park();
        }
    }

    /// Wake worker `index` if it sleeps (the job it waits for is done).
    pub(super) fn wake(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        if slot.asleep.load(Ordering::SeqCst) && slot.asleep.swap(false, Ordering::SeqCst) {
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
            slot.thread
                .get()
                .expect("registered before sleeping")
                .unpark();
            return true;
        }
        false
    }

    /// How many workers are parked, or announced they are about to.
    pub(super) fn asleep(&self) -> usize {
        self.sleeping.load(Ordering::SeqCst)
    }

    /// A job was just queued: wake one sleeper, if there is one, to take it.
    pub(super) fn new_work(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) == 0 {
            return;
        }
        for index in 0..self.slots.len() {
            if self.wake(index) {
                return;
            }
        }
    }

    /// The pool is ending: wake everyone.
    pub(super) fn wake_all(&self) {
        fence(Ordering::SeqCst);
        for index in 0..self.slots.len() {
            self.wake(index);
        }
    }
}
