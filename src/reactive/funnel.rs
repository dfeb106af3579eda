//! The funnel: one coroutine per subscription that receives every signal of
//! an operator (items and ends from each upstream, the subscriber's demand
//! and cancel, alarm ticks) on one may channel, and calls the operator's
//! state machine with them one at a time.
//!
//! Time and combining operators wait for several things at once: two
//! upstreams, or an upstream and a clock. `select!` over several channels
//! can lose a message (the primer's pitfall "`select!` can lose a
//! message"), and may's own timers race its timer thread (the pitfalls
//! appendix, "Known may 0.3.51 bugs"). So nothing here selects and nothing
//! arms a may timer: every upstream's subscriber forwards its signals into
//! the one channel, demand from downstream posts a wake-up into it, and a
//! timer is an [`Alarm::call_at`](crate::alarm::Alarm::call_at) that sends a
//! tick into it. The coroutine parks on `recv()` with no timeout and loses
//! nothing.
//!
//! The channel is unbounded, but what can be in it is bounded: items only
//! as many as the operator requested upstream, at most one terminal signal
//! per upstream, at most one demand wake-up, and a tick per timer armed
//! (a re-armed timer's old tick is cancelled, or ignored by its generation
//! number if it was already sent).

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use may::sync::mpsc::{self, Receiver, Sender};

use super::{Control, Error, Flux, Publisher, Subscriber, Subscription};
use crate::alarm::{self, Call};

/// Which upstream a signal came from: the number [`Funnel::subscribe`]
/// returned for it.
pub type Source = usize;

// ANCHOR: operator
/// An operator that runs on a funnel coroutine: a state machine the
/// coroutine calls for each signal, one call at a time. After every call
/// (and after [`Operator::start`]) the funnel calls [`Operator::flush`],
/// the one place that emits what the demand allows and asks upstream for
/// more. Once the operator ends the stream (`complete` or `fail`), or the
/// subscriber cancels, no further call is made.
pub trait Operator<I: Send + 'static, U: Send + 'static>: Send + 'static {
    /// The stream starts: subscribe the upstreams, arm a timer if needed.
    fn start(&mut self, cx: &mut Funnel<I, U>);
    /// An item from `source`.
    fn on_next(&mut self, cx: &mut Funnel<I, U>, source: Source, item: I);
    /// `source` completed.
    fn on_complete(&mut self, cx: &mut Funnel<I, U>, source: Source);
    /// `source` failed. By default the stream fails with it, once.
    fn on_error(&mut self, cx: &mut Funnel<I, U>, source: Source, error: Error) {
        let _ = source;
        cx.fail(error);
    }
    /// The timer armed last went off (older timers never reach here).
    fn on_tick(&mut self, cx: &mut Funnel<I, U>) {
        let _ = cx;
    }
    /// Emit what the downstream demand allows, request upstream what there
    /// is room for, end the stream if it is over.
    fn flush(&mut self, cx: &mut Funnel<I, U>);
}
// ANCHOR_END: operator

/// A flux whose every subscription runs a fresh operator from `make` on a
/// funnel coroutine of its own. `I` is what the operator's upstreams send
/// it (for two upstreams of different types, an enum of both), `U` what it
/// emits.
pub fn funnel<I, U, O, M>(make: M) -> Flux<U>
where
    I: Send + 'static,
    U: Send + 'static,
    O: Operator<I, U>,
    M: Fn() -> O + Send + Sync + 'static,
{
    Flux::new(Funnelled {
        make,
        _types: PhantomData,
    })
}

struct Funnelled<I, U, M> {
    make: M,
    _types: PhantomData<fn(I) -> U>,
}

impl<I, U, O, M> Publisher<U> for Funnelled<I, U, M>
where
    I: Send + 'static,
    U: Send + 'static,
    O: Operator<I, U>,
    M: Fn() -> O + Send + Sync + 'static,
{
    fn subscribe(&self, subscriber: Box<dyn Subscriber<U>>) {
        let operator = (self.make)();
        may::go!(move || run(operator, subscriber));
    }
}

