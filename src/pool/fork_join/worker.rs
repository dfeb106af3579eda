//! One worker's thread: where it looks for work, how it runs a job, and what
//! it does while the other half of its `join` runs elsewhere (it helps).

use std::cell::Cell;
use std::panic;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_deque::{Steal, Stealer, Worker as Deque};

use super::job::{JobRef, StackJob, ROOT};
use super::{Counters, Scheduling, Shared};

/// Rounds a worker with nothing to do looks again (yielding its core in
/// between) before it parks: a job forked a moment later is taken without
/// the cost of a wake-up, and an idle pool still stops using the CPU.
const SPIN_ROUNDS: u32 = 64;

/// How many jobs may run nested on one thread's stack: at this depth, a
/// waiting worker runs only the job it waits for. Stealing stays far below
/// it (a thief takes the oldest, biggest job, so steals, and the helping
/// they cause, are rare). The shared FIFO queue hands a helping worker old,
/// big jobs that fork and wait in turn: before this bound, the chapter's
/// quicksort with slices of 32 nested jobs thousands deep that way and
/// overflowed a worker's 2 MiB stack.
pub(super) const MAX_NESTING: usize = 64;

thread_local! {
    /// The worker running on this OS thread, so `install` called from inside
    /// a job runs inline instead of waiting for itself. The pool's workers
    /// are OS threads, never coroutines, so a thread-local is sound here.
    static CURRENT: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

/// One of a [`ForkJoinPool`](super::ForkJoinPool)'s workers, as a job sees
/// it: every job gets `&Worker`, the place to fork more jobs from.
///
/// `Worker` is not `Sync`, so a `&Worker` cannot leave the thread it was
/// handed to: a job forks from the worker that runs it.
pub struct Worker {
    index: usize,
    /// `Stealing` only: this worker's deque (it pushes and pops at the back,
    /// thieves steal from the front).
    deque: Option<Deque<JobRef>>,
    shared: Arc<Shared>,
    /// Jobs running on this thread's stack at the moment: 1 for a job taken
    /// from the main loop, one more for each job run while helping.
    depth: Cell<usize>,
}

impl Worker {
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// This worker's number, from 0 to the pool's size minus one.
    pub fn index(&self) -> usize {
        self.index
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters[self.index]
    }

    /// The worker of `shared` running on this thread, if there is one.
    pub(super) fn current_in(shared: &Shared) -> Option<&Worker> {
        let current = CURRENT.with(Cell::get);
        // SAFETY: CURRENT points at the Worker on this thread's stack
        // in `run`, which outlives every job this thread runs.
        let worker = unsafe { current.as_ref()? };
        std::ptr::eq(worker.shared(), shared).then_some(worker)
    }

    /// A thread's whole life: take jobs until the pool ends.
    pub(super) fn run(index: usize, deque: Option<Deque<JobRef>>, shared: Arc<Shared>) {
        let worker = Worker {
            index,
            deque,
            shared,
            depth: Cell::new(0),
        };
        worker.shared.sleep.register(index);
        CURRENT.with(|current| current.set(&worker));
        let mut idle = 0;
        loop {
            if let Some(job) = worker.find_work() {
                worker.execute(job);
                idle = 0;
            } else if worker.shared.ending.load(Ordering::SeqCst) {
                break;
            } else if idle < SPIN_ROUNDS {
                idle += 1;
                thread::yield_now();
            } else {
                worker
                    .park(|| worker.shared.ending.load(Ordering::SeqCst) || worker.work_visible());
                idle = 0;
            }
        }
        CURRENT.with(|current| current.set(std::ptr::null()));
    }

    /// Queue a forked job where this pool's scheduling puts it.
    fn push(&self, job: JobRef) {
        match &self.deque {
            Some(deque) => deque.push(job),
            None => self.shared.injector.push(job),
        }
        self.shared.sleep.new_work();
    }

    /// Own deque first (newest job: its data is still in cache), then the
    /// shared queue, then the other workers' deques (their oldest job: the
    /// biggest piece of work, taken with one steal).
    fn find_work(&self) -> Option<JobRef> {
        if let Some(job) = self.deque.as_ref().and_then(Deque::pop) {
            return Some(job);
        }
        if let Some(job) = take(|| self.shared.injector.steal()) {
            return Some(job);
        }
        let stealers = &self.shared.stealers;
        (1..stealers.len())
            .map(|offset| &stealers[(self.index + offset) % stealers.len()])
            .find_map(|stealer: &Stealer<JobRef>| take(|| stealer.steal()))
    }

    /// Whether any queue holds a job (the last look before parking).
    fn work_visible(&self) -> bool {
        !self.shared.injector.is_empty() || self.shared.stealers.iter().any(|s| !s.is_empty())
    }

    /// Park, unless `stay_awake()` holds after all.
    fn park(&self, stay_awake: impl Fn() -> bool) {
        let parks = &self.counters().parks;
        let parking = || {
            parks.fetch_add(1, Ordering::Relaxed);
        };
        self.shared.sleep.sleep(self.index, stay_awake, parking);
    }

    /// Run a job taken from a queue, counting where it came from.
    fn execute(&self, job: JobRef) {
        let counters = self.counters();
        let counter = match job.owner {
            ROOT => &counters.roots,
            owner if owner == self.index => &counters.local_pops,
            _ => &counters.steals,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let depth = self.depth.get() + 1;
        self.depth.set(depth);
        counters.deepest.fetch_max(depth, Ordering::Relaxed);
        // SAFETY: taken out of a queue, so it exists and has not run.
        unsafe { job.run(self) };
        self.depth.set(depth - 1);
    }

    /// Run `a` and `b`, perhaps at the same time; both have finished when
    /// `join` returns. `rayon::join`'s contract: `a` runs on this worker,
    /// `b` here or on another worker; the closures may borrow from the
    /// caller's stack; a panic in either is carried on to the caller once
    /// neither runs any more (if `a` panics before `b` started, `b` is
    /// dropped without running).
    ///
    /// And its algorithm: queue `b`, run `a`, then take `b` back and run it
    /// here, unless a thief took it: then help (run other queued jobs) until
    /// the thief is done, and park when there is nothing to help with.
    // ANCHOR: join
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce(&Worker) -> RA + Send,
        B: FnOnce(&Worker) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        self.counters().joins.fetch_add(1, Ordering::Relaxed);
        let job_b = StackJob::new(b, self.index);
        // SAFETY: `job_b` stays in this frame until `wait_for` has taken it
        // back or seen it done, on every path out of this function.
        let b_ref = unsafe { job_b.as_job_ref() };
        self.push(b_ref);
        let ra = match panic::catch_unwind(panic::AssertUnwindSafe(|| a(self))) {
            Ok(ra) => ra,
            Err(panic) => {
                // `b` borrows this frame and may be running on a thief: wait
                // for it (taken back, it is dropped unrun) before unwinding.
                self.wait_for(&job_b, b_ref);
                panic::resume_unwind(panic)
            }
        };
        if self.wait_for(&job_b, b_ref) {
            self.counters().local_pops.fetch_add(1, Ordering::Relaxed);
            return (ra, job_b.run_inline(self));
        }
        match job_b.into_result() {
            Ok(rb) => (ra, rb),
            Err(panic) => panic::resume_unwind(panic),
        }
    }
    // ANCHOR_END: join

    /// Until `job` is done: take jobs and run them (below the nesting bound:
    /// any job; at it: only `job`). Returns true when the job taken is `job`
    /// itself (still to run, by the caller), false once a thief has run it.
    // ANCHOR: wait_for
    fn wait_for<F, R>(&self, job: &StackJob<F, R>, job_ref: JobRef) -> bool
    where
        F: FnOnce(&Worker) -> R + Send,
        R: Send,
    {
        // Depth is the same on every round: a job run here returns first.
        let nested = self.depth.get() >= MAX_NESTING;
        let at_bound = nested.then(Instant::now);
        let mut idle = 0;
        let mut taken_back = false;
        while !job.is_done() {
            let found = if nested {
                self.find(&job_ref)
            } else {
                self.find_work()
            };
            match found {
                Some(found) if found.is(&job_ref) => {
                    taken_back = true;
                    break;
                }
                Some(found) => {
                    self.execute(found);
                    idle = 0;
                }
                None if idle < SPIN_ROUNDS => {
                    idle += 1;
                    thread::yield_now();
                }
                // A thief runs it: wait for its wake-up.
                None if nested && job.is_started() => self.park(|| job.is_done()),
                None if nested => thread::yield_now(), // being taken right now
                None => {
                    self.park(|| job.is_done() || self.work_visible());
                    idle = 0;
                }
            }
        }
        if let Some(since) = at_bound {
            let waited = since.elapsed().as_nanos() as u64;
            self.counters()
                .bound_nanos
                .fetch_add(waited, Ordering::Relaxed);
        }
        taken_back
    }
    // ANCHOR_END: wait_for

    /// Take `wanted` out of the queues if it is still there. Under
    /// `Stealing` it can only be at the back of this worker's deque; the
    /// shared queue is turned over once, every other job going back in.
    fn find(&self, wanted: &JobRef) -> Option<JobRef> {
        if let Some(deque) = &self.deque {
            return deque.pop();
        }
        let queue = &self.shared.injector;
        for _ in 0..queue.len() {
            let job = take(|| queue.steal())?;
            if job.is(wanted) {
                return Some(job);
            }
            queue.push(job);
            // A worker may have gone to sleep while the job was out.
            self.shared.sleep.new_work();
        }
        None
    }
}

/// Steal until the queue answers with a job or says it is empty (`Retry`
/// means another thief raced us: try again).
fn take(mut steal: impl FnMut() -> Steal<JobRef>) -> Option<JobRef> {
    loop {
        match steal() {
            Steal::Success(job) => return Some(job),
            Steal::Empty => return None,
            Steal::Retry => continue,
        }
    }
}

/// Which queue a forked job goes to, decided once when the pool starts.
pub(super) fn deques(scheduling: Scheduling, workers: usize) -> Vec<Option<Deque<JobRef>>> {
    (0..workers)
        .map(|_| match scheduling {
            Scheduling::Stealing => Some(Deque::new_lifo()),
            Scheduling::SharedQueue => None,
        })
        .collect()
}
