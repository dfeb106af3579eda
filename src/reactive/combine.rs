//! Combining operators: [`Flux::merge`], [`Flux::zip`] and
//! [`Flux::combine_latest`].
//!
//! Each subscription runs one funnel coroutine (see
//! [`funnel`](super::funnel)): every upstream's subscriber forwards into its
//! one channel, so two upstreams ready at once both get through. That is the
//! fix the primer gives for `select!`, whose losing branch can take a message
//! out of its channel and drop it (the primer's pitfall "`select!` can lose
//! a message", `pitfall_select_loses`).
//!
//! Every upstream has a credit of [`PER_SOURCE`] items: requested and not yet
//! passed on. A subscriber with no demand therefore holds up at most that
//! many items per upstream, and then the upstreams wait. An error from any
//! upstream cancels the others and ends the stream, once.

use std::collections::VecDeque;

use super::funnel::{funnel, Credit, Funnel, Operator, Source};
use super::Flux;

/// Items each upstream may have requested and not yet passed on.
pub const PER_SOURCE: usize = 16;

impl<T: Send + 'static> Flux<T> {
    /// Every item of every source, in the order they arrive; each source's
    /// own order is kept. Completes when all have completed.
    pub fn merge(sources: Vec<Flux<T>>) -> Flux<T> {
        funnel(move || Merge {
            sources: sources.clone(),
            credits: Vec::new(),
            queue: VecDeque::new(),
            running: 0,
        })
    }

    /// Pairs: the first item of each, then the second of each, and so on.
    /// Completes as soon as one side has completed and none of its items
    /// wait for a partner (the other side is cancelled then).
    pub fn zip<U: Send + 'static>(self, other: Flux<U>) -> Flux<(T, U)> {
        funnel(move || Zip {
            left: self.clone(),
            right: other.clone(),
            credits: [Credit::new(0, PER_SOURCE), Credit::new(1, PER_SOURCE)],
            lefts: VecDeque::new(),
            rights: VecDeque::new(),
        })
    }

    /// Once both sides have sent an item: for every item from either side,
    /// the pair of the latest item of each. Completes when both have
    /// completed, or at once when one completes without ever sending (no
    /// pair can come).
    pub fn combine_latest<U: Clone + Send + 'static>(self, other: Flux<U>) -> Flux<(T, U)>
    where
        T: Clone,
    {
        funnel(move || CombineLatest {
            left: self.clone(),
            right: other.clone(),
            credits: [Credit::new(0, PER_SOURCE), Credit::new(1, PER_SOURCE)],
            latest_left: None,
            latest_right: None,
            pairs: VecDeque::new(),
        })
    }
}

// ANCHOR: merge
struct Merge<T> {
    sources: Vec<Flux<T>>,
    credits: Vec<Credit>,
    /// Items waiting for demand, with the source each came from.
    queue: VecDeque<(Source, T)>,
    /// Sources that have not completed.
    running: usize,
}

impl<T: Send + 'static> Operator<T, T> for Merge<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        for flux in &self.sources {
            let source = cx.subscribe(flux);
            self.credits.push(Credit::new(source, PER_SOURCE));
        }
        self.running = self.sources.len();
    }

    fn on_next(&mut self, _: &mut Funnel<T, T>, source: Source, item: T) {
        self.queue.push_back((source, item));
    }

    fn on_complete(&mut self, _: &mut Funnel<T, T>, _: Source) {
        self.running -= 1;
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        while cx.demand() > 0 {
            let Some((source, item)) = self.queue.pop_front() else {
                break;
            };
            self.credits[source].release();
            cx.emit(item);
        }
        if self.running == 0 && self.queue.is_empty() {
            return cx.complete();
        }
        for credit in &mut self.credits {
            credit.top_up(cx);
        }
    }
}
// ANCHOR_END: merge

/// An item from one side of a two-sided operator.
enum Side<T, U> {
    Left(T),
    Right(U),
}

// ANCHOR: zip
struct Zip<T, U> {
    left: Flux<T>,
    right: Flux<U>,
    credits: [Credit; 2],
    lefts: VecDeque<T>,
    rights: VecDeque<U>,
}

impl<T: Send + 'static, U: Send + 'static> Operator<Side<T, U>, (T, U)> for Zip<T, U> {
    fn start(&mut self, cx: &mut Funnel<Side<T, U>, (T, U)>) {
        cx.subscribe_with(&self.left, Side::Left);
        cx.subscribe_with(&self.right, Side::Right);
    }

    fn on_next(&mut self, _: &mut Funnel<Side<T, U>, (T, U)>, _: Source, item: Side<T, U>) {
        match item {
            Side::Left(item) => self.lefts.push_back(item),
            Side::Right(item) => self.rights.push_back(item),
        }
    }

    fn on_complete(&mut self, _: &mut Funnel<Side<T, U>, (T, U)>, _: Source) {}

    fn flush(&mut self, cx: &mut Funnel<Side<T, U>, (T, U)>) {
        while cx.demand() > 0 && !self.lefts.is_empty() && !self.rights.is_empty() {
            let pair = (self.lefts.pop_front(), self.rights.pop_front());
            if let (Some(left), Some(right)) = pair {
                self.credits.iter_mut().for_each(Credit::release);
                cx.emit((left, right));
            }
        }
        // A side that is over and has nothing waiting can pair no more.
        if (cx.is_over(0) && self.lefts.is_empty()) || (cx.is_over(1) && self.rights.is_empty()) {
            return cx.complete();
        }
        self.credits.iter_mut().for_each(|credit| credit.top_up(cx));
    }
}
// ANCHOR_END: zip

struct CombineLatest<T, U> {
    left: Flux<T>,
    right: Flux<U>,
    credits: [Credit; 2],
    latest_left: Option<T>,
    latest_right: Option<U>,
    /// Pairs waiting for demand, with the side whose item made each.
    pairs: VecDeque<(Source, (T, U))>,
}

impl<T, U> Operator<Side<T, U>, (T, U)> for CombineLatest<T, U>
where
    T: Clone + Send + 'static,
    U: Clone + Send + 'static,
{
    fn start(&mut self, cx: &mut Funnel<Side<T, U>, (T, U)>) {
        cx.subscribe_with(&self.left, Side::Left);
        cx.subscribe_with(&self.right, Side::Right);
    }

    fn on_next(&mut self, _: &mut Funnel<Side<T, U>, (T, U)>, source: Source, item: Side<T, U>) {
        match item {
            Side::Left(item) => self.latest_left = Some(item),
            Side::Right(item) => self.latest_right = Some(item),
        }
        match (&self.latest_left, &self.latest_right) {
            (Some(left), Some(right)) => {
                self.pairs
                    .push_back((source, (left.clone(), right.clone())));
            }
            // No pair yet: the item is held only as the latest.
            _ => self.credits[source].release(),
        }
    }

    fn on_complete(&mut self, _: &mut Funnel<Side<T, U>, (T, U)>, _: Source) {}

    fn flush(&mut self, cx: &mut Funnel<Side<T, U>, (T, U)>) {
        while cx.demand() > 0 {
            let Some((source, pair)) = self.pairs.pop_front() else {
                break;
            };
            self.credits[source].release();
            cx.emit(pair);
        }
        let never_sent = (cx.is_over(0) && self.latest_left.is_none())
            || (cx.is_over(1) && self.latest_right.is_none());
        if never_sent || (cx.is_over(0) && cx.is_over(1) && self.pairs.is_empty()) {
            return cx.complete();
        }
        self.credits.iter_mut().for_each(|credit| credit.top_up(cx));
    }
}
