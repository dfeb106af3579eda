//! Hot publishers: [`Hot`] is fed by whoever calls [`Hot::emit`] (any
//! coroutine, any thread), and every subscriber gets the items emitted after
//! it subscribed, not the ones before (a cold [`Flux`] runs anew for each
//! subscriber; a hot one is shared and does not wait for anyone).
//!
//! The emitter does not ask for demand, so a subscriber slower than the
//! emitter needs a rule for the items it cannot take yet. Each subscriber
//! picks its own [`Backpressure`]:
//!
//! - `Buffer(n)`: hold up to `n`; when they are full, `emit` waits until
//!   this subscriber takes one. Backpressure reaches the source: nothing is
//!   lost, but a slow subscriber then slows every other subscriber too,
//!   since the emitter hands each item to each subscriber in turn;
//! - `Drop(n)`: hold up to `n`; when full, drop the new item (counted);
//! - `Latest`: hold one, and let a newer item overwrite it (counted);
//! - `Error(n)`: hold up to `n`; when full, end this subscriber's stream
//!   with [`Error::Overflow`] (the others go on);
//! - `Unbounded`: hold everything. Memory then grows as long as the
//!   subscriber is slower than the emitter: the chapter's pitfall.
//!
//! Each subscription has a delivery coroutine that sends the held items
//! within the subscriber's demand (rule 1.1); every callback of that
//! subscriber runs on it. Held items, demand and flags sit behind a may
//! `Mutex` (it parks a coroutine rather than blocking its thread), with two
//! may `Condvar`s: one wakes the delivery coroutine, one wakes an emitter
//! waiting for room in a `Buffer`. `complete` and `error` reach each
//! subscriber after the items already held for it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::sync::{Condvar, Mutex, MutexGuard};

use super::{Control, Error, Flux, Publisher, Subscriber, Subscription};

// ANCHOR: backpressure
/// What a hot publisher does with items a slow subscriber has not asked for
/// yet. Each subscriber chooses its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Hold up to this many; when full, the emitter waits for room.
    Buffer(usize),
    /// Hold up to this many; when full, drop the newest item.
    Drop(usize),
    /// Hold one; a newer item overwrites it.
    Latest,
    /// Hold up to this many; when full, fail with [`Error::Overflow`].
    Error(usize),
    /// Hold everything: memory grows without bound (the pitfall).
    Unbounded,
}
// ANCHOR_END: backpressure

impl Backpressure {
    /// The most items held for one subscriber, `None` for no limit.
    pub fn capacity(self) -> Option<usize> {
        match self {
            Backpressure::Buffer(n) | Backpressure::Drop(n) | Backpressure::Error(n) => Some(n),
            Backpressure::Latest => Some(1),
            Backpressure::Unbounded => None,
        }
    }
}

impl fmt::Display for Backpressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backpressure::Buffer(n) => write!(f, "Buffer({n})"),
            Backpressure::Drop(n) => write!(f, "Drop({n})"),
            Backpressure::Latest => f.write_str("Latest"),
            Backpressure::Error(n) => write!(f, "Error({n})"),
            Backpressure::Unbounded => f.write_str("Unbounded"),
        }
    }
}

/// What happened to the items of the subscribers that chose one strategy,
/// summed over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyStats {
    /// The strategy.
    pub strategy: Backpressure,
    /// Subscribers that chose it, so far.
    pub subscribers: u64,
    /// Items sent to them with `on_next`.
    pub delivered: u64,
    /// Items dropped for them (`Drop`: the newest; `Latest`: overwritten).
    pub dropped: u64,
    /// Subscribers whose stream ended with [`Error::Overflow`].
    pub overflowed: u64,
    /// The most items ever held for any one of them at once.
    pub high_water: usize,
}

/// A snapshot of a hot publisher's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotStats {
    /// Items passed to [`Hot::emit`] before the stream ended.
    pub emitted: u64,
    /// One entry per strategy chosen so far, in the order first chosen.
    pub strategies: Vec<StrategyStats>,
}

