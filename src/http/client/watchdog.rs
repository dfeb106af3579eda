//! The read and total deadlines of one exchange, kept by the shared
//! [`alarm`](crate::alarm) thread instead of may's timers.
//!
//! may 0.3.51 arms a socket timeout before it finishes registering the
//! wait, and a timer that fires in between panics its event loop ("Node
//! value is None"; the alarm module cites `epoll.rs:238-249`). A crawler
//! reads thousands of times a second, so it would arm thousands of such
//! timers. Instead, each exchange has one watchdog: an alarm call due at
//! the earlier of the total deadline and "last byte + read timeout". When
//! it runs and bytes have arrived since, it re-arms itself for the new
//! "last byte + read timeout"; otherwise it shuts the socket down, which
//! ends any parked read or write at once, and records which deadline it
//! was, so the error is reported as a timeout and not as the peer closing.
//! A steady download costs one alarm entry per `read_timeout`, not one per
//! read.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::error::TimeoutPhase;
use crate::alarm::{self, Call};

/// When a connection last received bytes, shared by the connection (which
/// touches it on every read) and the watchdog of its current exchange.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Nanoseconds since [`epoch`].
    last_nanos: AtomicU64,
}

/// A fixed instant that progress is counted from, so it fits an atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Progress {
    /// Record that bytes arrived now.
    pub(super) fn touch(&self) {
        let nanos = epoch().elapsed().as_nanos();
        self.last_nanos
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        epoch() + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed))
    }
}

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const FIRED_READ: u8 = 2;
const FIRED_TOTAL: u8 = 3;

struct Shared {
    /// A duplicate of the connection's descriptor: it keeps the socket
    /// open (and its number unused by anyone else) while an alarm call
    /// may still shut it down.
    socket: std::net::TcpStream,
    progress: Arc<Progress>,
    read_timeout: Duration,
    deadline: Instant,
    /// RUNNING until either the exchange finishes or the watchdog fires:
    /// one compare-and-swap decides which, so a timeout is never lost and
    /// never reported for an exchange that had finished.
    state: AtomicU8,
    /// The alarm call due next, dropped (cancelled) when the exchange
    /// finishes. Held only to store or take it, never across a wait.
    pending: Mutex<Option<Call>>,
}

// ANCHOR: watchdog
/// Watches one exchange on one socket until [`Watchdog::finish`].
pub(super) struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Start watching `socket`: no byte for `read_timeout` (from now on),
    /// or `deadline` reached, shuts it down.
    pub(super) fn start(
        socket: &impl AsRawFd,
        progress: Arc<Progress>,
        read_timeout: Duration,
        deadline: Instant,
    ) -> io::Result<Watchdog> {
        // Safety: `socket` is borrowed, so its descriptor is open while we
        // duplicate it; the duplicate is ours to close.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) }.try_clone_to_owned()?;
        progress.touch();
        let shared = Arc::new(Shared {
            socket: std::net::TcpStream::from(fd),
            progress,
            read_timeout,
            deadline,
            state: AtomicU8::new(RUNNING),
            pending: Mutex::new(None),
        });
        arm(&shared, next_due(&shared));
        Ok(Watchdog { shared })
    }

    /// Stop watching. `Some(phase)` if a deadline passed first (the socket
    /// is then shut down, whatever the exchange returned).
    pub(super) fn finish(self) -> Option<TimeoutPhase> {
        self.stop()
    }

    fn stop(&self) -> Option<TimeoutPhase> {
        let shared = &self.shared;
        let won =
            shared
                .state
                .compare_exchange(RUNNING, FINISHED, Ordering::SeqCst, Ordering::SeqCst);
        drop(shared.pending.lock().unwrap().take()); // cancel the call due next
        match won {
            Err(FIRED_READ) => Some(TimeoutPhase::Read),
            Err(FIRED_TOTAL) => Some(TimeoutPhase::Total),
            _ => None,
        }
    }
}

/// A watchdog dropped on an early return stops too, so its alarm entry and
/// its duplicate descriptor go now, not a `read_timeout` later.
impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The earlier of the total deadline and the read deadline after the last
/// byte.
fn next_due(shared: &Shared) -> Instant {
    shared
        .deadline
        .min(shared.progress.last() + shared.read_timeout)
}

/// On the alarm thread, at or after the time it was due.
fn check(shared: Arc<Shared>) {
    let now = Instant::now();
    let fired = if now >= shared.deadline {
        FIRED_TOTAL
    } else if now >= shared.progress.last() + shared.read_timeout {
        FIRED_READ
    } else {
        // Bytes came since: watch the next stretch.
        return arm(&shared, next_due(&shared));
    };
    let won = shared
        .state
        .compare_exchange(RUNNING, fired, Ordering::SeqCst, Ordering::SeqCst);
    if won.is_ok() {
        // Both directions: a request stuck in a full send buffer ends too.
        let _ = shared.socket.shutdown(Shutdown::Both);
    }
}
// ANCHOR_END: watchdog

/// Put a call to [`check`] on the alarm at `at`, unless the exchange has
/// finished (then nobody will cancel it, so it must not be made).
fn arm(shared: &Arc<Shared>, at: Instant) {
    let mut pending = shared.pending.lock().unwrap();
    if shared.state.load(Ordering::SeqCst) != RUNNING {
        return;
    }
    let watched = shared.clone();
    // Replacing the call that is running now: cancelling it is a no-op.
    *pending = Some(alarm::shared().call_at(at, move || check(watched)));
}
