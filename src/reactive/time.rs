//! Time operators: [`Flux::buffer`], [`Flux::debounce`], [`Flux::throttle`],
//! [`Flux::sample`] and [`Flux::timeout`].
//!
//! Each runs on a funnel coroutine (see [`funnel`](super::funnel)): the
//! upstream's items and the alarm's ticks arrive on one channel, so there is
//! no `select!` to lose an item and no may timer to race may's timer thread.
//! Timers are kept by the process's shared [`alarm`](crate::alarm) thread,
//! which has no 1 ms floor.
//!
//! What each does when the timer fires and the subscriber has no demand:
//! `buffer` holds the batch (one finished batch and one filling; then it
//! stops requesting upstream: backpressure); `debounce`, `throttle` and
//! `sample` keep one item and drop the rest, which is what they are for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::funnel::{funnel, Credit, Funnel, Operator, Source};
use super::{Demand, Error, Flux, Publisher, Subscriber};
use crate::alarm;

/// Items requested ahead from upstream by the operators that drop items
/// (`debounce`, `throttle`, `sample`): they pass on at most one of them, so
/// the upstream runs at its own pace and the channel holds at most this many.
const PREFETCH: usize = 32;

/// Finished batches `buffer` holds for a subscriber with no demand.
const READY_BATCHES: usize = 1;

/// The longest a scripted source waits before looking for a cancel.
const CANCEL_CHECK: Duration = Duration::from_millis(10);

impl<T: Clone + Send + Sync + 'static> Flux<T> {
    /// A source for demonstrations and tests of time: each subscription
    /// emits each item at its offset from the moment it subscribed (later,
    /// if there is no demand then), then completes at `end`, or with `None`
    /// never completes (a stalled source). It waits on the shared alarm,
    /// looking for a cancel at least every 10 ms.
    pub fn scripted(steps: Vec<(Duration, T)>, end: Option<Duration>) -> Flux<T> {
        Flux::new(Scripted {
            steps: Arc::new(steps),
            end,
        })
    }
}

struct Scripted<T> {
    steps: Arc<Vec<(Duration, T)>>,
    end: Option<Duration>,
}

impl<T: Clone + Send + Sync + 'static> Publisher<T> for Scripted<T> {
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<T>>) {
        let (steps, end) = (self.steps.clone(), self.end);
        may::go!(move || {
            let (subscription, demand) = Demand::new();
            subscriber.on_subscribe(subscription);
            let started = Instant::now();
            for (at, item) in steps.iter() {
                if !wait_until(Some(started + *at), &demand) {
                    return;
                }
                match demand.take_one() {
                    Ok(true) => subscriber.on_next(item.clone()),
                    Ok(false) => return,
                    Err(error) => return subscriber.on_error(error),
                }
            }
            if wait_until(end.map(|end| started + end), &demand) {
                subscriber.on_complete();
            }
        });
    }
}

/// Wait until `deadline` (`None`: for ever) on the alarm; false if the
/// subscriber cancelled first.
fn wait_until(deadline: Option<Instant>, demand: &Demand) -> bool {
    loop {
        if demand.is_cancelled() {
            return false;
        }
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => CANCEL_CHECK,
        };
        if left.is_zero() {
            return true;
        }
        alarm::shared().sleep(left.min(CANCEL_CHECK));
    }
}

impl<T: Send + 'static> Flux<T> {
    /// Items in batches of `count`, or fewer when `max_wait` has passed
    /// since a batch's first item (and at the end). A subscriber with no
    /// demand leaves one finished batch waiting while the next fills; once
    /// that one is full too, nothing more is requested upstream. A `count`
    /// of 0 fails the stream with a message.
    pub fn buffer(self, count: usize, max_wait: Duration) -> Flux<Vec<T>> {
        if count == 0 {
            return Flux::error(Error::failed(
                "buffer(0, ..): a batch needs at least 1 item",
            ));
        }
        funnel(move || Buffer {
            upstream: self.clone(),
            source: 0,
            count,
            max_wait,
            in_flight: 0,
            filling: Vec::with_capacity(count),
            due: false,
            ready: VecDeque::with_capacity(READY_BATCHES),
            done: false,
        })
    }

    /// Only an item followed by `quiet` with no other item: the last of
    /// each burst. With no demand when it is due, the item waits (a newer
    /// one replaces it and restarts the quiet). At completion the pending
    /// item, if any, is emitted first.
    pub fn debounce(self, quiet: Duration) -> Flux<T> {
        funnel(move || Debounce {
            upstream: self.clone(),
            credit: Credit::new(0, PREFETCH),
            quiet,
            latest: None,
            due: false,
            done: false,
        })
    }

    /// The first item, then nothing for `window`; then the first item
    /// after that, and so on. With no demand the first item waits (later
    /// ones are dropped) and its window starts when it is sent.
    pub fn throttle(self, window: Duration) -> Flux<T> {
        funnel(move || Throttle {
            upstream: self.clone(),
            credit: Credit::new(0, PREFETCH),
            window,
            held: None,
            done: false,
        })
    }

    /// Every `period`, the latest item if one came since the last tick.
    /// With no demand it waits (a newer one replaces it). At completion a
    /// pending item is emitted first.
    pub fn sample(self, period: Duration) -> Flux<T> {
        funnel(move || Sample {
            upstream: self.clone(),
            credit: Credit::new(0, PREFETCH),
            period,
            next_tick: Instant::now(),
            latest: None,
            due: false,
            done: false,
        })
    }

    /// Fail with [`Error::Timeout`] and cancel the upstream when no signal
    /// arrives within `gap` while the subscriber waits for an item it asked
    /// for. The gap is measured only while there is demand: a subscriber
    /// that has not asked is not kept waiting by the upstream. Demand
    /// passes through one for one.
    pub fn timeout(self, gap: Duration) -> Flux<T> {
        funnel(move || Timeout {
            upstream: self.clone(),
            pass: PassThrough::default(),
            gap,
        })
    }
}

