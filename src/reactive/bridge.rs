//! From push to pull: a subscriber that feeds a bounded channel, and the
//! blocking [`Iterator`] on the other end, for code that wants to loop over
//! a stream (a test, `main`, a connection's coroutine).

use std::sync::{Arc, Mutex, PoisonError};

use crate::bounded;

use super::{Error, Flux, Subscriber, Subscription};

/// How many items [`Flux::collect_vec`] keeps requested ahead.
pub const COLLECT_PREFETCH: usize = 256;

impl<T: Send + 'static> Flux<T> {
    /// Subscribe, and pull the stream as an iterator of `Ok(item)`, ending
    /// with `Err(error)` if it fails (then `None`). It requests `prefetch`
    /// items at the start and another half of that each time half has been
    /// consumed, so at most `prefetch` items wait in its channel. A
    /// `prefetch` of 0 is `request(0)`: the first item is
    /// `Err(Error::NonPositiveRequest)`. Dropping the iterator cancels the
    /// stream.
    ///
    /// `next` parks a coroutine, or blocks an OS thread, until a signal comes.
    pub fn iter(&self, prefetch: usize) -> Iter<T> {
        // Room for every requested item, the subscription and the end: a
        // source that keeps to its demand never waits on this channel.
        let (tx, rx) = bounded::channel(prefetch.saturating_add(1));
        let prefetch = prefetch as u64;
        let link = Arc::new(Mutex::new(Link::Waiting));
        self.subscribe(Feed {
            tx,
            prefetch,
            link: link.clone(),
        });
        Iter {
            rx,
            link,
            refill: (prefetch - prefetch / 2).max(1),
            consumed: 0,
            done: false,
        }
    }

    /// Every item, or the error that ended the stream.
    pub fn collect_vec(&self) -> Result<Vec<T>, Error> {
        self.iter(COLLECT_PREFETCH).collect()
    }
}

/// What the feeding subscriber hands to the iterator.
enum Message<T> {
    Item(T),
    Error(Error),
    Complete,
}

/// The subscription, shared by both ends under a lock held for a store or
/// a take only: whichever end comes second sees what the first did, so an
/// iterator dropped at any moment cancels the stream (through the channel
/// it could be dropped between the subscription's send and its receipt,
/// and the source would wait for demand for ever).
enum Link {
    /// No subscription yet, and the iterator is still there.
    Waiting,
    Subscribed(Subscription),
    /// The iterator is gone: cancel whatever subscription comes.
    Dropped,
}

fn lock(link: &Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    link.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The subscriber side: runs on the source's coroutine and only sends.
struct Feed<T> {
    tx: bounded::Sender<Message<T>>,
    prefetch: u64,
    link: Arc<Mutex<Link>>,
}

impl<T: Send + 'static> Feed<T> {
    /// Send, or cancel the stream if the iterator is gone.
    fn send(&mut self, message: Message<T>) {
        if self.tx.send(message).is_err() {
            if let Link::Subscribed(subscription) = &*lock(&self.link) {
                subscription.cancel();
            }
        }
    }
}

impl<T: Send + 'static> Subscriber<T> for Feed<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        {
            let mut link = lock(&self.link);
            if let Link::Dropped = *link {
                drop(link);
                subscription.cancel();
                return;
            }
            *link = Link::Subscribed(subscription.clone());
        }
        subscription.request(self.prefetch);
    }
    fn on_next(&mut self, item: T) {
        self.send(Message::Item(item))
    }
    fn on_error(&mut self, error: Error) {
        self.send(Message::Error(error))
    }
    fn on_complete(&mut self) {
        self.send(Message::Complete)
    }
}

/// The pulling end of [`Flux::iter`]. Dropping it cancels the stream.
pub struct Iter<T> {
    rx: bounded::Receiver<Message<T>>,
    link: Arc<Mutex<Link>>,
    /// Request this many again after consuming this many.
    refill: u64,
    consumed: u64,
    done: bool,
}

impl<T> Iterator for Iter<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        while !self.done {
            let Ok(message) = self.rx.recv() else {
                // The source's coroutine ended without a terminal signal
                // (a callback panicked on it).
                self.done = true;
                return Some(Err(Error::failed(
                    "the stream ended without on_error or on_complete",
                )));
            };
            match message {
                Message::Item(item) => {
                    self.consumed += 1;
                    if self.consumed == self.refill {
                        self.consumed = 0;
                        // An item came, so the subscription is there.
                        if let Link::Subscribed(subscription) = &*lock(&self.link) {
                            subscription.request(self.refill);
                        }
                    }
                    return Some(Ok(item));
                }
                Message::Error(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
                Message::Complete => self.done = true,
            }
        }
        None
    }
}

impl<T> Drop for Iter<T> {
    fn drop(&mut self) {
        let was = std::mem::replace(&mut *lock(&self.link), Link::Dropped);
        if let (false, Link::Subscribed(subscription)) = (self.done, was) {
            subscription.cancel();
        }
    }
}
