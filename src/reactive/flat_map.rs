//! `flat_map`: each item of the outer stream becomes an inner stream, and
//! the items of up to `limit` inner streams at once are merged into one.
//!
//! It runs on a funnel coroutine (see `funnel.rs`): the outer stream and
//! every inner stream forward their signals into the funnel's one channel,
//! so nothing selects over channels and nothing is lost. Demand is what
//! keeps that channel bounded:
//!
//! - the outer stream is asked for `limit` items at the start, and for one
//!   more each time an inner stream has finished and its last item has gone
//!   downstream: at most `limit` inner streams are subscribed at once;
//! - each inner stream is asked for one item, and for the next only once
//!   that one has gone downstream: an inner stream has at most one item in
//!   the channel or in the operator's queue, so both hold at most `limit`
//!   items, whatever the downstream's pace;
//! - items go downstream only within the downstream's demand (rule 1.1).
//!
//! An error from the outer stream or from any inner stream ends the whole
//! stream at once (the items still queued are dropped) and cancels every
//! stream still running.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::funnel::{funnel, Funnel, Operator, Source};
use super::{Error, Flux};

/// What reaches the funnel: an outer item, or an item of an inner stream.
pub(super) enum Up<T, U> {
    Outer(T),
    Inner(U),
}

impl<T: Send + 'static> Flux<T> {
    /// Map each item to a stream with `f` and merge the items of those
    /// streams as they come, with at most `limit` of them running at once.
    /// Completes when this stream and every inner stream have completed.
    /// A `limit` of 0 ends the stream with an error at subscribe.
    pub fn flat_map<U: Send + 'static>(
        self,
        limit: usize,
        f: impl Fn(T) -> Flux<U> + Send + Sync + 'static,
    ) -> Flux<U> {
        let f = Arc::new(f);
        funnel(move || FlatMap {
            upstream: self.clone(),
            f: f.clone(),
            limit,
            outer: 0,
            outer_done: false,
            inners: HashMap::new(),
            queue: VecDeque::new(),
        })
    }
}

/// One inner stream the operator is running.
struct Inner {
    /// Its items in the queue, not yet sent downstream (0 or 1).
    queued: usize,
    /// It has completed.
    done: bool,
}

struct FlatMap<T, U, F> {
    upstream: Flux<T>,
    f: Arc<F>,
    limit: usize,
    outer: Source,
    outer_done: bool,
    /// The inner streams that hold a slot: running, or finished with an
    /// item still queued.
    inners: HashMap<Source, Inner>,
    /// Items waiting for downstream demand, in arrival order.
    queue: VecDeque<(Source, U)>,
}

// ANCHOR: flat_map
impl<T, U, F> Operator<Up<T, U>, U> for FlatMap<T, U, F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> Flux<U> + Send + Sync + 'static,
{
    fn start(&mut self, cx: &mut Funnel<Up<T, U>, U>) {
        if self.limit == 0 {
            return cx.fail(Error::failed("flat_map needs a limit of at least 1"));
        }
        self.outer = cx.subscribe_with(&self.upstream, Up::Outer);
        cx.request(self.outer, self.limit as u64);
    }

    fn on_next(&mut self, cx: &mut Funnel<Up<T, U>, U>, source: Source, item: Up<T, U>) {
        match item {
            Up::Outer(item) => {
                let inner = cx.subscribe_with(&(self.f)(item), Up::Inner);
                cx.request(inner, 1);
                let fresh = Inner {
                    queued: 0,
                    done: false,
                };
                self.inners.insert(inner, fresh);
            }
            Up::Inner(item) => {
                if let Some(inner) = self.inners.get_mut(&source) {
                    inner.queued += 1;
                }
                self.queue.push_back((source, item));
            }
        }
    }

    fn on_complete(&mut self, cx: &mut Funnel<Up<T, U>, U>, source: Source) {
        if source == self.outer {
            self.outer_done = true;
        } else if let Some(inner) = self.inners.get_mut(&source) {
            inner.done = true;
            if inner.queued == 0 {
                self.free_slot(cx, source);
            }
        }
    }

    fn flush(&mut self, cx: &mut Funnel<Up<T, U>, U>) {
        while cx.demand() > 0 && !cx.is_ended() {
            let Some((source, item)) = self.queue.pop_front() else {
                break;
            };
            cx.emit(item);
            let Some(inner) = self.inners.get_mut(&source) else {
                continue;
            };
            inner.queued -= 1;
            if inner.done {
                self.free_slot(cx, source);
            } else {
                cx.request(source, 1); // its next item, now there is room
            }
        }
        if self.outer_done && self.inners.is_empty() && self.queue.is_empty() {
            cx.complete();
        }
    }
}

impl<T, U, F> FlatMap<T, U, F>
where
    T: Send + 'static,
    U: Send + 'static,
{
    /// An inner stream is over and its items are out: let the next in.
    fn free_slot(&mut self, cx: &mut Funnel<Up<T, U>, U>, source: Source) {
        self.inners.remove(&source);
        cx.request(self.outer, 1);
    }
}
// ANCHOR_END: flat_map
