//! `switch_map`: each item of the outer stream becomes an inner stream, and
//! a newer outer item replaces the inner stream in flight: the old one is
//! cancelled (a [`Flux::from_call`] inner sees its
//! [`Cancelled`](super::Cancelled) token fire) before the new one is
//! subscribed, and an item it had already sent and that was not yet taken
//! downstream is dropped, since it answers a stale question.
//!
//! It runs on a funnel coroutine, like `flat_map`. The outer stream is
//! asked for one item at a time, and for the next as soon as that one has
//! switched: outer items must arrive while an inner stream runs, whatever
//! the downstream's demand, or nothing could replace it. The inner stream
//! is asked for one item, and for the next once that one has gone
//! downstream. Signals of a cancelled inner stream that were already on
//! their way are dropped by the funnel (rule 3.8 allows them to arrive).

use std::sync::Arc;

use super::flat_map::Up;
use super::funnel::{funnel, Funnel, Operator, Source};
use super::Flux;

impl<T: Send + 'static> Flux<T> {
    /// Map each item to a stream with `f` and pass on the items of the
    /// latest one only: a new item cancels the inner stream before it.
    /// Completes when this stream has completed and so has the last inner
    /// stream.
    pub fn switch_map<U: Send + 'static>(
        self,
        f: impl Fn(T) -> Flux<U> + Send + Sync + 'static,
    ) -> Flux<U> {
        let f = Arc::new(f);
        funnel(move || SwitchMap {
            upstream: self.clone(),
            f: f.clone(),
            outer: 0,
            outer_done: false,
            current: None,
            held: None,
        })
    }
}

/// The inner stream in flight.
struct Current {
    source: Source,
    done: bool,
}

struct SwitchMap<T, U, F> {
    upstream: Flux<T>,
    f: Arc<F>,
    outer: Source,
    outer_done: bool,
    current: Option<Current>,
    /// The current inner stream's item, waiting for downstream demand.
    held: Option<U>,
}

// ANCHOR: switch_map
impl<T, U, F> Operator<Up<T, U>, U> for SwitchMap<T, U, F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> Flux<U> + Send + Sync + 'static,
{
    fn start(&mut self, cx: &mut Funnel<Up<T, U>, U>) {
        self.outer = cx.subscribe_with(&self.upstream, Up::Outer);
        cx.request(self.outer, 1);
    }

    fn on_next(&mut self, cx: &mut Funnel<Up<T, U>, U>, _source: Source, item: Up<T, U>) {
        match item {
            Up::Outer(item) => {
                if let Some(stale) = self.current.take() {
                    cx.cancel(stale.source); // fires its Cancelled token now
                }
                self.held = None; // the stale answer nobody took yet
                let source = cx.subscribe_with(&(self.f)(item), Up::Inner);
                cx.request(source, 1);
                self.current = Some(Current {
                    source,
                    done: false,
                });
                cx.request(self.outer, 1);
            }
            // Only the current inner stream reaches here: the funnel drops
            // what a cancelled one still sends.
            Up::Inner(item) => self.held = Some(item),
        }
    }

    fn on_complete(&mut self, _cx: &mut Funnel<Up<T, U>, U>, source: Source) {
        if source == self.outer {
            self.outer_done = true;
        } else if let Some(current) = &mut self.current {
            current.done = true;
        }
    }

    fn flush(&mut self, cx: &mut Funnel<Up<T, U>, U>) {
        if cx.demand() > 0 {
            if let Some(item) = self.held.take() {
                cx.emit(item);
                if let Some(current) = &self.current {
                    cx.request(current.source, 1);
                }
            }
        }
        if self.held.is_none() && self.current.as_ref().is_some_and(|c| c.done) {
            self.current = None;
        }
        if self.outer_done && self.current.is_none() {
            cx.complete();
        }
    }
}
// ANCHOR_END: switch_map
