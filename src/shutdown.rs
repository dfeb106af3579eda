//! A stop signal shared by coroutines and OS threads.
//!
//! Servers in this book have the shape `run(listener, shutdown)`: `main` hands
//! them a [`Shutdown`] it triggers on Ctrl-C, and tests trigger it directly to
//! stop a server they started on an ephemeral port. It wraps may's `SyncFlag`,
//! so waiting on it parks a coroutine (not its worker thread) and blocks a plain
//! thread, whichever calls it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use may::sync::SyncFlag;

/// A one-way, cloneable stop signal: once triggered it stays triggered.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    flag: SyncFlag,
    /// Signals made by [`Shutdown::child`], triggered with this one. A std
    /// mutex is enough: it is held for a push or a take, never across a park.
    children: Mutex<Vec<Weak<Inner>>>,
}

impl Shutdown {
    /// A signal that has not been triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everything holding a clone of this signal (or of a child of it)
    /// to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.trigger();
    }

    /// A new signal that is triggered when this one is, and can also be
    /// triggered on its own without triggering this one: a part that may
    /// end early (one accept loop of a server) waits on its child, and the
    /// part's own end triggers only the child.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        {
            let mut children = self.inner.children.lock().unwrap();
            children.retain(|c| c.strong_count() > 0); // forget ended children
            children.push(Arc::downgrade(&child.inner));
        }
        // A trigger that ran before the push did not see this child.
        if self.is_triggered() {
            child.trigger();
        }
        child
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.inner.flag.is_fired()
    }

    /// Wait until the signal is triggered.
    pub fn wait(&self) {
        self.inner.flag.wait();
    }

    /// Wait at most `timeout`; returns whether the signal was triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.flag.wait_timeout(timeout)
    }
}

impl Inner {
    fn trigger(&self) {
        // Fire first: a `child` call that pushes after the take below sees
        // the flag set and triggers its child itself.
        self.flag.fire();
        let children = std::mem::take(&mut *self.children.lock().unwrap());
        for child in children.iter().filter_map(Weak::upgrade) {
            child.trigger();
        }
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::configure_for_tests;
    use may::go;

    #[test]
    fn a_trigger_wakes_waiting_coroutines_and_threads() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));

        let in_coroutine = {
            let s = shutdown.clone();
            go!(move || s.wait_timeout(Duration::from_secs(10)))
        };
        let in_thread = {
            let s = shutdown.clone();
            std::thread::spawn(move || s.wait_timeout(Duration::from_secs(10)))
        };
        shutdown.trigger();
        assert!(
            in_coroutine.join().unwrap(),
            "the coroutine saw the trigger"
        );
        assert!(in_thread.join().unwrap(), "the thread saw the trigger");
        assert!(shutdown.is_triggered());
        shutdown.trigger(); // idempotent
        shutdown.wait(); // returns at once once triggered
    }

    #[test]
    fn a_child_follows_its_parent_but_not_the_other_way_round() {
        configure_for_tests();
        let parent = Shutdown::new();
        let (early, late) = (parent.child(), parent.child());
        let grandchild = late.child();
        early.trigger();
        assert!(early.is_triggered());
        assert!(!parent.is_triggered(), "a child's trigger stays local");
        assert!(!late.is_triggered());

        let waiting = {
            let grandchild = grandchild.clone();
            go!(move || grandchild.wait_timeout(Duration::from_secs(10)))
        };
        parent.trigger();
        assert!(late.is_triggered());
        assert!(waiting.join().unwrap(), "the grandchild woke");
        assert!(
            parent.child().is_triggered(),
            "a child of a triggered signal"
        );
    }
}
