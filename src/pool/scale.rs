//! Dynamic scaling: the scaler thread, its rule, and the history it keeps.
//!
//! A pool with `min < max` runs one scaler on its own OS thread (not a may
//! worker, so it can wait a tick with a plain timed `recv` and no may
//! timer). Every [`tick`](super::Config::tick) it records a [`Sample`] and
//! applies its rule:
//!
//! - **grow** by one worker, up to `max`, when the oldest job not yet started
//!   has waited at least `grow_after` (time parked on a full queue counts:
//!   the caller has been waiting);
//! - **shrink** when a whole window of `idle` has passed in which some
//!   workers were never needed: the fewest spare workers seen during the
//!   window (at every job's start and every tick; a queued job means none
//!   was spare) retire at once, down to `min`;
//! - a grow starts a new window, and so does a shrink.
//!
//! That is the hysteresis: a grow needs a waiting job, a shrink needs a
//! worker spare for all of `idle`, and the two cannot both hold within one
//! window. A load that comes and goes faster than `idle` keeps the pool at
//! the size its peaks need instead of shrinking it in every lull and growing
//! it again at every peak; a lull longer than `idle` gives the spare workers
//! back. Growing one worker a tick means a burst the current workers clear
//! within `grow_after` adds nobody.
//!
//! Workers retire by message: the scaler sends one `Retire` per worker into
//! the queue, where some idle worker parked in `recv` takes it and ends. No
//! worker waits with a timeout, so no may timer is armed per idle worker.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::config::Config;
use super::queue::Msg;
use super::shared::{lock, Shared};
use super::worker;
use crate::bounded::{Sender, TrySendError};

/// Samples a pool keeps: the latest ones, about 100 s at a 10 ms tick.
pub const TIMELINE_LEN: usize = 10_000;

/// Scale events a pool keeps: the latest ones.
pub const EVENTS_LEN: usize = 1_000;

/// The pool as the scaler saw it at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Since the pool started.
    pub at: Duration,
    /// Workers running, not counting those told to retire.
    pub workers: usize,
    /// Workers inside a job.
    pub busy: usize,
    /// Jobs in the queue.
    pub queued: usize,
}

/// Which way the pool changed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    Grew,
    Shrank,
}

/// One change of the pool's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    /// Since the pool started.
    pub at: Duration,
    pub kind: ScaleKind,
    /// Workers after the change.
    pub workers: usize,
    /// Why, in a few words.
    pub reason: &'static str,
}

/// Why a pool grows.
pub const GREW_BECAUSE: &str = "the oldest job waited grow_after";
/// Why a pool shrinks.
pub const SHRANK_BECAUSE: &str = "workers spare for idle";

/// The latest samples and events, each bounded.
#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
    events: Mutex<VecDeque<ScaleEvent>>,
}

impl History {
    pub(crate) fn sample(&self, sample: Sample) {
        push_bounded(&mut lock(&self.samples), sample, TIMELINE_LEN);
    }

    pub(crate) fn event(&self, event: ScaleEvent) {
        push_bounded(&mut lock(&self.events), event, EVENTS_LEN);
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).iter().copied().collect()
    }

    pub(crate) fn events(&self) -> Vec<ScaleEvent> {
        lock(&self.events).iter().copied().collect()
    }
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T, len: usize) {
    if list.len() == len {
        list.pop_front();
    }
    list.push_back(item);
}

/// What the rule is told at each tick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) at: Duration,
    pub(crate) workers: usize,
    pub(crate) queued: usize,
    /// How long the oldest job not yet started has waited.
    pub(crate) oldest_wait: Option<Duration>,
    /// The fewest spare workers since the last tick.
    pub(crate) spare_low: usize,
}

/// What the rule decided at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Stay,
    Grow,
    Shrink(usize),
}

/// The scaling rule and its window (see the module comment). A pure state
/// machine over [`Seen`]s, so its hysteresis is tested tick by tick.
pub(crate) struct Rule {
    min: usize,
    max: usize,
    idle: Duration,
    grow_after: Duration,
    /// When the current window began.
    window_from: Duration,
    /// The fewest spare workers seen in it.
    window_spare: usize,
}

impl Rule {
    pub(crate) fn new(config: &Config) -> Rule {
        Rule {
            min: config.min,
            max: config.max,
            idle: config.idle,
            grow_after: config.grow_after,
            window_from: Duration::ZERO,
            window_spare: usize::MAX,
        }
    }