impl HotStats {
    /// The counters of `strategy`, if a subscriber chose it.
    pub fn of(&self, strategy: Backpressure) -> Option<&StrategyStats> {
        self.strategies.iter().find(|s| s.strategy == strategy)
    }
}

/// One strategy's counters, shared by its subscribers' lanes.
struct Counters {
    strategy: Backpressure,
    subscribers: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    overflowed: AtomicU64,
    high_water: AtomicUsize,
}

impl Counters {
    fn snapshot(&self) -> StrategyStats {
        StrategyStats {
            strategy: self.strategy,
            subscribers: self.subscribers.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
            high_water: self.high_water.load(Ordering::Relaxed),
        }
    }
}

/// How the emitter ended the stream.
#[derive(Clone)]
enum End {
    Complete,
    Error(Error),
}

// ANCHOR: lane
/// One subscriber's side of a hot publisher.
struct Lane<T> {
    strategy: Backpressure,
    state: Mutex<LaneState<T>>,
    /// Wakes the delivery coroutine: an item, demand, an end, a cancel.
    changed: Condvar,
    /// Wakes emitters waiting for room in a `Buffer`.
    room: Condvar,
    /// Set once this lane takes no more items; the emitter skips it and
    /// forgets it at its next emit.
    closed: AtomicBool,
    counters: Arc<Counters>,
}

struct LaneState<T> {
    held: VecDeque<T>,
    /// Requested and not yet delivered (`u64::MAX`: unbounded, rule 3.17).
    demand: u64,
    cancelled: bool,
    /// `request(0)` was called (rule 3.9).
    invalid: bool,
    /// The emitter ended the stream: sent after the held items.
    end: Option<End>,
    /// `Error(n)` overflowed: sent at once, the held items dropped.
    overflow: bool,
}
// ANCHOR_END: lane

/// What the delivery coroutine does next.
enum Step<T> {
    Next(T),
    End(End),
    Stop,
}

