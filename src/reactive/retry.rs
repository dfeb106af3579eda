//! [`Flux::retry`]: on an error, subscribe to the recipe again.

use super::funnel::{funnel, Funnel, Operator, Source};
use super::time::PassThrough;
use super::{Error, Flux};

impl<T: Send + 'static> Flux<T> {
    /// On an error, subscribe to the upstream again, up to `times` more
    /// times; the error of the last try ends the stream. A flux is a recipe,
    /// so each try runs the source anew: items sent before an error are
    /// sent again by the next try (a source that fails on connecting sends
    /// nothing twice). Demand the subscriber signalled and did not get is
    /// asked of each new try.
    pub fn retry(self, times: usize) -> Flux<T> {
        funnel(move || Retry {
            upstream: self.clone(),
            left: times,
            source: 0,
            pass: PassThrough::default(),
        })
    }
}

// ANCHOR: retry
struct Retry<T> {
    upstream: Flux<T>,
    /// Tries left after the current one.
    left: usize,
    /// The current try's upstream; signals of earlier tries never arrive.
    source: Source,
    pass: PassThrough,
}

impl<T: Send + 'static> Operator<T, T> for Retry<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        self.source = cx.subscribe(&self.upstream);
    }

    fn on_next(&mut self, cx: &mut Funnel<T, T>, _: Source, item: T) {
        self.pass.pass(cx, item);
    }

    fn on_complete(&mut self, cx: &mut Funnel<T, T>, _: Source) {
        cx.complete();
    }

    fn on_error(&mut self, cx: &mut Funnel<T, T>, _: Source, error: Error) {
        if self.left == 0 {
            return cx.fail(error);
        }
        self.left -= 1;
        self.source = cx.subscribe(&self.upstream);
        self.pass.restart(); // flush asks the new try for the whole demand
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        self.pass.sync(cx, self.source);
    }
}
// ANCHOR_END: retry
