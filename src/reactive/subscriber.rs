//! The receiving end of a stream.

use super::{Error, Subscription};

/// What a publisher calls, one call at a time (rule 1.3): `on_subscribe`
/// exactly once and first (1.9), then at most as many `on_next` as the
/// subscriber requested (1.1), then at most one of `on_error` or
/// `on_complete` (1.7).
///
/// The methods take `&mut self`, so Rust alone rules out two overlapping
/// calls on one subscriber; a publisher that feeds one subscriber from
/// several coroutines must hand the signals over (a channel, one funnel
/// coroutine) rather than share it behind a lock.
///
/// The callbacks run on the publisher's coroutine (see the module docs): they
/// must not block the thread, and they run on that coroutine's stack.
// ANCHOR: trait
pub trait Subscriber<T>: Send + 'static {
    /// The stream starts: keep `subscription` to request items or cancel.
    fn on_subscribe(&mut self, subscription: Subscription);
    /// One item, within the demand requested so far.
    fn on_next(&mut self, item: T);
    /// The stream failed; no signal follows.
    fn on_error(&mut self, error: Error);
    /// The stream ended; no signal follows.
    fn on_complete(&mut self);
}
// ANCHOR_END: trait

/// A boxed subscriber is a subscriber, so operators can wrap `Box<dyn ..>`.
impl<T, S: Subscriber<T> + ?Sized> Subscriber<T> for Box<S> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        (**self).on_subscribe(subscription)
    }
    fn on_next(&mut self, item: T) {
        (**self).on_next(item)
    }
    fn on_error(&mut self, error: Error) {
        (**self).on_error(error)
    }
    fn on_complete(&mut self) {
        (**self).on_complete()
    }
}