impl<T> Lane<T> {
    fn lock(&self) -> MutexGuard<'_, LaneState<T>> {
        // Nothing panics while holding it; recover rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.room.notify_all(); // an emitter waiting for room gives up
    }

    // ANCHOR: offer
    /// Hand `item` to this lane by its strategy. Only `Buffer` can wait.
    fn offer(&self, item: T) {
        let mut state = self.lock();
        if let Backpressure::Buffer(capacity) = self.strategy {
            while state.held.len() >= capacity && !self.closed.load(Ordering::SeqCst) {
                state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let full = self
            .strategy
            .capacity()
            .is_some_and(|capacity| state.held.len() >= capacity);
        match self.strategy {
            Backpressure::Drop(_) if full => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Backpressure::Latest if full => {
                state.held.clear();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Backpressure::Error(_) if full => {
                state.held.clear();
                state.overflow = true;
                self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
                self.close();
                drop(state);
                return self.changed.notify_one();
            }
            _ => {}
        }
        state.held.push_back(item);
        self.counters
            .high_water
            .fetch_max(state.held.len(), Ordering::Relaxed);
        drop(state);
        self.changed.notify_one();
    }
    // ANCHOR_END: offer

    /// The emitter ended the stream.
    fn finish(&self, end: End) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        self.close();
        drop(state);
        self.changed.notify_one();
    }

    /// Park until there is something to do for the subscriber.
    fn next_step(&self) -> Step<T> {
        let mut state = self.lock();
        loop {
            if state.cancelled {
                return Step::Stop;
            }
            if state.invalid {
                state.cancelled = true;
                self.close();
                return Step::End(End::Error(Error::NonPositiveRequest));
            }
            if state.overflow {
                let capacity = self.strategy.capacity().unwrap_or(0);
                state.cancelled = true;
                return Step::End(End::Error(Error::Overflow { capacity }));
            }
            if state.demand > 0 {
                if let Some(item) = state.held.pop_front() {
                    if state.demand != u64::MAX {
                        state.demand -= 1;
                    }
                    self.room.notify_one();
                    return Step::Next(item);
                }
            }
            if state.held.is_empty() {
                if let Some(end) = state.end.take() {
                    state.cancelled = true;
                    return Step::End(end);
                }
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The subscription of one lane.
struct LaneControl<T>(Arc<Lane<T>>);

impl<T: Send + 'static> Control for LaneControl<T> {
    fn request(&self, n: u64) {
        let mut state = self.0.lock();
        if n == 0 {
            state.invalid = true;
        } else {
            state.demand = state.demand.saturating_add(n);
        }
        drop(state);
        self.0.changed.notify_one();
    }

    fn cancel(&self) {
        let mut state = self.0.lock();
        state.cancelled = true;
        state.held.clear();
        self.0.close();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// Closes its lane when the delivery coroutine ends, however it ends: a
/// subscriber whose callback panicked must not leave an emitter waiting
/// for room in a buffer nobody will empty.
struct CloseOnExit<T>(Arc<Lane<T>>);

impl<T> Drop for CloseOnExit<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.cancelled = true;
        state.held.clear();
        self.0.close();
    }
}

/// The delivery coroutine of one subscription.
fn deliver<T: Send + 'static>(lane: Arc<Lane<T>>, mut subscriber: Box<dyn Subscriber<T>>) {
    let _close = CloseOnExit(lane.clone());
    subscriber.on_subscribe(Subscription::new(LaneControl(lane.clone())));
    loop {
        match lane.next_step() {
            Step::Next(item) => {
                lane.counters.delivered.fetch_add(1, Ordering::Relaxed);
                subscriber.on_next(item);
            }
            Step::End(End::Complete) => return subscriber.on_complete(),
            Step::End(End::Error(error)) => return subscriber.on_error(error),
            Step::Stop => return,
        }
    }
}

/// A hot publisher: call [`Hot::emit`] from anywhere, subscribe through
/// [`Hot::flux`]. Clones share one stream.
pub struct Hot<T: Clone + Send + 'static> {
    shared: Arc<HotShared<T>>,
}

impl<T: Clone + Send + 'static> Clone for Hot<T> {
    fn clone(&self) -> Self {
        Hot {
            shared: self.shared.clone(),
        }
    }
}

struct HotShared<T> {
    /// A may `Mutex`: emitters and subscribers take it for a few field
    /// updates; no lane is offered an item under it (a `Buffer` may wait).
    state: Mutex<HotState<T>>,
    /// Notified when a subscriber arrives ([`Hot::wait_for_subscribers`]).
    subscribed: Condvar,
}

struct HotState<T> {
    lanes: Vec<Arc<Lane<T>>>,
    counters: Vec<Arc<Counters>>,
    emitted: u64,
    end: Option<End>,
}

impl<T: Clone + Send + 'static> Default for Hot<T> {
    fn default() -> Self {
        Hot::new()
    }
}

