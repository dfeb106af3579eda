//! The cap on open connections, shared by every listener of one server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

// ANCHOR: slots
/// Connection slots shared by every listener of one server, so one cap
/// (`--max-clients`) bounds plain, TLS and WebSocket connections together.
/// A clone is the same slots.
#[derive(Clone, Debug)]
pub struct Slots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    in_use: AtomicUsize,
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Permit {
    slots: Slots,
}

impl Slots {
    /// At most `max` connections open at once (0 refuses every one).
    pub fn new(max: usize) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                max,
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    /// How many slots are taken now.
    pub fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::SeqCst)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Take a slot if one is free. A compare-and-swap loop, not a lock:
    /// several accept loops take slots at once and none may overshoot.
    pub(crate) fn try_take(&self) -> Option<Permit> {
        let taken = self
            .inner
            .in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.inner.max).then_some(n + 1)
            });
        taken.ok().map(|_| Permit {
            slots: self.clone(),
        })
    }
}
// ANCHOR_END: slots

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.inner.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}
