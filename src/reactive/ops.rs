//! Synchronous operators: each wraps the downstream subscriber and runs
//! inline on the upstream's coroutine, with no channel and no coroutine of
//! its own (see [`Flux::lift`]).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Control, Error, Flux, Subscriber, Subscription};

impl<T: Send + 'static> Flux<T> {
    /// Each item through `f`. Demand passes through one for one.
    pub fn map<U: Send + 'static>(self, f: impl Fn(T) -> U + Send + Sync + 'static) -> Flux<U> {
        let f = Arc::new(f);
        self.lift(move |down| {
            Box::new(Map {
                down,
                f: f.clone(),
                _up: PhantomData,
            })
        })
    }

    /// Only the items `keep` accepts. Each dropped item was paid for with a
    /// unit of demand the downstream never sees used, so `filter` asks the
    /// upstream for one more in its place: the downstream still gets what it
    /// requested.
    pub fn filter(self, keep: impl Fn(&T) -> bool + Send + Sync + 'static) -> Flux<T> {
        let keep = Arc::new(keep);
        self.lift(move |down| {
            Box::new(Filter {
                down,
                keep: keep.clone(),
                upstream: None,
            })
        })
    }

    /// The running fold: for each item, `acc = f(&acc, item)` and emit `acc`
    /// (the initial value itself is not emitted, so demand stays one for one).
    pub fn scan<A: Clone + Send + 'static>(
        self,
        init: A,
        f: impl Fn(&A, T) -> A + Send + Sync + 'static,
    ) -> Flux<A> {
        let f = Arc::new(f);
        // A std Mutex makes the initial value shareable (`A` need not be
        // Sync); it is held only for the clone, once per subscription.
        let init = std::sync::Mutex::new(init);
        self.lift(move |down| {
            Box::new(Scan {
                down,
                acc: init.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                f: f.clone(),
                _up: PhantomData,
            })
        })
    }

    /// At most `n` items: after the `n`th, cancel the upstream and complete.
    /// It never asks the upstream for more than `n` in total.
    pub fn take(self, n: u64) -> Flux<T> {
        self.lift(move |down| {
            Box::new(Take {
                down,
                left: n,
                upstream: None,
                done: false,
            })
        })
    }

    /// Drop an item equal to the one before it (asking upstream for one more
    /// in its place, as `filter` does).
    pub fn distinct_until_changed(self) -> Flux<T>
    where
        T: PartialEq + Clone,
    {
        self.lift(|down| {
            Box::new(Distinct {
                down,
                last: None,
                upstream: None,
            })
        })
    }
}

struct Map<T, U, F> {
    down: Box<dyn Subscriber<U>>,
    f: Arc<F>,
    _up: PhantomData<fn(T)>,
}

impl<T, U, F> Subscriber<T> for Map<T, U, F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> U + Send + Sync + 'static,
{
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.down.on_subscribe(subscription)
    }
    fn on_next(&mut self, item: T) {
        self.down.on_next((self.f)(item))
    }
    fn on_error(&mut self, error: Error) {
        self.down.on_error(error)
    }
    fn on_complete(&mut self) {
        self.down.on_complete()
    }
}

// ANCHOR: filter
struct Filter<T, F> {
    down: Box<dyn Subscriber<T>>,
    keep: Arc<F>,
    upstream: Option<Subscription>,
}

impl<T, F> Subscriber<T> for Filter<T, F>
where
    T: Send + 'static,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.upstream = Some(subscription.clone());
        self.down.on_subscribe(subscription)
    }
    fn on_next(&mut self, item: T) {
        if (self.keep)(&item) {
            self.down.on_next(item)
        } else if let Some(upstream) = &self.upstream {
            // Only adds to the source's count: the source emits the
            // replacement after this call returns (no recursion, rule 3.3).
            upstream.request(1)
        }
    }
    fn on_error(&mut self, error: Error) {
        self.down.on_error(error)
    }
    fn on_complete(&mut self) {
        self.down.on_complete()
    }
}
// ANCHOR_END: filter

