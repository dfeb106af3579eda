//! Publishers, the [`Flux`] recipe that wraps one, and the sources that start
//! a stream: [`Flux::from_iter`], [`Flux::range`], [`Flux::empty`],
//! [`Flux::error`].

use std::marker::PhantomData;
use std::sync::Arc;

use super::{Demand, Error, Subscriber};

/// Something that can be subscribed to. Each call starts one stream for one
/// subscriber.
pub trait Publisher<T>: Send + Sync + 'static {
    /// Start a stream for `subscriber`: call its `on_subscribe` first, then
    /// honour the demand it signals.
    fn subscribe(&self, subscriber: Box<dyn Subscriber<T>>);
}

/// A recipe for a stream: each `subscribe` runs it anew for that subscriber
/// (a cold publisher), so two subscribers each get every item and `retry` can
/// subscribe again. Cheap to clone: clones share one publisher.
pub struct Flux<T> {
    publisher: Arc<dyn Publisher<T>>,
}

impl<T> Clone for Flux<T> {
    fn clone(&self) -> Self {
        Flux {
            publisher: self.publisher.clone(),
        }
    }
}

impl<T: Send + 'static> Flux<T> {
    /// A flux over any publisher.
    pub fn new(publisher: impl Publisher<T>) -> Flux<T> {
        Flux {
            publisher: Arc::new(publisher),
        }
    }

    /// Start one stream for `subscriber`.
    pub fn subscribe(&self, subscriber: impl Subscriber<T>) {
        self.publisher.subscribe(Box::new(subscriber))
    }

    /// Build an operator that runs inline: each subscriber downstream is
    /// wrapped by `wrap`, and the wrapper subscribes upstream. No coroutine
    /// and no channel are added; the wrapper's callbacks run on the
    /// upstream's coroutine. `map`, `filter`, `take` and the rest are built
    /// this way.
    pub fn lift<U, W>(self, wrap: W) -> Flux<U>
    where
        U: Send + 'static,
        W: Fn(Box<dyn Subscriber<U>>) -> Box<dyn Subscriber<T>> + Send + Sync + 'static,
    {
        Flux::new(Lift {
            upstream: self,
            wrap,
            _down: PhantomData,
        })
    }

    /// A source that runs `make()` for each subscriber and emits the items
    /// of what it returns, one per unit of demand, then completes. The
    /// iterator runs on the subscription's coroutine.
    // Not `FromIterator`: that takes one iterator, and a cold flux needs a
    // way to make a fresh one for every subscriber.
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I, F>(make: F) -> Flux<T>
    where
        F: Fn() -> I + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        let make = Arc::new(make);
        Flux::new(Source::new(
            move |demand: &Demand, subscriber: &mut dyn Subscriber<T>| {
                emit_all(demand, subscriber, make().into_iter())
            },
        ))
    }

    /// A source that completes at once.
    pub fn empty() -> Flux<T> {
        Flux::from_iter(std::iter::empty)
    }

    /// A source that fails with `error` at once (no demand needed: rule 1.4
    /// lets a publisher fail without a request).
    pub fn error(error: Error) -> Flux<T> {
        Flux::new(Source::new(
            move |_: &Demand, subscriber: &mut dyn Subscriber<T>| {
                subscriber.on_error(error.clone())
            },
        ))
    }
}

impl Flux<u64> {
    /// `count` numbers from `start` (fewer if they would pass `u64::MAX`).
    pub fn range(start: u64, count: u64) -> Flux<u64> {
        Flux::from_iter(move || start..start.saturating_add(count))
    }
}

// ANCHOR: source
/// A source publisher: each subscription gets its own coroutine, which calls
/// `on_subscribe` and then `body`, so every signal of that stream runs on it,
/// one after another. When `body` returns, the coroutine drops the subscriber
/// (rule 3.13: a cancelled source lets go of its subscriber).
struct Source<T, B> {
    body: Arc<B>,
    _items: PhantomData<fn() -> T>,
}

impl<T, B> Source<T, B> {
    fn new(body: B) -> Self {
        Source {
            body: Arc::new(body),
            _items: PhantomData,
        }
    }
}

impl<T, B> Publisher<T> for Source<T, B>
where
    T: Send + 'static,
    B: Fn(&Demand, &mut dyn Subscriber<T>) + Send + Sync + 'static,
{
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<T>>) {
        let body = self.body.clone();
        may::go!(move || {
            let (subscription, demand) = Demand::new();
            subscriber.on_subscribe(subscription);
            body(&demand, &mut *subscriber);
        });
    }
}

/// Emit `items`, one per unit of demand. The next item is fetched before
/// waiting for demand, so the stream completes as soon as the last item is
/// out, without asking for demand it does not need (rule 1.4 allows it).
fn emit_all<T: 'static>(
    demand: &Demand,
    subscriber: &mut dyn Subscriber<T>,
    mut items: impl Iterator<Item = T>,
) {
    loop {
        let Some(item) = items.next() else {
            return subscriber.on_complete();
        };
        match demand.take_one() {
            Ok(true) => subscriber.on_next(item),
            Ok(false) => return, // cancelled: no more signals (3.6)
            Err(error) => return subscriber.on_error(error),
        }
    }
}
// ANCHOR_END: source

/// The publisher behind [`Flux::lift`].
struct Lift<T, U, W> {
    upstream: Flux<T>,
    wrap: W,
    _down: PhantomData<fn() -> U>,
}

impl<T, U, W> Publisher<U> for Lift<T, U, W>
where
    T: Send + 'static,
    U: Send + 'static,
    W: Fn(Box<dyn Subscriber<U>>) -> Box<dyn Subscriber<T>> + Send + Sync + 'static,
{
    fn subscribe(&self, subscriber: Box<dyn Subscriber<U>>) {
        self.upstream.publisher.subscribe((self.wrap)(subscriber))
    }
}
