//! Waiting for the limiter: a reservation made under the shard's lock, and
//! the coroutine's sleep until it comes, after the lock is released.

use crate::clock::Clock;
use crate::timeout::for_may;
use std::fmt;
use std::time::Duration;

/// Why [`Limiter::acquire`](super::Limiter::acquire) or
/// [`Limiter::reserve`](super::Limiter::reserve) gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireError {
    /// The request would not be admitted within the deadline; it would be
    /// after `retry_after` (counted from the call, with every earlier
    /// waiter of the key served first). Nothing was consumed.
    Deadline { retry_after: Duration },
    /// The algorithm will never admit this cost (it is more than the burst,
    /// or than a window's rate).
    Exceeds,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Deadline { retry_after } => write!(
                f,
                "would not be admitted before the deadline (it would be after {retry_after:?})"
            ),
            AcquireError::Exceeds => {
                f.write_str("the cost is more than the quota ever admits at once")
            }
        }
    }
}

impl std::error::Error for AcquireError {}

// ANCHOR: reservation
/// Units already consumed for a caller that may go at [`at`](Self::at), a
/// time of the limiter's clock. Made by
/// [`Limiter::reserve`](super::Limiter::reserve) under the shard's lock;
/// [`wait`](Self::wait) sleeps until then with no lock held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the units are consumed: wait for the reservation, or drop it on purpose"]
pub struct Reservation {
    at: Duration,
}

impl Reservation {
    pub(super) fn new(at: Duration) -> Self {
        Reservation { at }
    }

    /// The clock time at which the caller may go.
    pub fn at(&self) -> Duration {
        self.at
    }

    /// Park the calling coroutine until `clock` reads at least
    /// [`at`](Self::at). Each sleep is the time still to go, rounded up to
    /// whole milliseconds by [`for_may`] (so a clock that does not move is
    /// re-read once a millisecond, not in a spin), then the clock is read
    /// again: with a real clock that is one sleep, returning at most about
    /// 1 ms late; with a [`ManualClock`](crate::clock::ManualClock) the
    /// caller goes only once a test has moved the clock that far, so a test
    /// decides who goes when. The sleep is kept by the process's shared
    /// [`alarm`](crate::alarm::shared), not by a may timer: may 0.3.51's
    /// sleep can race its timer thread under load (the book's pitfalls
    /// appendix). Outside a coroutine it parks the thread.
    pub fn wait<C: Clock>(self, clock: &C) {
        loop {
            let now = clock.now();
            if now >= self.at {
                return;
            }
            crate::alarm::shared().sleep(for_may(self.at - now));
        }
    }
}
// ANCHOR_END: reservation
