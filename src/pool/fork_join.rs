//! A fork-join pool for recursive CPU work: jobs that spawn jobs.
//!
//! [`ForkJoinPool::install`] runs a root job on one of the pool's workers;
//! any job forks with [`Worker::join`], which has `rayon::join`'s contract.
//! How forked jobs are shared is the pool's [`Scheduling`]:
//!
//! - [`Scheduling::Stealing`]: every worker has its own deque
//!   (crossbeam-deque, the Chase-Lev deque rayon uses). A worker pushes the
//!   jobs it forks at the back and pops them there (newest first: depth
//!   first, data still in cache, and almost always without contention); an
//!   idle worker steals from the front of another's deque (the oldest job,
//!   near the root: the biggest piece of work one steal can get).
//! - [`Scheduling::SharedQueue`]: one FIFO queue for every job, the
//!   baseline: each fork and each take is an operation on the same shared
//!   queue, and the oldest job comes out first.
//!
//! A worker whose forked job was stolen does not block: it helps, running
//! other queued jobs until the thief is done, and parks only when there is
//! nothing to help with; an idle worker looks a few rounds, then parks too.
//!
//! # Where the workers run: OS threads
//!
//! The workers are OS threads, not may coroutines. A CPU-bound job never
//! parks, and may switches coroutines only when one parks: a job on a may
//! worker would hold that worker's OS thread (its run queue and the sockets
//! only it polls) for as long as it computes. With a job on every may
//! worker, every coroutine of the program would wait for the sort. On threads of its own the pool competes for
//! cores through the OS scheduler instead, like rayon's pool. `install`
//! waits on a may channel, so a coroutine that calls it parks and frees its
//! may worker until the result comes back; a plain thread blocks.
//!
//! The pool's threads have `std`'s default stack (2 MiB, with a guard page:
//! an overflow aborts cleanly instead of corrupting memory as on a coroutine
//! stack). Helping runs other jobs on top of the waiting job's frames, at
//! most 64 deep: a worker at that depth only takes back its own job. The
//! stats report the deepest nesting seen ([`ForkJoinStats::deepest`]).
//!
//! ```
//! use may_patterns::pool::fork_join::quicksort;
//! use may_patterns::pool::{ForkJoinPool, Scheduling};
//!
//! let pool = ForkJoinPool::new(2, Scheduling::Stealing).unwrap();
//! let mut items: Vec<u32> = (0..10_000).rev().collect();
//! pool.install(|worker| quicksort(worker, &mut items, 100));
//! assert!(items.is_sorted());
//! assert_eq!(pool.stats().joins, pool.stats().local_pops + pool.stats().steals);
//! ```

mod job;
mod quicksort;
mod sleep;
mod worker;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_deque::{Injector, Stealer};

use super::ConfigError;
use job::{HeapJob, JobRef};
pub use quicksort::{quicksort, Fork, Sequential};
use sleep::Sleep;
pub use worker::Worker;

/// How a [`ForkJoinPool`] shares the jobs its workers fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// A deque per worker: local pushes and pops at the back (LIFO), steals
    /// from the front (FIFO).
    Stealing,
    /// One shared FIFO queue for every job (the baseline).
    SharedQueue,
}

/// What a pool's workers did since it started, summed over the workers.
/// Once `install` has returned (not panicked), `joins == local_pops + steals`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForkJoinStats {
    /// The pool's size.
    pub workers: usize,
    /// Root jobs run (one per `install` from outside the pool).
    pub roots: u64,
    /// Calls to [`Worker::join`].
    pub joins: u64,
    /// Forked jobs run by the worker that forked them.
    pub local_pops: u64,
    /// Forked jobs run by another worker (stolen from a deque, or taken
    /// from the shared queue by a worker that did not fork them).
    pub steals: u64,
    /// Times a worker parked because it found nothing to do.
    pub parks: u64,
    /// Workers parked (or about to park) right now: all of them, soon
    /// after the last job, since an idle pool does not spin.
    pub asleep: usize,
    /// The most jobs seen running at once on one worker's stack: 1 when no
    /// worker ever ran a job while it helped, more when helping nested.
    pub deepest: usize,
    /// Time workers at the nesting bound spent waiting for their own job
    /// instead of helping, summed over the workers.
    pub waited_at_bound: Duration,
}