// ANCHOR: events
/// Events on the funnel's channel.
enum Event<I> {
    Next(Source, I),
    Error(Source, Error),
    Complete(Source),
    /// The alarm went off for the timer of this generation.
    Tick(u64),
    /// The subscriber requested or cancelled: look at [`Downstream`].
    Wake,
}
// ANCHOR_END: events

// ANCHOR: run
/// The funnel coroutine: tell the subscriber the stream started, start the
/// operator, then take one event at a time until the stream is over.
fn run<I, U, O>(mut operator: O, subscriber: Box<dyn Subscriber<U>>)
where
    I: Send + 'static,
    U: Send + 'static,
    O: Operator<I, U>,
{
    let (tx, rx) = mpsc::channel();
    let downstream = Arc::new(Downstream {
        state: Mutex::new(DownState::default()),
        tx: Mutex::new(tx.clone()),
    });
    let mut cx = Funnel {
        down: subscriber,
        demand: 0,
        tx,
        upstreams: Vec::new(),
        generation: 0,
        timer: None,
        ended: false,
    };
    cx.down
        .on_subscribe(Subscription::new(DownControl(downstream.clone())));
    // A wake-up posted from `on_subscribe` stays in the channel and is
    // taken as usual; looking now lets a cancel or `request(0)` made there
    // stop the stream before any upstream is subscribed.
    if !cx.take_downstream(&downstream, false) {
        operator.start(&mut cx);
    }
    while !cx.ended {
        operator.flush(&mut cx);
        if cx.ended {
            break;
        }
        let event = next_event(&rx);
        match event {
            Event::Wake => {
                cx.take_downstream(&downstream, true);
            }
            Event::Tick(generation) => {
                if generation == cx.generation && cx.timer.take().is_some() {
                    operator.on_tick(&mut cx);
                }
            }
            Event::Next(source, item) if cx.is_live(source) => {
                operator.on_next(&mut cx, source, item)
            }
            Event::Complete(source) if cx.is_live(source) => {
                cx.upstreams[source].finished = true;
                operator.on_complete(&mut cx, source)
            }
            Event::Error(source, error) if cx.is_live(source) => {
                cx.upstreams[source].finished = true;
                operator.on_error(&mut cx, source, error)
            }
            // From an upstream this operator already cancelled (rule 2.8
            // lets a few signals follow a cancel), or after its end: dropped.
            Event::Next(..) | Event::Complete(_) | Event::Error(..) => {}
        }
    }
    cx.close_all();
    // Dropping `cx` drops the subscriber (rule 3.13) and cancels the timer.
}
// ANCHOR_END: run

fn next_event<I>(rx: &Receiver<Event<I>>) -> Event<I> {
    // The funnel holds a sender itself (for timers), so the channel never
    // disconnects while it runs.
    rx.recv().expect("the funnel holds a sender")
}

/// What the funnel coroutine knows and does: the subscriber, its demand,
/// the upstreams, the timer. Operators get it as `cx`.
pub struct Funnel<I, U> {
    down: Box<dyn Subscriber<U>>,
    /// Items the subscriber requested and has not been sent (`u64::MAX`:
    /// unbounded, rule 3.17).
    demand: u64,
    tx: Sender<Event<I>>,
    upstreams: Vec<Upstream>,
    /// Generation of the timer armed last; a tick of any other is stale.
    generation: u64,
    timer: Option<Call>,
    ended: bool,
}

struct Upstream {
    cell: Arc<UpCell>,
    /// It sent its terminal signal.
    finished: bool,
    /// This operator cancelled it (its late signals are dropped).
    closed: bool,
}

impl<I: Send + 'static, U: Send + 'static> Funnel<I, U> {
    /// Subscribe to `flux`, whose items come to the operator as they are.
    pub fn subscribe(&mut self, flux: &Flux<I>) -> Source {
        self.subscribe_with(flux, |item| item)
    }

