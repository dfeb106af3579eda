//! The circuit breaker itself: a state machine (closed, open, half-open)
//! with resilience4j's semantics, shared by every coroutine that calls one
//! dependency.
//!
//! All state sits under one std [`Mutex`], held for a few hundred
//! nanoseconds per call (a clock read, a few additions, at most one send per
//! subscriber) and never across a yield or a park: a may channel's `send`
//! only queues and unparks (may-0.3.51 `src/sync/mpsc.rs:39-48`), and the
//! caller's own work runs between [`Breaker::try_call`] and
//! [`Permit::success`] with no lock held. So a std mutex cannot block a may
//! worker for longer than any other short critical section.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use may::sync::mpsc;

use super::config::{BreakerConfig, ConfigError};
use super::state::{Reason, Snapshot, State, Transition};
use super::window::{Counts, Outcome, SlidingWindow};
use crate::clock::{Clock, MonotonicClock};

/// A circuit breaker. `Send + Sync`: share it with an `Arc` across
/// coroutines on any number of workers.
///
/// - **Closed**: every call goes through and its outcome (failed or not,
///   slow or not) enters the sliding window. Once the window holds at least
///   `min_calls` calls and the failure share reaches `failure_rate`, or the
///   slow share reaches `slow_call_rate`, the breaker opens.
/// - **Open**: [`try_call`](Breaker::try_call) returns [`Rejected`] at once,
///   with the time left until `open_for` has passed. There is no timer: the
///   first `try_call` after that moves the breaker to half-open.
/// - **Half-open**: at most `half_open_calls` permits are out. When all of
///   them have finished, the breaker closes if the probes' failure and slow
///   shares are under the thresholds, and opens again otherwise. It waits for
///   every probe, as resilience4j does, rather than opening on the first
///   failure: with 3 probes and a 50% threshold, one failure out of three
///   still closes it. A probe that never finishes keeps the breaker half-open,
///   so give the call a timeout (a dropped [`Permit`] counts as a failure).
///
/// Every change of state starts a new *generation*, and a permit's outcome
/// counts only in the generation that issued it: a slow call that began
/// before the breaker opened cannot later close it or open it again.
pub struct Breaker<C: Clock = MonotonicClock> {
    config: BreakerConfig,
    clock: C,
    inner: Mutex<Inner>,
}

/// Everything that changes, under the breaker's mutex.
struct Inner {
    state: State,
    generation: u64,
    /// When the breaker last opened (meaningful while open).
    opened_at: Duration,
    window: SlidingWindow,
    /// Probes handed out in this half-open generation.
    probes_out: u32,
    /// Probes finished in this half-open generation.
    probes: Counts,
    rejected: u64,
    stale: u64,
    subscribers: Vec<mpsc::Sender<Transition>>,
}

impl Breaker<MonotonicClock> {
    /// A breaker on the real clock, or the first setting that cannot work.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        Breaker::with_clock(config, MonotonicClock::new())
    }
}

