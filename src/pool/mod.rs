//! A worker pool a program keeps for its whole life: a bounded submission
//! queue, worker coroutines between `min` and `max`, job handles with results
//! and panics, and a shutdown that drains or cancels (the worker-pool
//! chapter).
//!
//! - [`config`]: sizes and timings, checked ([`Config::check`]).
//! - [`handle`]: a job's [`JobHandle`], its result or [`JobError`], its [`Timing`].
//! - [`fork_join`]: a [`ForkJoinPool`] of OS threads for recursive CPU work,
//!   jobs that fork jobs ([`Scheduling::Stealing`] or one shared queue).
//! - `queue`: what the bounded queue carries, and the book of waiting jobs
//!   that tells the scaler how long the oldest has waited.
//! - `worker`: the worker coroutine's loop; a job's panic is caught there.
//! - [`scale`]: the scaler thread and its rule (grow, shrink, hysteresis),
//!   with the [`Sample`]s and [`ScaleEvent`]s it records.
//! - [`shutdown`]: [`Shutdown::Drain`] or [`Shutdown::Cancel`], the
//!   [`Report`], and `Drop`.
//!
//! Where code runs: jobs run on worker coroutines, spawned with
//! [`Config::stack_size`]; `submit` parks the calling coroutine (or blocks
//! the calling thread) while the queue is full; the scaler, when `min <
//! max`, is one OS thread that wakes every tick. A job must not block its
//! worker's OS thread (std sockets, `std::thread::sleep`, file I/O): hand
//! such work to [`crate::blocking`].
//!
//! ```
//! use may_patterns::pool::{Config, JobError, Pool, Shutdown};
//!
//! may_patterns::runtime::configure_for_tests();
//! let pool = Pool::new(Config::fixed(2, 8)).unwrap();
//! let square = pool.submit(|| 7 * 7).unwrap();
//! let broken = pool.submit(|| -> u32 { panic!("no input") }).unwrap();
//! assert_eq!(square.join(), Ok(49));
//! assert_eq!(broken.join(), Err(JobError::Panicked("no input".into())));
//! let report = pool.shutdown(Shutdown::Drain);
//! assert_eq!((report.completed, report.stats.panicked), (1, 1));
//! assert_eq!(report.stats.workers, 0); // every worker has ended
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::bounded::{self, Sender, TrySendError};

pub mod config;
pub mod fork_join;
pub mod handle;
mod queue;
pub mod scale;
mod shared;
pub mod shutdown;
mod worker;

pub use config::{Config, ConfigError};
pub use fork_join::{ForkJoinPool, ForkJoinStats, Scheduling};
pub use handle::{JobError, JobHandle, JobId, Timing};
pub use scale::{Sample, ScaleEvent, ScaleKind};
pub use shutdown::{Report, Shutdown};

use queue::Msg;
use scale::Scaler;
use shared::Shared;

/// A pool of worker coroutines. `Send + Sync`: share it with an `Arc`.
/// Dropping it drains the queue and waits for every worker.
pub struct Pool {
    shared: Arc<Shared>,
    /// The pool's own sender; `None` once shut down. When it and the
    /// scaler's drop, the queue ends and the workers with it.
    sender: Option<Sender<Msg>>,
    scaler: Option<Scaler>,
    closed: AtomicBool,
}

/// Why [`Pool::try_submit`] refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full right now.
    Full,
    /// The pool is closed or shutting down.
    Closed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full => f.write_str("the pool's queue is full"),
            SubmitError::Closed => Closed.fmt(f),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Why [`Pool::submit`] refused a job: the pool is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the pool is closed and takes no more jobs")
    }
}

impl std::error::Error for Closed {}