struct Scan<T, A, F> {
    down: Box<dyn Subscriber<A>>,
    acc: A,
    f: Arc<F>,
    _up: PhantomData<fn(T)>,
}

impl<T, A, F> Subscriber<T> for Scan<T, A, F>
where
    T: Send + 'static,
    A: Clone + Send + 'static,
    F: Fn(&A, T) -> A + Send + Sync + 'static,
{
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.down.on_subscribe(subscription)
    }
    fn on_next(&mut self, item: T) {
        self.acc = (self.f)(&self.acc, item);
        self.down.on_next(self.acc.clone())
    }
    fn on_error(&mut self, error: Error) {
        self.down.on_error(error)
    }
    fn on_complete(&mut self) {
        self.down.on_complete()
    }
}

struct Take<T> {
    down: Box<dyn Subscriber<T>>,
    /// Items still to pass on.
    left: u64,
    upstream: Option<Subscription>,
    /// Completed (or the upstream ended): whatever still arrives is dropped.
    done: bool,
}

impl<T: Send + 'static> Subscriber<T> for Take<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        let capped = Subscription::new(Capped {
            upstream: subscription.clone(),
            unrequested: AtomicU64::new(self.left),
        });
        self.upstream = Some(subscription);
        self.down.on_subscribe(capped);
        if self.left == 0 {
            self.finish();
        }
    }
    fn on_next(&mut self, item: T) {
        if self.done {
            return;
        }
        self.left -= 1;
        if self.left > 0 {
            return self.down.on_next(item);
        }
        // Cancel first: the source stops before the downstream's last
        // on_next runs, instead of producing an item nobody will take.
        self.finish_with(item)
    }
    fn on_error(&mut self, error: Error) {
        if !std::mem::replace(&mut self.done, true) {
            self.down.on_error(error)
        }
    }
    fn on_complete(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            self.down.on_complete()
        }
    }
}

impl<T: Send + 'static> Take<T> {
    fn stop_upstream(&mut self) {
        self.done = true;
        if let Some(upstream) = &self.upstream {
            upstream.cancel();
        }
    }
    fn finish_with(&mut self, last: T) {
        self.stop_upstream();
        self.down.on_next(last);
        self.down.on_complete();
    }
    fn finish(&mut self) {
        self.stop_upstream();
        self.down.on_complete();
    }
}

// ANCHOR: capped
/// `take(n)`'s subscription: passes demand on, but never more than `n` in
/// all, so a bounded source is not asked for items that would be dropped.
struct Capped {
    upstream: Subscription,
    unrequested: AtomicU64,
}

impl Control for Capped {
    fn request(&self, n: u64) {
        if n == 0 {
            return self.upstream.request(0); // the source reports it (3.9)
        }
        let before = self
            .unrequested
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left - left.min(n))
            })
            .unwrap_or_else(|left| left);
        let grant = before.min(n);
        if grant > 0 {
            self.upstream.request(grant)
        }
    }
    fn cancel(&self) {
        self.upstream.cancel()
    }
}
// ANCHOR_END: capped

struct Distinct<T> {
    down: Box<dyn Subscriber<T>>,
    last: Option<T>,
    upstream: Option<Subscription>,
}

impl<T: PartialEq + Clone + Send + 'static> Subscriber<T> for Distinct<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.upstream = Some(subscription.clone());
        self.down.on_subscribe(subscription)
    }
    fn on_next(&mut self, item: T) {
        if self.last.as_ref() == Some(&item) {
            if let Some(upstream) = &self.upstream {
                upstream.request(1)
            }
            return;
        }
        self.last = Some(item.clone());
        self.down.on_next(item)
    }
    fn on_error(&mut self, error: Error) {
        self.down.on_error(error)
    }
    fn on_complete(&mut self) {
        self.down.on_complete()
    }
}
