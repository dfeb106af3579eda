//! Ending a pool: finish or cancel what is queued, then wait for every
//! worker, so no worker coroutine outlives its pool.

use std::mem;
use std::sync::atomic::Ordering;

use super::handle::JobId;
use super::queue::Msg;
use super::shared::lock;
use super::{Pool, Stats};

/// What happens to the jobs still queued when a pool shuts down. Jobs
/// already running always run to their end: a job is never stopped halfway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Run every queued job, then end.
    Drain,
    /// Run none of them: each one's handle reports
    /// [`JobError::Cancelled`](super::JobError) and its id is in the
    /// [`Report`].
    Cancel,
}

/// What a pool did, once every worker has ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// Jobs that ran to their end (panicked ones are in `stats.panicked`).
    pub completed: u64,
    /// Jobs cancelled by [`Shutdown::Cancel`], in id order.
    pub cancelled: Vec<JobId>,
    /// The pool's counters at the end; `stats.workers` is 0.
    pub stats: Stats,
}

impl Pool {
    /// Stop accepting jobs, deal with the queued ones as `how` says, and
    /// return when every worker has ended.
    ///
    /// Called from a coroutine it parks while it waits; from a thread it
    /// blocks. Never call it from one of the pool's own jobs: that job's
    /// worker would wait for itself.
    pub fn shutdown(mut self, how: Shutdown) -> Report {
        self.finish(how)
    }

    // ANCHOR: shutdown
    /// The shutdown sequence; `Drop` runs it with [`Shutdown::Drain`].
    pub(crate) fn finish(&mut self, how: Shutdown) -> Report {
        self.close(); // submits fail with Closed from here on
        if let Some(scaler) = self.scaler.take() {
            scaler.stop(); // no worker starts or retires after this
        }
        let shared = &*self.shared;
        if how == Shutdown::Cancel {
            // Workers drop what they take from now on; we empty the rest.
            shared.cancelling.store(true, Ordering::SeqCst);
            while let Ok(message) = shared.queue.try_recv() {
                match message {
                    Msg::Job(task) => shared.cancel(task),
                    Msg::Retire => {
                        shared.counts.retiring.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
        // The last sender: the queue's end marker goes in behind the last
        // job, and each worker ends when it reaches it.
        drop(self.sender.take());
        let workers = mem::take(&mut *lock(&shared.workers));
        for worker in workers {
            // A worker's loop cannot panic (jobs' panics are caught).
            let _ = worker.join();
        }
        let mut cancelled = mem::take(&mut *lock(&shared.cancelled));
        cancelled.sort_unstable();
        let stats = shared.stats();
        Report {
            completed: stats.completed,
            cancelled,
            stats,
        }
    }
    // ANCHOR_END: shutdown
}

impl Drop for Pool {
    /// Drain the queue and wait for every worker, as
    /// `shutdown(Shutdown::Drain)` does: dropping a pool neither loses
    /// accepted jobs nor leaves workers behind. So the last `Arc` of a pool
    /// must not be dropped by one of its own jobs (that worker would wait
    /// for itself).
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.finish(Shutdown::Drain);
        }
    }
}