    /// Subscribe to `flux`, whose items come to the operator through
    /// `wrap` (to tell two upstreams of different types apart). Nothing is
    /// requested yet: see [`Funnel::request`].
    pub fn subscribe_with<T: Send + 'static>(
        &mut self,
        flux: &Flux<T>,
        wrap: fn(T) -> I,
    ) -> Source {
        let source = self.upstreams.len();
        let cell = Arc::new(UpCell::default());
        self.upstreams.push(Upstream {
            cell: cell.clone(),
            finished: false,
            closed: false,
        });
        flux.subscribe(Forwarder {
            source,
            tx: self.tx.clone(),
            cell,
            wrap,
        });
        source
    }

    /// Ask `source` for `n` more items (`n` of 0 asks for nothing).
    pub fn request(&self, source: Source, n: u64) {
        let upstream = &self.upstreams[source];
        if n > 0 && !upstream.finished && !upstream.closed {
            upstream.cell.request(n);
        }
    }

    /// Cancel `source`; its later signals never reach the operator.
    pub fn cancel(&mut self, source: Source) {
        let upstream = &mut self.upstreams[source];
        if !upstream.closed {
            upstream.closed = true;
            upstream.cell.close();
        }
    }

    /// Whether `source` has ended (completed, failed, or was cancelled).
    pub fn is_over(&self, source: Source) -> bool {
        let upstream = &self.upstreams[source];
        upstream.finished || upstream.closed
    }

    /// Items the subscriber requested and has not been sent yet.
    pub fn demand(&self) -> u64 {
        self.demand
    }

    /// Send one item downstream. Only within demand (rule 1.1): an
    /// operator emits from `flush`, after checking [`Funnel::demand`].
    pub fn emit(&mut self, item: U) {
        debug_assert!(self.demand > 0, "an operator emitted without demand");
        if self.ended {
            return;
        }
        if self.demand != u64::MAX {
            self.demand = self.demand.saturating_sub(1);
        }
        self.down.on_next(item);
    }

    /// End the stream normally; every upstream still running is cancelled.
    pub fn complete(&mut self) {
        if !self.ended {
            self.end();
            self.down.on_complete();
        }
    }

    /// End the stream with `error`; every upstream still running is
    /// cancelled. Only the first end reaches the subscriber (rule 1.7).
    pub fn fail(&mut self, error: Error) {
        if !self.ended {
            self.end();
            self.down.on_error(error);
        }
    }

    /// Whether the stream is over (ended, or cancelled by the subscriber).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Arm the timer to go off after `after` (replacing any armed timer).
    pub fn arm(&mut self, after: Duration) {
        self.arm_at(Instant::now() + after);
    }

    // ANCHOR: arm
    /// Arm the timer to go off at `at` (replacing any armed timer). The
    /// alarm has no 1 ms floor: any length works.
    pub fn arm_at(&mut self, at: Instant) {
        self.generation += 1;
        let generation = self.generation;
        let tx = self.tx.clone();
        // Dropping the old `Call` cancels it; had it already been sent, its
        // generation no longer matches.
        self.timer = Some(alarm::shared().call_at(at, move || {
            let _ = tx.send(Event::Tick(generation));
        }));
    }
    // ANCHOR_END: arm

    /// Cancel the armed timer, if any.
    pub fn disarm(&mut self) {
        self.generation += 1;
        self.timer = None;
    }

    /// Whether a timer is armed and has not gone off yet.
    pub fn is_armed(&self) -> bool {
        self.timer.is_some()
    }

    /// Whether a signal from `source` still counts: not after this
    /// operator cancelled it, nor after its own end (rule 1.7, enforced
    /// here against an upstream that breaks it).
    fn is_live(&self, source: Source) -> bool {
        let upstream = &self.upstreams[source];
        !upstream.closed && !upstream.finished
    }

    fn end(&mut self) {
        self.ended = true;
        self.close_all();
    }

    fn close_all(&mut self) {
        self.disarm();
        for source in 0..self.upstreams.len() {
            self.cancel(source);
        }
    }

    /// Take the subscriber's new demand and cancel; true if the stream is
    /// over because of them. `woken`: this is the funnel taking a `Wake`
    /// event, so the next change must post another.
    fn take_downstream(&mut self, downstream: &Downstream<I>, woken: bool) -> bool {
        let state = {
            let mut state = downstream.lock();
            if woken {
                state.woken = false;
            }
            DownState {
                added: std::mem::take(&mut state.added),
                ..*state
            }
        };
        self.demand = self.demand.saturating_add(state.added);
        if state.cancelled {
            // A cancelled stream gets no further signal (rule 3.6, 3.7).
            self.end();
        } else if state.invalid {
            self.fail(Error::NonPositiveRequest); // rule 3.9
        } else if state.orphaned && self.demand == 0 {
            // No subscription is left to ask for more: stop the upstreams.
            self.end();
        }
        self.ended
    }
}

