//! A stop signal shared by coroutines and OS threads.
//!
//! Servers in this book have the shape `run(listener, shutdown)`: `main` hands
//! them a [`Shutdown`] it triggers on Ctrl-C, and tests trigger it directly to
//! stop a server they started on an ephemeral port. It wraps may's `SyncFlag`,
//! so waiting on it parks a coroutine (not its worker thread) and blocks a plain
//! thread, whichever calls it.

use std::sync::Arc;
use std::time::Duration;

use may::sync::SyncFlag;

/// A one-way, cloneable stop signal: once triggered it stays triggered.
#[derive(Clone, Default)]
pub struct Shutdown {
    flag: Arc<SyncFlag>,
}

impl Shutdown {
    /// A signal that has not been triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everything holding a clone of this signal to stop. Idempotent.
    pub fn trigger(&self) {
        self.flag.fire();
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.flag.is_fired()
    }

    /// Wait until the signal is triggered.
    pub fn wait(&self) {
        self.flag.wait();
    }

    /// Wait at most `timeout`; returns whether the signal was triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.flag.wait_timeout(timeout)
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
}