/// A pool's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Worker coroutines alive.
    pub workers: usize,
    /// Workers inside a job.
    pub busy: usize,
    /// Jobs in the queue.
    pub queued: usize,
    /// Jobs accepted.
    pub submitted: u64,
    /// Jobs that ran to their end.
    pub completed: u64,
    /// Jobs that panicked (their workers carried on).
    pub panicked: u64,
    /// Jobs cancelled by [`Shutdown::Cancel`].
    pub cancelled: u64,
    /// Workers the scaler added.
    pub grown: u64,
    /// Workers the scaler retired.
    pub shrunk: u64,
    /// The most jobs the queue has held at once (measured at each accepted
    /// job; never above [`Config::queue`]).
    pub queue_high_water: usize,
}

impl Pool {
    /// Check `config`, start `min` workers, and the scaler if `min < max`.
    pub fn new(config: Config) -> Result<Pool, ConfigError> {
        config.check()?;
        let (sender, queue) = bounded::channel(config.queue);
        let shared = Arc::new(Shared::new(config, queue));
        for _ in 0..shared.config.min {
            worker::spawn(&shared);
        }
        let scaler =
            (!shared.config.is_fixed()).then(|| Scaler::start(Arc::clone(&shared), sender.clone()));
        Ok(Pool {
            shared,
            sender: Some(sender),
            scaler,
            closed: AtomicBool::new(false),
        })
    }

    /// The configuration the pool runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    // ANCHOR: submit
    /// Queue `job`, parking the caller while the queue is full; its handle
    /// gives the result. Fails only once the pool is closed. A job that
    /// submits to its own pool and joins the handle can wait forever once
    /// every worker does the same: such jobs belong on the fork-join pool.
    pub fn submit<T, F>(&self, job: F) -> Result<JobHandle<T>, Closed>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let sender = self.open_sender().ok_or(Closed)?;
        let (completer, handle) = handle::pair();
        // Numbered and stamped before the send: time parked counts as waiting.
        let (id, submitted) = self.shared.waiting.reserve();
        let task = worker::task(id, submitted, job, completer);
        match sender.send(Msg::Job(task)) {
            Ok(()) => {
                self.shared.accepted();
                Ok(handle.numbered(id))
            }
            Err(_) => {
                self.shared.waiting.forget(id);
                Err(Closed)
            }
        }
    }
    // ANCHOR_END: submit

    /// Queue `job` if there is room now; never parks. On
    /// [`SubmitError::Full`] the job is dropped unrun and no id is used up:
    /// the caller sheds the load (answers "busy", counts it, retries later).
    pub fn try_submit<T, F>(&self, job: F) -> Result<JobHandle<T>, SubmitError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let sender = self.open_sender().ok_or(SubmitError::Closed)?;
        let (completer, handle) = handle::pair();
        let admitted = self.shared.waiting.admit(|id, submitted| {
            let task = worker::task(id, submitted, job, completer);
            sender.try_send(Msg::Job(task))
        });
        // A refused job is dropped here, outside the book's lock: its
        // captures' destructors are the caller's code.
        let id = admitted.map_err(|refused| match refused {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })?;
        self.shared.accepted();
        Ok(handle.numbered(id))
    }

    /// Refuse every later submit with [`Closed`]; jobs already accepted
    /// still run (or are cancelled by a later [`Shutdown::Cancel`]). For a
    /// pool shared through an `Arc`, whose owner cannot shut it down while
    /// others hold it. A submit already parked on a full queue when `close`
    /// is called still completes.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open_sender(&self) -> Option<&Sender<Msg>> {
        match self.closed.load(Ordering::SeqCst) {
            true => None,
            false => self.sender.as_ref(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// One [`Sample`] per scaler tick, the latest
    /// [`TIMELINE_LEN`](scale::TIMELINE_LEN); empty for a fixed pool.
    pub fn timeline(&self) -> Vec<Sample> {
        self.shared.history.samples()
    }

    /// Every change of size, the latest [`EVENTS_LEN`](scale::EVENTS_LEN).
    pub fn events(&self) -> Vec<ScaleEvent> {
        self.shared.history.events()
    }
}

#[cfg(test)]
mod tests;