/// The subscriber's side: demand and cancel, and the wake-up that tells the
/// funnel to look. At most one wake-up is in the channel at a time.
struct Downstream<I> {
    state: Mutex<DownState>,
    /// may's `Sender` is `Send` but not `Sync`; the lock is held for one
    /// send, which never parks.
    tx: Mutex<Sender<Event<I>>>,
}

#[derive(Default, Clone, Copy)]
struct DownState {
    /// Requested since the funnel last looked.
    added: u64,
    cancelled: bool,
    invalid: bool,
    orphaned: bool,
    /// A wake-up is in the channel and not yet taken.
    woken: bool,
}

impl<I> Downstream<I> {
    fn lock(&self) -> MutexGuard<'_, DownState> {
        // Nothing panics while holding it; recover rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply `change` and wake the funnel unless a wake-up is already on
    /// its way. Critical sections are a few field updates: no yield inside.
    fn update(&self, change: impl FnOnce(&mut DownState)) {
        let wake = {
            let mut state = self.lock();
            change(&mut state);
            !std::mem::replace(&mut state.woken, true)
        };
        if wake {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            let _ = tx.send(Event::Wake); // fails only once the funnel ended
        }
    }
}

/// The control behind the subscription a funnel hands downstream.
struct DownControl<I>(Arc<Downstream<I>>);

impl<I: Send + 'static> Control for DownControl<I> {
    fn request(&self, n: u64) {
        self.0.update(|state| {
            if n == 0 {
                state.invalid = true;
            } else {
                state.added = state.added.saturating_add(n);
            }
        });
    }

    fn cancel(&self) {
        self.0.update(|state| state.cancelled = true);
    }
}

impl<I> Drop for DownControl<I> {
    fn drop(&mut self) {
        self.0.update(|state| state.orphaned = true);
    }
}

/// One upstream's subscription, which may arrive after the operator has
/// already requested (kept as pending) or cancelled (cancelled on arrival).
/// The std `Mutex` is held for a few field updates, never across a call.
#[derive(Default)]
struct UpCell {
    state: Mutex<UpState>,
}

#[derive(Default)]
struct UpState {
    subscription: Option<Subscription>,
    pending: u64,
    closed: bool,
}

impl UpCell {
    fn lock(&self) -> MutexGuard<'_, UpState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attach(&self, subscription: Subscription) {
        let pending = {
            let mut state = self.lock();
            if state.closed {
                None
            } else {
                state.subscription = Some(subscription.clone());
                Some(std::mem::take(&mut state.pending))
            }
        };
        match pending {
            None => subscription.cancel(),
            Some(0) => {}
            Some(n) => subscription.request(n),
        }
    }

    fn request(&self, n: u64) {
        let subscription = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if state.subscription.is_none() {
                state.pending = state.pending.saturating_add(n);
            }
            state.subscription.clone()
        };
        if let Some(subscription) = subscription {
            subscription.request(n);
        }
    }

    fn close(&self) {
        let subscription = {
            let mut state = self.lock();
            state.closed = true;
            state.subscription.take()
        };
        if let Some(subscription) = subscription {
            subscription.cancel();
        }
    }
}

/// The subscriber a funnel gives each upstream: it forwards every signal
/// into the funnel's channel, tagged with the upstream's number. It runs on
/// the upstream's coroutine and never calls the operator.
struct Forwarder<T, I> {
    source: Source,
    tx: Sender<Event<I>>,
    cell: Arc<UpCell>,
    wrap: fn(T) -> I,
}