// ANCHOR: buffer
struct Buffer<T> {
    upstream: Flux<T>,
    source: Source,
    count: usize,
    max_wait: Duration,
    /// Requested and not yet received.
    in_flight: usize,
    filling: Vec<T>,
    /// `max_wait` has passed since `filling`'s first item.
    due: bool,
    /// Finished batches waiting for demand.
    ready: VecDeque<Vec<T>>,
    done: bool,
}

impl<T: Send + 'static> Operator<T, Vec<T>> for Buffer<T> {
    fn start(&mut self, cx: &mut Funnel<T, Vec<T>>) {
        self.source = cx.subscribe(&self.upstream);
    }

    fn on_next(&mut self, cx: &mut Funnel<T, Vec<T>>, _: Source, item: T) {
        // Saturating: an upstream that sends more than asked (breaking
        // rule 1.1) must not make the count wrap.
        self.in_flight = self.in_flight.saturating_sub(1);
        self.filling.push(item);
        if self.filling.len() == 1 {
            cx.arm(self.max_wait);
        }
    }

    fn on_tick(&mut self, _: &mut Funnel<T, Vec<T>>) {
        self.due = true;
    }

    fn on_complete(&mut self, _: &mut Funnel<T, Vec<T>>, _: Source) {
        self.done = true;
    }

    fn flush(&mut self, cx: &mut Funnel<T, Vec<T>>) {
        loop {
            if cx.demand() > 0 {
                if let Some(batch) = self.ready.pop_front() {
                    cx.emit(batch);
                    continue;
                }
            }
            let closes = self.filling.len() == self.count || self.due || self.done;
            if !self.filling.is_empty() && closes && self.ready.len() < READY_BATCHES {
                cx.disarm();
                self.due = false;
                let batch = std::mem::replace(&mut self.filling, Vec::with_capacity(self.count));
                self.ready.push_back(batch);
                continue;
            }
            break;
        }
        if self.done {
            if self.ready.is_empty() && self.filling.is_empty() {
                cx.complete();
            }
        } else {
            // Ask for the rest of the batch that is filling; once it is full
            // and cannot close (no room in `ready`), that is nothing.
            let wanted = self.count - self.filling.len() - self.in_flight;
            cx.request(self.source, wanted as u64);
            self.in_flight += wanted;
        }
    }
}
// ANCHOR_END: buffer

// ANCHOR: debounce
struct Debounce<T> {
    upstream: Flux<T>,
    credit: Credit,
    quiet: Duration,
    latest: Option<T>,
    /// `latest` has been quiet for `quiet`: send it when there is demand.
    due: bool,
    done: bool,
}

impl<T: Send + 'static> Operator<T, T> for Debounce<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        cx.subscribe(&self.upstream);
    }

    fn on_next(&mut self, cx: &mut Funnel<T, T>, _: Source, item: T) {
        self.credit.release();
        self.latest = Some(item); // the one before it is dropped
        self.due = false;
        cx.arm(self.quiet); // restarts the quiet
    }

    fn on_tick(&mut self, _: &mut Funnel<T, T>) {
        self.due = true;
    }

    fn on_complete(&mut self, cx: &mut Funnel<T, T>, _: Source) {
        self.done = true;
        self.due = true;
        cx.disarm();
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        if self.due && cx.demand() > 0 {
            if let Some(item) = self.latest.take() {
                cx.emit(item);
            }
            self.due = false;
        }
        if self.done {
            if self.latest.is_none() {
                cx.complete();
            }
        } else {
            self.credit.top_up(cx);
        }
    }
}
// ANCHOR_END: debounce

