//! A bounded channel for may: when the buffer is full, `send` parks the
//! calling coroutine (or thread) until the receiver takes an item.
//!
//! May has unbounded channels but no `sync_channel`, no `try_send` and no
//! `Full` error. Without a bound, a producer that is faster than its consumer
//! grows the queue until memory runs out. This channel is may's `mpmc`
//! channel plus a [`Semphore`] that holds one permit per free slot:
//!
//! - `send` takes a permit (parking while there is none), then sends;
//! - `recv` receives, then gives the permit back;
//! - dropping the last [`Receiver`] marks the channel closed and posts one permit:
//!   a blocked sender wakes, sees the channel closed, passes the permit on to
//!   the next blocked sender, and returns its item in the error. So no sender
//!   stays parked after the receiver is gone;
//! - dropping the last [`Sender`] queues an end marker behind the last item;
//!   a receiver that takes it puts it back for the next one and reports the
//!   end. (may 0.3.51's own `mpmc` disconnect can leave a receiver that is
//!   about to park asleep for good: see the book's Pitfalls reference,
//!   "Known may 0.3.51 bugs". The marker does not depend on it; see the
//!   regression test.)
//!
//! Both halves can be cloned (many producers, many consumers), and both work
//! from coroutines and from OS threads: may's semaphore and channel park
//! whichever kind of task calls them.
//!
//! The timed calls round a coroutine's timeout up to a whole millisecond
//! ([`crate::timeout::for_may`]): may 0.3.51's own `recv_timeout(500µs)` in a
//! coroutine never times out. A zero timeout only takes what is ready, as
//! std's does.
//!
//! ```
//! use may_patterns::bounded::{self, TrySendError};
//!
//! let (tx, rx) = bounded::channel(2);
//! tx.send(1).unwrap();
//! tx.send(2).unwrap();
//! // Full: the item comes back instead of being queued or dropped.
//! assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
//! assert_eq!(rx.recv(), Ok(1));
//! tx.try_send(3).unwrap(); // a slot is free again
//! drop(tx);
//! assert_eq!(rx.iter().collect::<Vec<_>>(), vec![2, 3]);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::sync::{mpmc, Semphore};

pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError};

// ANCHOR: shared
/// What travels through the underlying channel.
enum Message<T> {
    Item(T),
    /// Every sender is gone. Receivers pass it on, so all of them see it.
    End,
}

/// State both halves share.
struct Shared {
    /// One permit per free slot in the buffer.
    free_slots: Semphore,
    capacity: usize,
    /// Live `Sender` clones; the last one to drop queues [`Message::End`].
    senders: AtomicUsize,
    /// Live `Receiver` clones; the channel closes when the last one drops.
    receivers: AtomicUsize,
    /// Set when the last receiver is dropped.
    closed: AtomicBool,
    /// Items sent and not yet received. Counted separately from the permits
    /// so the depth a program reports is the real one, not the semaphore's
    /// own bookkeeping.
    queued: AtomicUsize,
    /// The highest `queued` ever seen.
    high_water: AtomicUsize,
}

// ANCHOR_END: shared

/// The timeout to hand may for `timeout`, or `None` for "only what is ready
/// now". On a coroutine it is rounded up to whole milliseconds (see the
/// module comment); a thread parks on a condition variable, which takes it
/// as it is.
fn may_timeout(timeout: Duration) -> Option<Duration> {
    if timeout.is_zero() {
        None
    } else if may::coroutine::is_coroutine() {
        Some(crate::timeout::for_may(timeout))
    } else {
        Some(timeout)
    }
}

impl Shared {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Hand a slot back: to the next sender, or to the pool.
    fn release_slot(&self) {
        self.free_slots.post();
    }
}

/// Create a channel that holds at most `capacity` items.
///
/// # Panics
///
/// If `capacity` is 0: a zero-capacity (rendezvous) channel needs the
/// receiver to be waiting at the moment of the send, which a permit count
/// cannot express.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        capacity > 0,
        "a bounded channel needs a capacity of at least 1"
    );
    let (tx, rx) = mpmc::channel();
    let shared = Arc::new(Shared {
        free_slots: Semphore::new(capacity),
        capacity,
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
        closed: AtomicBool::new(false),
        queued: AtomicUsize::new(0),
        high_water: AtomicUsize::new(0),
    });
    (
        Sender {
            tx: tx.clone(),
            shared: Arc::clone(&shared),
        },
        Receiver {
            rx,
            relay: tx,
            shared,
        },
    )
}

/// The sending half. Clone it for more producers.
pub struct Sender<T> {
    tx: mpmc::Sender<Message<T>>,
    shared: Arc<Shared>,
}

/// The receiving half. Clone it for more consumers: each item goes to exactly
/// one of them.
pub struct Receiver<T> {
    rx: mpmc::Receiver<Message<T>>,
    /// Puts the end marker back for the other receivers.
    relay: mpmc::Sender<Message<T>>,
    shared: Arc<Shared>,
}

/// Why [`Sender::try_send`] did not send. The item comes back either way.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The buffer is full right now.
    Full(T),
    /// Every receiver is gone; nothing will ever be received.
    Disconnected(T),
}