impl<C: Clock> Breaker<C> {
    /// A breaker that reads time from `clock` (tests pass a
    /// [`ManualClock`](crate::clock::ManualClock)).
    pub fn with_clock(config: BreakerConfig, clock: C) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Breaker {
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                opened_at: Duration::ZERO,
                window: SlidingWindow::new(config.window),
                probes_out: 0,
                probes: Counts::default(),
                rejected: 0,
                stale: 0,
                subscribers: Vec::new(),
            }),
            config,
            clock,
        })
    }

    /// The settings this breaker decides by.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The clock this breaker reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    // ANCHOR: try_call
    /// Ask to make one call. Never blocks and never yields.
    ///
    /// `Ok(permit)`: make the call, then report how it went with
    /// [`Permit::success`] or [`Permit::failure`]. `Err(Rejected)`: do not
    /// call; `retry_after` is the time until the breaker lets probes through
    /// (zero when it is half-open with every probe out: it cannot know when
    /// they finish).
    pub fn try_call(&self) -> Result<Permit<'_, C>, Rejected> {
        let mut inner = self.lock();
        // Read under the lock, so the times the window sees never go back.
        let now = self.clock.now();
        if inner.state == State::Open {
            let until = inner.opened_at.saturating_add(self.config.open_for);
            if now < until {
                inner.rejected += 1;
                return Err(Rejected {
                    retry_after: until - now,
                });
            }
            inner.move_to(State::HalfOpen, now, Reason::OpenElapsed);
        }
        if inner.state == State::HalfOpen {
            if inner.probes_out == self.config.half_open_calls {
                inner.rejected += 1;
                return Err(Rejected {
                    retry_after: Duration::ZERO,
                });
            }
            inner.probes_out += 1;
        }
        Ok(Permit {
            breaker: self,
            generation: inner.generation,
            started: now,
            reported: false,
        })
    }
    // ANCHOR_END: try_call

    /// Run `f` through the breaker: rejected at once when it is open, else
    /// `f`'s `Err` counts as a failure and its `Ok` as a success (a panic in
    /// `f` counts as a failure too, and goes on unwinding).
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>> {
        let permit = self.try_call().map_err(CallError::Rejected)?;
        match f() {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(error) => {
                permit.failure();
                Err(CallError::Failed(error))
            }
        }
    }

    /// The state as of the last call. An open breaker whose `open_for` has
    /// passed still reads `Open` until the next [`try_call`](Self::try_call)
    /// moves it (no timer thread does it behind the callers' backs).
    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Every transition from now on, in the order they happen, on a may
    /// channel of its own (a coroutine can `recv` it, so can a thread). The
    /// breaker sends while it holds its lock, so every subscriber sees the
    /// same order; a subscriber whose receiver is gone is dropped at the next
    /// transition.
    pub fn subscribe(&self) -> mpsc::Receiver<Transition> {
        let (tx, rx) = mpsc::channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// The state and the window's counts now, for a timeline.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let now = self.clock.now();
        let counts = match inner.state {
            State::Closed => inner.window.counts(now),
            State::HalfOpen => inner.probes,
            State::Open => Counts::default(),
        };
        Snapshot {
            at: now,
            state: inner.state,
            calls: counts.calls,
            failures: counts.failures,
            slow: counts.slow,
            failure_rate: counts.failure_rate(),
            slow_call_rate: counts.slow_rate(),
            rejected: inner.rejected,
            stale: inner.stale,
        }
    }

    // ANCHOR: record
    /// A permit's outcome: into the window (closed) or the probes
    /// (half-open), then decide whether the state changes.
    fn record(&self, generation: u64, started: Duration, failed: bool) {
        let mut inner = self.lock();
        let now = self.clock.now();
        if generation != inner.generation {
            // Issued before the last change of state: it says nothing about
            // the dependency as the breaker now sees it.
            inner.stale += 1;
            return;
        }
        let outcome = Outcome {
            failed,
            slow: now.saturating_sub(started) > self.config.slow_call,
        };
        let config = &self.config;
        match inner.state {
            State::Closed => {
                inner.window.record(now, outcome);
                let counts = inner.window.counts(now);
                if counts.calls >= config.min_calls {
                    if counts.failure_rate() >= config.failure_rate {
                        let reason = Reason::FailureRate(counts.failure_rate());
                        inner.move_to(State::Open, now, reason);
                    } else if counts.slow_rate() >= config.slow_call_rate {
                        let reason = Reason::SlowCallRate(counts.slow_rate());
                        inner.move_to(State::Open, now, reason);
                    }
                }
            }
            State::HalfOpen => {
                inner.probes.add(outcome);
                let probes = inner.probes;
                if probes.calls == config.half_open_calls {
                    if probes.failure_rate() >= config.failure_rate
                        || probes.slow_rate() >= config.slow_call_rate
                    {
                        inner.move_to(State::Open, now, Reason::ProbeFailed);
                    } else {
                        inner.move_to(State::Closed, now, Reason::ProbesPassed);
                    }
                }
            }
            // No permit is issued while open, and opening starts a new
            // generation, so an outcome cannot get here.
            State::Open => inner.stale += 1,
        }
    }
    // ANCHOR_END: record

    /// The lock is never held across a panic point that could leave the
    /// state half-updated, so a poisoned mutex (a panic elsewhere while it
    /// was held) still guards consistent data.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Change state: a new generation with an empty window and no probes,
    /// and one event to every live subscriber.
    fn move_to(&mut self, to: State, at: Duration, reason: Reason) {
        let transition = Transition {
            from: self.state,
            to,
            at,
            reason,
        };
        self.state = to;
        self.generation += 1;
        self.window.clear();
        self.probes_out = 0;
        self.probes = Counts::default();
        if to == State::Open {
            self.opened_at = at;
        }
        self.subscribers.retain(|tx| tx.send(transition).is_ok());
    }
}

impl<C: Clock> fmt::Debug for Breaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("config", &self.config)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

// ANCHOR: permit
/// Leave to make one call through a [`Breaker`]. Report the outcome with
/// [`success`](Permit::success) or [`failure`](Permit::failure); the time
/// from [`Breaker::try_call`] to that report, by the breaker's clock,
/// decides whether the call was slow. A permit dropped without a report (a
/// panic, a cancelled coroutine, an early return) counts as a failure.
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Permit<'a, C: Clock = MonotonicClock> {
    breaker: &'a Breaker<C>,
    generation: u64,
    started: Duration,
    reported: bool,
}

impl<C: Clock> Permit<'_, C> {
    /// The call succeeded (it may still have been slow).
    pub fn success(mut self) {
        self.report(false);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.report(true);
    }

    fn report(&mut self, failed: bool) {
        self.reported = true;
        self.breaker.record(self.generation, self.started, failed);
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    fn drop(&mut self) {
        if !self.reported {
            self.report(true);
        }
    }
}
// ANCHOR_END: permit

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("generation", &self.generation)
            .field("started", &self.started)
            .finish()
    }
}

/// The breaker refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Time until the breaker lets probes through (zero when it is half-open
    /// and waiting for the probes already out).
    pub retry_after: Duration,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.retry_after.is_zero() {
            f.write_str("circuit breaker half-open: every probe is out")
        } else {
            write!(
                f,
                "circuit breaker open: retry after {:?}",
                self.retry_after
            )
        }
    }
}

impl std::error::Error for Rejected {}

/// Why [`Breaker::call`] did not return a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The breaker refused the call; the function did not run.
    Rejected(Rejected),
    /// The function ran and failed.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(rejected) => rejected.fmt(f),
            CallError::Failed(error) => write!(f, "call failed: {error}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CallError<E> {}