    // ANCHOR: scale_rule
    /// One tick: grow, shrink or stay (the rule is in the module comment).
    pub(crate) fn decide(&mut self, seen: Seen) -> Decision {
        // A job waiting in the queue means no worker was spare.
        let spare = if seen.queued > 0 { 0 } else { seen.spare_low };
        self.window_spare = self.window_spare.min(spare);
        let waited_too_long = seen.oldest_wait.is_some_and(|w| w >= self.grow_after);
        if waited_too_long && seen.workers < self.max {
            self.new_window(seen.at);
            return Decision::Grow;
        }
        if seen.at.saturating_sub(self.window_from) >= self.idle {
            // Workers that were spare for the whole window retire, down to min.
            let never_needed = self.window_spare.min(seen.workers.saturating_sub(self.min));
            self.new_window(seen.at);
            if never_needed > 0 {
                return Decision::Shrink(never_needed);
            }
        }
        Decision::Stay
    }
    // ANCHOR_END: scale_rule

    fn new_window(&mut self, at: Duration) {
        self.window_from = at;
        self.window_spare = usize::MAX;
    }
}

/// A running scaler thread.
pub(crate) struct Scaler {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Scaler {
    /// Start the scaler; `queue` is its own sender, for `Retire` messages.
    pub(crate) fn start(shared: Arc<Shared>, queue: Sender<Msg>) -> Scaler {
        let (stop, stopped) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("pool-scaler".into())
            .spawn(move || run(&shared, &queue, &stopped))
            .expect("the OS refused to start the pool's scaler thread");
        Scaler { stop, thread }
    }

    /// Stop the scaler and wait for it: no worker starts or retires after.
    pub(crate) fn stop(self) {
        drop(self.stop);
        // The scaler's code does not panic; if it did, the pool stops scaling.
        let _ = self.thread.join();
    }
}

fn run(shared: &Arc<Shared>, queue: &Sender<Msg>, stopped: &mpsc::Receiver<()>) {
    let mut rule = Rule::new(&shared.config);
    // A std channel's timed receive: this is an OS thread, not a coroutine.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(shared.config.tick) {
        let seen = look(shared);
        shared.history.sample(Sample {
            at: seen.at,
            workers: seen.workers,
            busy: shared.counts.busy.load(Ordering::SeqCst),
            queued: seen.queued,
        });
        match rule.decide(seen) {
            Decision::Stay => {}
            Decision::Grow => {
                worker::spawn(shared);
                shared.counts.grown.fetch_add(1, Ordering::SeqCst);
                shared.history.event(ScaleEvent {
                    at: seen.at,
                    kind: ScaleKind::Grew,
                    workers: seen.workers + 1,
                    reason: GREW_BECAUSE,
                });
            }
            Decision::Shrink(count) => {
                let retired = (0..count).take_while(|_| retire_one(shared, queue)).count();
                if retired > 0 {
                    shared.history.event(ScaleEvent {
                        at: seen.at,
                        kind: ScaleKind::Shrank,
                        workers: seen.workers - retired,
                        reason: SHRANK_BECAUSE,
                    });
                }
            }
        }
    }
}

/// What the rule needs, read from the counters.
fn look(shared: &Shared) -> Seen {
    let now = std::time::Instant::now();
    let workers = shared.workers();
    let busy = shared.counts.busy.load(Ordering::SeqCst);
    // Start the next interval's low-water mark from the spare count now.
    let spare_now = workers.saturating_sub(busy);
    let spare_low = shared
        .counts
        .spare_low
        .swap(spare_now, Ordering::SeqCst)
        .min(spare_now);
    Seen {
        at: now.duration_since(shared.started),
        workers,
        queued: shared.queued(),
        oldest_wait: shared.waiting.oldest().map(|at| now.duration_since(at)),
        spare_low,
    }
}

/// Ask one idle worker to end. The queue is all but empty when the rule
/// shrinks, so it has room; if a burst has just filled it, fewer workers
/// retire and the rule looks again after its next window.
fn retire_one(shared: &Shared, queue: &Sender<Msg>) -> bool {
    shared.counts.retiring.fetch_add(1, Ordering::SeqCst);
    match queue.try_send(Msg::Retire) {
        Ok(()) => {
            shared.counts.shrunk.fetch_add(1, Ordering::SeqCst);
            true
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            shared.counts.retiring.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }
}
