//! A recording subscriber for tests and listings: the handle side requests,
//! cancels and waits; the subscriber side records every signal and checks
//! the rules a publisher must keep towards it.
//!
//! It checks, as signals arrive: `on_subscribe` once and first (rule 1.9),
//! no more `on_next` than the probe requested (1.1), nothing after a
//! terminal signal (1.7), and no two callbacks at once (1.3, with a
//! [`SerialCheck`]). [`Probe::violations`] lists what went wrong.
//!
//! The waits block the calling thread or park the calling coroutine on a
//! may `Condvar` (a may timer is armed only for the whole wait, once).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::sync::{Condvar, Mutex, MutexGuard};

use super::{Error, Signal, Subscriber, Subscription};

/// Counts callbacks that overlap: each callback holds a [`SerialGuard`] while
/// it runs, and entering while another guard is alive is an overlap. Clones
/// share one count, so several subscribers can be checked as one.
#[derive(Clone, Default)]
pub struct SerialCheck {
    inner: Arc<SerialInner>,
}

#[derive(Default)]
struct SerialInner {
    active: AtomicUsize,
    overlaps: AtomicU64,
}

/// Proof that a callback is running; dropping it ends the callback.
pub struct SerialGuard {
    inner: Arc<SerialInner>,
}

impl SerialCheck {
    /// A check with no overlaps seen.
    pub fn new() -> SerialCheck {
        SerialCheck::default()
    }

    /// A callback starts; keep the guard until it ends.
    pub fn enter(&self) -> SerialGuard {
        if self.inner.active.fetch_add(1, Ordering::AcqRel) > 0 {
            self.inner.overlaps.fetch_add(1, Ordering::Relaxed);
        }
        SerialGuard {
            inner: self.inner.clone(),
        }
    }

    /// How many callbacks started while another was running.
    pub fn overlaps(&self) -> u64 {
        self.inner.overlaps.load(Ordering::Relaxed)
    }
}

impl Drop for SerialGuard {
    fn drop(&mut self) {
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request or cancel made before the subscription arrived.
enum Pending {
    Request(u64),
    Cancel,
}

struct State<T> {
    signals: Vec<Signal<T>>,
    subscription: Option<Subscription>,
    pending: Vec<Pending>,
    subscribed: usize,
    /// Demand the probe asked for, saturating (`u64::MAX`: unbounded).
    requested: u64,
    nexts: u64,
    terminated: bool,
    violations: Vec<String>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    serial: SerialCheck,
    /// The subscriber side was dropped (by the publisher, rule 3.13).
    dropped: AtomicBool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a signal under the lock and wake the waiters.
    fn record(&self, check: impl FnOnce(&mut State<T>)) {
        let _running = self.serial.enter();
        let mut state = self.lock();
        check(&mut state);
        drop(state);
        self.changed.notify_all();
    }
}

/// The handle side of a probe.
pub struct Probe<T> {
    shared: Arc<Shared<T>>,
}

/// The subscriber side of a probe: give it to `Flux::subscribe`.
pub struct ProbeSubscriber<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + 'static> Probe<T> {
    /// A probe that has requested nothing yet.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Probe<T>, ProbeSubscriber<T>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                signals: Vec::new(),
                subscription: None,
                pending: Vec::new(),
                subscribed: 0,
                requested: 0,
                nexts: 0,
                terminated: false,
                violations: Vec::new(),
            }),
            changed: Condvar::new(),
            serial: SerialCheck::new(),
            dropped: AtomicBool::new(false),
        });
        (
            Probe {
                shared: shared.clone(),
            },
            ProbeSubscriber { shared },
        )
    }

    /// `request(n)` on the subscription (held until it arrives, then made).
    pub fn request(&self, n: u64) {
        let subscription = {
            let mut state = self.shared.lock();
            state.requested = state.requested.saturating_add(n);
            match &state.subscription {
                Some(subscription) => subscription.clone(),
                None => return state.pending.push(Pending::Request(n)),
            }
        };
        subscription.request(n)
    }

    /// `cancel()` on the subscription (held until it arrives, then made).
    pub fn cancel(&self) {
        let subscription = {
            let mut state = self.shared.lock();
            match &state.subscription {
                Some(subscription) => subscription.clone(),
                None => return state.pending.push(Pending::Cancel),
            }
        };
        subscription.cancel()
    }

    /// The subscription, once `on_subscribe` has brought it.
    pub fn subscription(&self) -> Option<Subscription> {
        self.shared.lock().subscription.clone()
    }

    /// Whether `on_error` or `on_complete` has arrived.
    pub fn is_terminated(&self) -> bool {
        self.shared.lock().terminated
    }

    /// How many `on_next` have arrived.
    pub fn next_count(&self) -> u64 {
        self.shared.lock().nexts
    }

    /// The rule breaches seen so far, one sentence each; empty if none.
    pub fn violations(&self) -> Vec<String> {
        let mut found = self.shared.lock().violations.clone();
        let overlaps = self.shared.serial.overlaps();
        if overlaps > 0 {
            found.push(format!("1.3: {overlaps} callbacks overlapped another"));
        }
        found
    }

    /// Wait until the publisher has dropped the subscriber side, up to
    /// `timeout`; whether it did.
    pub fn wait_dropped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !self.shared.dropped.load(Ordering::Acquire) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Wait until `pred` holds for the state or `timeout` passes.
    fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&State<T>) -> bool,
    ) -> MutexGuard<'_, State<T>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !pred(&state) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state
    }
}