impl<T: Send + 'static, I: Send + 'static> Forwarder<T, I> {
    fn forward(&self, event: Event<I>) {
        if self.tx.send(event).is_err() {
            // The funnel has ended: stop this upstream too.
            self.cell.close();
        }
    }
}

impl<T: Send + 'static, I: Send + 'static> Subscriber<T> for Forwarder<T, I> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.cell.attach(subscription);
    }
    fn on_next(&mut self, item: T) {
        self.forward(Event::Next(self.source, (self.wrap)(item)));
    }
    fn on_error(&mut self, error: Error) {
        self.forward(Event::Error(self.source, error));
    }
    fn on_complete(&mut self) {
        self.forward(Event::Complete(self.source));
    }
}

/// Per-upstream credit for operators that hold items: items requested and
/// not yet passed on (in flight, or held by the operator). Topping up keeps
/// it at `limit`, asking in batches of at least half of it.
#[derive(Debug, Clone, Copy)]
pub struct Credit {
    source: Source,
    limit: u64,
    used: u64,
}

impl Credit {
    /// Credit of `limit` items (at least 1) for `source`; nothing asked yet.
    pub fn new(source: Source, limit: usize) -> Credit {
        Credit {
            source,
            limit: limit.max(1) as u64,
            used: 0,
        }
    }

    /// The upstream this credit is for.
    pub fn source(&self) -> Source {
        self.source
    }

    /// One item was passed on (or dropped): its unit of credit is free.
    pub fn release(&mut self) {
        self.used = self.used.saturating_sub(1);
    }

    /// Ask for more once half the credit is free.
    pub fn top_up<I: Send + 'static, U: Send + 'static>(&mut self, cx: &Funnel<I, U>) {
        let free = self.limit - self.used;
        if free > 0 && free * 2 >= self.limit {
            cx.request(self.source, free);
            self.used = self.limit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control that records what it was asked.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Control for Recorder {
        fn request(&self, n: u64) {
            self.0.lock().unwrap().push(format!("request {n}"));
        }
        fn cancel(&self) {
            self.0.lock().unwrap().push("cancel".into());
        }
    }

    impl Recorder {
        fn calls(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn demand_asked_before_the_subscription_arrives_is_made_on_arrival() {
        let cell = UpCell::default();
        cell.request(3);
        cell.request(4);
        let recorder = Recorder::default();
        cell.attach(Subscription::new(recorder.clone()));
        cell.request(1);
        assert_eq!(recorder.calls(), ["request 7", "request 1"]);
    }

    #[test]
    fn a_subscription_that_arrives_after_the_close_is_cancelled() {
        let cell = UpCell::default();
        cell.request(3);
        cell.close();
        let recorder = Recorder::default();
        cell.attach(Subscription::new(recorder.clone()));
        cell.request(1);
        assert_eq!(recorder.calls(), ["cancel"]);
    }

    #[test]
    fn credit_asks_again_once_half_is_free() {
        crate::runtime::configure_for_tests();
        // A funnel with one upstream whose subscription records requests.
        let recorder = Recorder::default();
        let (tx, _rx) = mpsc::channel::<Event<u8>>();
        let (_probe, subscriber) = super::super::Probe::<u8>::new();
        let cell = Arc::new(UpCell::default());
        cell.attach(Subscription::new(recorder.clone()));
        let cx = Funnel {
            down: Box::new(subscriber),
            demand: 0,
            tx,
            upstreams: vec![Upstream {
                cell,
                finished: false,
                closed: false,
            }],
            generation: 0,
            timer: None,
            ended: false,
        };
        let mut credit = Credit::new(0, 4);
        credit.top_up(&cx);
        credit.release();
        credit.top_up(&cx); // 1 of 4 free: not yet
        credit.release();
        credit.top_up(&cx); // 2 of 4 free: ask for 2
        assert_eq!(recorder.calls(), ["request 4", "request 2"]);
    }
}