/// One worker's counters, on a cache line of its own so that counting does
/// not slow the other workers down. Only that worker writes them.
#[derive(Default)]
#[repr(align(128))]
struct Counters {
    roots: AtomicU64,
    joins: AtomicU64,
    local_pops: AtomicU64,
    steals: AtomicU64,
    parks: AtomicU64,
    deepest: AtomicUsize,
    bound_nanos: AtomicU64,
}

/// What every worker of a pool can reach.
struct Shared {
    /// Root jobs; under `SharedQueue`, every job.
    injector: Injector<JobRef>,
    /// The front ends of the workers' deques (`Stealing` only; else empty).
    stealers: Vec<Stealer<JobRef>>,
    sleep: Sleep,
    counters: Vec<Counters>,
    ending: AtomicBool,
}

/// A fixed number of OS threads that run recursive jobs, forking with
/// [`Worker::join`]. Dropping the pool ends its threads (after any job in
/// progress: `install` borrows the pool, so none is).
pub struct ForkJoinPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl ForkJoinPool {
    /// Start `workers` threads (`fork-join-0`, `fork-join-1`, ...) that share
    /// forked jobs as `scheduling` says.
    ///
    /// Fails with [`ConfigError::NoWorkers`] when `workers` is 0.
    ///
    /// # Panics
    ///
    /// If the operating system refuses to start a thread.
    pub fn new(workers: usize, scheduling: Scheduling) -> Result<ForkJoinPool, ConfigError> {
        if workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        let deques = worker::deques(scheduling, workers);
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers: deques.iter().flatten().map(|d| d.stealer()).collect(),
            sleep: Sleep::new(workers),
            counters: (0..workers).map(|_| Counters::default()).collect(),
            ending: AtomicBool::new(false),
        });
        let threads = deques
            .into_iter()
            .enumerate()
            .map(|(index, deque)| {
                let shared = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("fork-join-{index}"))
                    .spawn(move || Worker::run(index, deque, shared))
                    .expect("the OS started a fork-join thread")
            })
            .collect();
        Ok(ForkJoinPool { shared, threads })
    }

    /// Run `job` on one of the pool's workers and return its result (or
    /// carry on its panic). From a coroutine, the coroutine parks meanwhile;
    /// from a job already on this pool, `job` runs right there.
    pub fn install<R, F>(&self, job: F) -> R
    where
        R: Send,
        F: FnOnce(&Worker) -> R + Send,
    {
        if let Some(worker) = Worker::current_in(&self.shared) {
            return job(worker);
        }
        let (done, result) = may::sync::mpsc::channel();
        let root = HeapJob::new(move |worker: &Worker| {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| job(worker)));
            // The receiver waits below, so the send cannot fail.
            let _ = done.send(outcome);
        });
        // SAFETY: `job` may borrow from this frame; we return only after
        // the root job has run and sent its outcome.
        self.shared.injector.push(unsafe { root.into_job_ref() });
        self.shared.sleep.new_work();
        match result.recv().expect("a worker runs every root job") {
            Ok(value) => value,
            Err(panic) => panic::resume_unwind(panic),
        }
    }

    /// The workers' counters, summed.
    pub fn stats(&self) -> ForkJoinStats {
        let sum = |field: fn(&Counters) -> &AtomicU64| {
            self.shared
                .counters
                .iter()
                .map(|c| field(c).load(Ordering::Relaxed))
                .sum()
        };
        ForkJoinStats {
            workers: self.threads.len(),
            roots: sum(|c| &c.roots),
            joins: sum(|c| &c.joins),
            local_pops: sum(|c| &c.local_pops),
            steals: sum(|c| &c.steals),
            parks: sum(|c| &c.parks),
            asleep: self.shared.sleep.asleep(),
            deepest: self
                .shared
                .counters
                .iter()
                .map(|c| c.deepest.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0),
            waited_at_bound: Duration::from_nanos(sum(|c| &c.bound_nanos)),
        }
    }
}

impl Drop for ForkJoinPool {
    fn drop(&mut self) {
        self.shared.ending.store(true, Ordering::SeqCst);
        self.shared.sleep.wake_all();
        for thread in self.threads.drain(..) {
            // A worker catches every job's panic, so it cannot have panicked.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