struct Throttle<T> {
    upstream: Flux<T>,
    credit: Credit,
    window: Duration,
    /// The first item outside a window, waiting for demand.
    held: Option<T>,
    done: bool,
}

impl<T: Send + 'static> Operator<T, T> for Throttle<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        cx.subscribe(&self.upstream);
    }

    fn on_next(&mut self, cx: &mut Funnel<T, T>, _: Source, item: T) {
        self.credit.release();
        // Inside a window, or behind a held item: dropped.
        if !cx.is_armed() && self.held.is_none() {
            self.held = Some(item);
        }
    }

    fn on_complete(&mut self, _: &mut Funnel<T, T>, _: Source) {
        self.done = true;
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        if cx.demand() > 0 {
            if let Some(item) = self.held.take() {
                cx.emit(item);
                cx.arm(self.window); // its window starts when it is sent
            }
        }
        if self.done {
            if self.held.is_none() {
                cx.complete();
            }
        } else {
            self.credit.top_up(cx);
        }
    }
}

struct Sample<T> {
    upstream: Flux<T>,
    credit: Credit,
    period: Duration,
    next_tick: Instant,
    latest: Option<T>,
    /// A tick found `latest`: send it when there is demand.
    due: bool,
    done: bool,
}

impl<T: Send + 'static> Operator<T, T> for Sample<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        cx.subscribe(&self.upstream);
        self.next_tick = Instant::now() + self.period;
        cx.arm_at(self.next_tick);
    }

    fn on_next(&mut self, _: &mut Funnel<T, T>, _: Source, item: T) {
        self.credit.release();
        self.latest = Some(item);
    }

    fn on_tick(&mut self, cx: &mut Funnel<T, T>) {
        self.due = self.latest.is_some();
        // Ticks keep to the schedule they started with; a tick that came
        // late (a busy machine) does not push the later ones back, and
        // ticks missed altogether are skipped, not sent in a burst.
        self.next_tick += self.period;
        let now = Instant::now();
        if self.next_tick <= now {
            self.next_tick = now + self.period;
        }
        cx.arm_at(self.next_tick);
    }

    fn on_complete(&mut self, cx: &mut Funnel<T, T>, _: Source) {
        self.done = true;
        self.due = self.latest.is_some();
        cx.disarm();
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        if self.due && cx.demand() > 0 {
            if let Some(item) = self.latest.take() {
                cx.emit(item);
            }
            self.due = false;
        }
        if self.done {
            if !self.due {
                cx.complete();
            }
        } else {
            self.credit.top_up(cx);
        }
    }
}

/// Demand passed upstream one for one: what the subscriber asked for and
/// has not received is what the upstream was asked for.
#[derive(Debug, Default)]
pub(super) struct PassThrough {
    /// Asked of the upstream and not yet received.
    asked: u64,
}

impl PassThrough {
    /// Ask `source` for the demand the subscriber added since last time.
    pub(super) fn sync<T: Send + 'static>(&mut self, cx: &Funnel<T, T>, source: Source) {
        let demand = cx.demand();
        if demand > self.asked {
            cx.request(
                source,
                if demand == u64::MAX {
                    u64::MAX
                } else {
                    demand - self.asked
                },
            );
            self.asked = demand;
        }
    }

    /// An item arrived: pass it on within the demand it was asked for.
    pub(super) fn pass<T: Send + 'static>(&mut self, cx: &mut Funnel<T, T>, item: T) {
        if self.asked != u64::MAX {
            self.asked = self.asked.saturating_sub(1);
        }
        cx.emit(item);
    }

    /// Items asked for and not yet received.
    pub(super) fn waiting(&self) -> bool {
        self.asked > 0
    }

    /// A new subscription to the upstream starts with nothing asked.
    pub(super) fn restart(&mut self) {
        self.asked = 0;
    }
}

// ANCHOR: timeout
struct Timeout<T> {
    upstream: Flux<T>,
    pass: PassThrough,
    gap: Duration,
}

impl<T: Send + 'static> Operator<T, T> for Timeout<T> {
    fn start(&mut self, cx: &mut Funnel<T, T>) {
        cx.subscribe(&self.upstream);
    }

    fn on_next(&mut self, cx: &mut Funnel<T, T>, _: Source, item: T) {
        self.pass.pass(cx, item);
        cx.disarm(); // flush arms a fresh gap if more is awaited
    }

    fn on_complete(&mut self, cx: &mut Funnel<T, T>, _: Source) {
        cx.complete();
    }

    fn on_tick(&mut self, cx: &mut Funnel<T, T>) {
        cx.fail(Error::Timeout(self.gap)); // cancels the upstream too
    }

    fn flush(&mut self, cx: &mut Funnel<T, T>) {
        self.pass.sync(cx, 0);
        if self.pass.waiting() && !cx.is_armed() {
            cx.arm(self.gap);
        }
    }
}
// ANCHOR_END: timeout
