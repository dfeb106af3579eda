//! The state a pool's handle, its workers and its scaler share: the queue's
//! receiving end, the book of waiting jobs, counters, history and the
//! workers' join handles.
//!
//! It holds no sending end of the queue: the queue's end marker goes out
//! when the pool's own sender (and the scaler's) drop, which is how workers
//! learn that the queue is finished, and workers keep this state alive.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use may::coroutine::JoinHandle;

use super::config::Config;
use super::handle::JobId;
use super::queue::{Msg, Ran, Task, Waiting};
use super::scale::History;
use super::Stats;
use crate::bounded::Receiver;

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) started: Instant,
    /// New workers take a clone of it.
    pub(crate) queue: Receiver<Msg>,
    pub(crate) waiting: Waiting,
    pub(crate) counts: Counts,
    /// Set by [`Shutdown::Cancel`](super::Shutdown): workers drop the jobs
    /// they take instead of running them.
    pub(crate) cancelling: AtomicBool,
    pub(crate) cancelled: Mutex<Vec<JobId>>,
    pub(crate) history: History,
    /// Join handles of the workers started, so shutdown can wait for every
    /// one; the handles of retired workers are pruned at each start.
    pub(crate) workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Counters, each updated with one atomic operation.
#[derive(Default)]
pub(crate) struct Counts {
    /// Worker coroutines that have started and not yet ended.
    pub(crate) live: AtomicUsize,
    /// `Retire` messages sent and not yet taken: those workers are leaving.
    pub(crate) retiring: AtomicUsize,
    /// Workers inside a job.
    pub(crate) busy: AtomicUsize,
    /// The fewest spare workers (not busy, not leaving) seen at a job's
    /// start since the scaler last looked; the scaler resets it each tick.
    pub(crate) spare_low: AtomicUsize,
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) grown: AtomicU64,
    pub(crate) shrunk: AtomicU64,
    pub(crate) queue_high_water: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(config: Config, queue: Receiver<Msg>) -> Shared {
        Shared {
            config,
            started: Instant::now(),
            queue,
            waiting: Waiting::default(),
            counts: Counts {
                spare_low: AtomicUsize::new(usize::MAX),
                ..Counts::default()
            },
            cancelling: AtomicBool::new(false),
            cancelled: Mutex::new(Vec::new()),
            history: History::default(),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Workers that are not leaving: the pool's size as the scaler sees it.
    pub(crate) fn workers(&self) -> usize {
        let c = &self.counts;
        c.live
            .load(Ordering::SeqCst)
            .saturating_sub(c.retiring.load(Ordering::SeqCst))
    }

    /// Jobs in the queue (the queue also carries `Retire` messages).
    pub(crate) fn queued(&self) -> usize {
        let retiring = self.counts.retiring.load(Ordering::SeqCst);
        self.queue.len().saturating_sub(retiring)
    }

    /// The queue accepted a job.
    pub(crate) fn accepted(&self) {
        self.counts.submitted.fetch_add(1, Ordering::SeqCst);
        let depth = self.queued();
        self.counts
            .queue_high_water
            .fetch_max(depth, Ordering::SeqCst);
    }

    /// A worker starts a job: one fewer spare worker.
    pub(crate) fn job_started(&self) {
        let busy = self.counts.busy.fetch_add(1, Ordering::SeqCst) + 1;
        let spare = self.workers().saturating_sub(busy);
        self.counts.spare_low.fetch_min(spare, Ordering::SeqCst);
    }

    /// A worker finished a job, one way or the other.
    pub(crate) fn job_ended(&self, ran: Ran) {
        let counter = match ran {
            Ran::Completed => &self.counts.completed,
            Ran::Panicked => &self.counts.panicked,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.counts.busy.fetch_sub(1, Ordering::SeqCst);
    }

    /// Drop `task` unrun: its handle reports [`JobError::Cancelled`](super::JobError).
    pub(crate) fn cancel(&self, task: Task) {
        self.waiting.forget(task.id);
        lock(&self.cancelled).push(task.id);
        self.counts.cancelled.fetch_add(1, Ordering::SeqCst);
        drop(task);
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counts;
        Stats {
            workers: c.live.load(Ordering::SeqCst),
            busy: c.busy.load(Ordering::SeqCst),
            queued: self.queued(),
            submitted: c.submitted.load(Ordering::SeqCst),
            completed: c.completed.load(Ordering::SeqCst),
            panicked: c.panicked.load(Ordering::SeqCst),
            cancelled: c.cancelled.load(Ordering::SeqCst),
            grown: c.grown.load(Ordering::SeqCst),
            shrunk: c.shrunk.load(Ordering::SeqCst),
            queue_high_water: c.queue_high_water.load(Ordering::SeqCst),
        }
    }
}

/// Lock one of the pool's std mutexes. Each is held for a push, a take or a
/// copy, never across a park, and nothing inside can panic, so a poisoned
/// lock still guards sound data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