impl<T: Clone + Send + 'static> Hot<T> {
    /// A hot publisher with no subscriber yet.
    pub fn new() -> Hot<T> {
        Hot {
            shared: Arc::new(HotShared {
                state: Mutex::new(HotState {
                    lanes: Vec::new(),
                    counters: Vec::new(),
                    emitted: 0,
                    end: None,
                }),
                subscribed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HotState<T>> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A flux whose subscribers each get the items emitted from then on,
    /// held for them by `strategy`.
    pub fn flux(&self, strategy: Backpressure) -> Flux<T> {
        Flux::new(HotFlux {
            hot: self.clone(),
            strategy,
        })
    }

    // ANCHOR: emit
    /// Hand `item` to every subscriber, by each one's strategy. Waits while
    /// a `Buffer` subscriber's buffer is full. Ignored after the stream
    /// ended (rule 1.7).
    pub fn emit(&self, item: T) {
        let lanes = {
            let mut state = self.lock();
            if state.end.is_some() {
                return;
            }
            state.emitted += 1;
            state
                .lanes
                .retain(|lane| !lane.closed.load(Ordering::SeqCst));
            state.lanes.clone()
        };
        for lane in &lanes {
            lane.offer(item.clone());
        }
    }
    // ANCHOR_END: emit

    /// Subscribers that are still taking items.
    pub fn subscribers(&self) -> usize {
        let state = self.lock();
        live(&state.lanes)
    }

    // ANCHOR: wait_for_subscribers
    /// Wait until at least `count` subscribers are taking items, up to
    /// `timeout`; whether they are. An operator with a coroutine of its own
    /// (`flat_map`, `switch_map`, the time and combining operators)
    /// subscribes to its upstream from that coroutine, a moment after
    /// `subscribe` returned: an item emitted in between is not seen, as
    /// for any late subscriber. A program that must not lose its first
    /// items waits here before it emits them.
    pub fn wait_for_subscribers(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while live(&state.lanes) < count {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            state = match self.shared.subscribed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
    // ANCHOR_END: wait_for_subscribers

    /// End the stream: each subscriber gets `on_complete` after the items
    /// held for it; later subscribers get it at once.
    pub fn complete(&self) {
        self.end(End::Complete)
    }

    /// End the stream with `error`, as [`Hot::complete`] does.
    pub fn error(&self, error: Error) {
        self.end(End::Error(error))
    }

    fn end(&self, end: End) {
        let lanes = {
            let mut state = self.lock();
            if state.end.is_some() {
                return;
            }
            state.end = Some(end.clone());
            std::mem::take(&mut state.lanes)
        };
        for lane in lanes {
            lane.finish(end.clone());
        }
    }

    /// What happened so far, per strategy.
    pub fn stats(&self) -> HotStats {
        let state = self.lock();
        HotStats {
            emitted: state.emitted,
            strategies: state.counters.iter().map(|c| c.snapshot()).collect(),
        }
    }

    /// Register a lane for a new subscriber; its strategy's counters are
    /// found or created.
    fn add_lane(&self, strategy: Backpressure) -> Arc<Lane<T>> {
        let mut state = self.lock();
        let counters = match state.counters.iter().find(|c| c.strategy == strategy) {
            Some(counters) => counters.clone(),
            None => {
                let counters = Arc::new(Counters {
                    strategy,
                    subscribers: AtomicU64::new(0),
                    delivered: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                    overflowed: AtomicU64::new(0),
                    high_water: AtomicUsize::new(0),
                });
                state.counters.push(counters.clone());
                counters
            }
        };
        counters.subscribers.fetch_add(1, Ordering::Relaxed);
        let lane = Arc::new(Lane {
            strategy,
            state: Mutex::new(LaneState {
                held: VecDeque::new(),
                demand: 0,
                cancelled: false,
                invalid: false,
                end: state.end.clone(),
                overflow: false,
            }),
            changed: Condvar::new(),
            room: Condvar::new(),
            closed: AtomicBool::new(state.end.is_some()),
            counters,
        });
        if state.end.is_none() {
            state.lanes.push(lane.clone());
        }
        drop(state);
        self.shared.subscribed.notify_all();
        lane
    }
}

/// How many of `lanes` still take items.
fn live<T>(lanes: &[Arc<Lane<T>>]) -> usize {
    lanes
        .iter()
        .filter(|lane| !lane.closed.load(Ordering::SeqCst))
        .count()
}

/// The publisher behind [`Hot::flux`].
struct HotFlux<T: Clone + Send + 'static> {
    hot: Hot<T>,
    strategy: Backpressure,
}

impl<T: Clone + Send + 'static> Publisher<T> for HotFlux<T> {
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<T>>) {
        if self.strategy.capacity() == Some(0) {
            let message = format!(
                "{}: a subscriber's buffer needs room for at least 1 item",
                self.strategy
            );
            may::go!(move || {
                let (subscription, _demand) = super::Demand::new();
                subscriber.on_subscribe(subscription);
                subscriber.on_error(Error::failed(message));
            });
            return;
        }
        // Registered now, before subscribe returns: an item emitted after
        // this call reaches the subscriber, one emitted before does not.
        let lane = self.hot.add_lane(self.strategy);
        may::go!(move || deliver(lane, subscriber));
    }
}