impl<T: Clone + Send + 'static> Probe<T> {
    /// Every signal so far (not `on_subscribe`), in order.
    pub fn signals(&self) -> Vec<Signal<T>> {
        self.shared.lock().signals.clone()
    }

    /// The items so far, in order.
    pub fn items(&self) -> Vec<T> {
        items(&self.shared.lock().signals)
    }

    /// Wait until `count` items have arrived or the stream ended, up to
    /// `timeout`; every signal so far.
    pub fn wait(&self, count: u64, timeout: Duration) -> Vec<Signal<T>> {
        self.wait_until(timeout, |s| s.nexts >= count || s.terminated)
            .signals
            .clone()
    }

    /// Wait until the stream ended, up to `timeout`; every signal so far
    /// (the last is the terminal one if it came in time).
    pub fn wait_terminal(&self, timeout: Duration) -> Vec<Signal<T>> {
        self.wait_until(timeout, |s| s.terminated).signals.clone()
    }
}

fn items<T: Clone>(signals: &[Signal<T>]) -> Vec<T> {
    signals
        .iter()
        .filter_map(|signal| match signal {
            Signal::Next(item) => Some(item.clone()),
            _ => None,
        })
        .collect()
}

impl<T> State<T> {
    fn check_started(&mut self, what: &str) {
        if self.subscribed == 0 {
            self.violations
                .push(format!("1.9: {what} before on_subscribe"));
        }
        if self.terminated {
            self.violations
                .push(format!("1.7: {what} after the stream ended"));
        }
    }

    fn end(&mut self, signal: Signal<T>, what: &str) {
        self.check_started(what);
        self.terminated = true;
        self.signals.push(signal);
    }
}

impl<T: Send + 'static> Subscriber<T> for ProbeSubscriber<T> {
    fn on_subscribe(&mut self, subscription: Subscription) {
        let mut pending = Vec::new();
        self.shared.record(|state| {
            state.subscribed += 1;
            if state.subscribed > 1 {
                state
                    .violations
                    .push("1.9: on_subscribe called again".into());
                return;
            }
            if !state.signals.is_empty() {
                state
                    .violations
                    .push("1.9: on_subscribe after other signals".into());
            }
            state.subscription = Some(subscription.clone());
            pending = std::mem::take(&mut state.pending);
        });
        // Outside the lock: a subscription's request may run other code.
        for held in pending {
            match held {
                Pending::Request(n) => subscription.request(n),
                Pending::Cancel => subscription.cancel(),
            }
        }
    }

    fn on_next(&mut self, item: T) {
        self.shared.record(|state| {
            state.check_started("on_next");
            state.nexts += 1;
            if state.requested != u64::MAX && state.nexts > state.requested {
                let (n, r) = (state.nexts, state.requested);
                state
                    .violations
                    .push(format!("1.1: on_next number {n} with only {r} requested"));
            }
            state.signals.push(Signal::Next(item));
        })
    }

    fn on_error(&mut self, error: Error) {
        self.shared
            .record(|state| state.end(Signal::Error(error), "on_error"))
    }

    fn on_complete(&mut self) {
        self.shared
            .record(|state| state.end(Signal::Complete, "on_complete"))
    }
}

impl<T> Drop for ProbeSubscriber<T> {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Ordering::Release);
        // Take the lock so a waiter between its check and its wait sees it.
        drop(self.shared.lock());
        self.shared.changed.notify_all();
    }
}