/// Why [`Sender::send_timeout`] did not send. The item comes back either way.
#[derive(PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// The buffer stayed full for the whole timeout.
    Timeout(T),
    /// Every receiver is gone; nothing will ever be received.
    Disconnected(T),
}

impl<T> Sender<T> {
    // ANCHOR: send
    /// Send `item`, parking the caller while the buffer is full.
    ///
    /// Fails, handing `item` back, if every receiver has been dropped (also
    /// when the last one is dropped while this call is parked).
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.shared.free_slots.wait();
        self.push(item)
    }

    // ANCHOR_END: send

    /// Send `item` only if there is room now; never parks.
    ///
    /// This is the load-shedding send: on `Full` the caller decides what to
    /// do with the item (drop it and count it, answer "busy", try later).
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if !self.shared.free_slots.try_wait() {
            return Err(if self.shared.is_closed() {
                TrySendError::Disconnected(item)
            } else {
                TrySendError::Full(item)
            });
        }
        self.push(item)
            .map_err(|SendError(item)| TrySendError::Disconnected(item))
    }

    /// Send `item`, parking at most `timeout` for room.
    pub fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        let got_slot = match may_timeout(timeout) {
            Some(timeout) => self.shared.free_slots.wait_timeout(timeout),
            None => self.shared.free_slots.try_wait(),
        };
        if !got_slot {
            return Err(if self.shared.is_closed() {
                SendTimeoutError::Disconnected(item)
            } else {
                SendTimeoutError::Timeout(item)
            });
        }
        self.push(item)
            .map_err(|SendError(item)| SendTimeoutError::Disconnected(item))
    }

    // ANCHOR: push
    /// Put `item` in the buffer; the caller holds a free-slot permit.
    fn push(&self, item: T) -> Result<(), SendError<T>> {
        let shared = &*self.shared;
        if shared.is_closed() {
            // Pass the permit on, so the next parked sender wakes and fails too.
            shared.release_slot();
            return Err(SendError(item));
        }
        let depth = shared.queued.fetch_add(1, Ordering::SeqCst) + 1;
        shared.high_water.fetch_max(depth, Ordering::SeqCst);
        let sent = self.tx.send(Message::Item(item));
        sent.map_err(|SendError(message)| match message {
            Message::Item(item) => SendError(item),
            Message::End => unreachable!("only items are pushed"),
        })
        .inspect_err(|_| {
            // The last receiver went away between the check and the send.
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            shared.release_slot();
        })
    }
    // ANCHOR_END: push

    /// The most items the buffer holds.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Items sent and not yet received, right now.
    pub fn len(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Whether the buffer is empty right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        Sender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last sender: every item is already queued, so the marker
            // lands behind them. It fails only if every receiver is gone.
            let _ = self.tx.send(Message::End);
        }
    }
}

impl<T> Receiver<T> {
    /// Wait for the next item. Fails once every sender is dropped and the
    /// buffer is empty.
    pub fn recv(&self) -> Result<T, RecvError> {
        let message = self.rx.recv()?;
        self.unwrap(message).ok_or(RecvError)
    }

    /// Take the next item if one is waiting; never parks.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let message = self.rx.try_recv()?;
        self.unwrap(message).ok_or(TryRecvError::Disconnected)
    }

    /// Wait at most `timeout` for the next item.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let message = match may_timeout(timeout) {
            Some(timeout) => self.rx.recv_timeout(timeout)?,
            None => self.rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })?,
        };
        self.unwrap(message).ok_or(RecvTimeoutError::Disconnected)
    }

    /// An item, or `None` at the end (after putting the marker back).
    fn unwrap(&self, message: Message<T>) -> Option<T> {
        match message {
            Message::Item(item) => Some(self.taken(item)),
            Message::End => {
                let _ = self.relay.send(Message::End); // we are a receiver: it succeeds
                None
            }
        }
    }

    // ANCHOR: taken
    /// An item left the buffer: free its slot for the next sender.
    fn taken(&self, item: T) -> T {
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        self.shared.release_slot();
        item
    }

    // ANCHOR_END: taken

    /// Iterate until every sender is dropped and the buffer is drained.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// The most items the buffer holds.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Items sent and not yet received, right now.
    pub fn len(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Whether the buffer is empty right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The deepest the buffer has been since the channel was created; never
    /// more than [`capacity`](Self::capacity).
    pub fn high_water(&self) -> usize {
        self.shared.high_water.load(Ordering::SeqCst)
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        Receiver {
            rx: self.rx.clone(),
            relay: self.relay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

// ANCHOR: drop
impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.shared.receivers.fetch_sub(1, Ordering::SeqCst) != 1 {
            return; // other consumers are still receiving
        }
        // Close first, then wake one parked sender: it sees `closed`, passes
        // the permit on and fails, and so does every sender after it.
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.release_slot();
    }
}

// ANCHOR_END: drop

/// Blocking iterator over received items; see [`Receiver::iter`].
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Owning iterator over received items.
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

// Like std's channel errors, these print without requiring `T: Debug`.
impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("sending on a full channel"),
            TrySendError::Disconnected(_) => f.write_str("sending on a closed channel"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            SendTimeoutError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("timed out waiting on a full channel"),
            SendTimeoutError::Disconnected(_) => f.write_str("sending on a closed channel"),
        }
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

#[cfg(test)]
mod tests;
