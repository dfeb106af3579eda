//! Jobs as the queues hold them: a pointer and the function that runs it, so
//! one deque holds closures of every type, and the second half of a `join`
//! can stay on the forking worker's stack (no allocation per fork).
//!
//! This is the pool's only `unsafe` code. Each job type states what its
//! creator must guarantee; `Worker::join` and `ForkJoinPool::install` are the
//! only creators, and both wait for their job before returning.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use super::worker::Worker;

/// A panic caught on one worker, carried to the one waiting for the job.
pub(super) type Panic = Box<dyn Any + Send>;

/// The `owner` of a job no worker forked: `install`'s root job.
pub(super) const ROOT: usize = usize::MAX;

/// A queued job. `owner` is the index of the worker that forked it, so the
/// counters can tell a job run by its own worker from one that moved.
#[derive(Clone, Copy)]
pub(super) struct JobRef {
    data: *const (),
    run: unsafe fn(*const (), &Worker),
    pub(super) owner: usize,
}

// SAFETY: a JobRef is made only from a job whose closure and result are
// `Send`, and its creator keeps the job alive until it has run (below).
unsafe impl Send for JobRef {}

impl JobRef {
    /// Whether both refer to the same job (a live job's address is unique).
    pub(super) fn is(&self, other: &JobRef) -> bool {
        std::ptr::eq(self.data, other.data)
    }

    /// Run the job on `worker`.
    ///
    /// # Safety
    ///
    /// The job must still exist and must not have run before.
    pub(super) unsafe fn run(self, worker: &Worker) {
        unsafe { (self.run)(self.data, worker) }
    }
}

/// The second half of a `join`: it lives in `join`'s stack frame, and
/// `join` does not return before the job has run, here or on a thief.
pub(super) struct StackJob<F, R> {
    func: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<Result<R, Panic>>>,
    /// Set by a thief as it starts the job: the owner then knows the job is
    /// no longer in a queue, and can park until `done`.
    started: AtomicBool,
    done: AtomicBool,
    owner: usize,
}

impl<F, R> StackJob<F, R>
where
    F: FnOnce(&Worker) -> R + Send,
    R: Send,
{
    pub(super) fn new(func: F, owner: usize) -> Self {
        StackJob {
            func: UnsafeCell::new(Some(func)),
            result: UnsafeCell::new(None),
            started: AtomicBool::new(false),
            done: AtomicBool::new(false),
            owner,
        }
    }

    /// A reference for the queues.
    ///
    /// # Safety
    ///
    /// The caller keeps `self` where it is until [`StackJob::is_done`] says
    /// a thief ran it, or until it has taken the reference back out of the
    /// queues (and then runs it with [`StackJob::run_inline`] or not at all).
    pub(super) unsafe fn as_job_ref(&self) -> JobRef {
        JobRef {
            data: (self as *const Self).cast(),
            run: Self::execute,
            owner: self.owner,
        }
    }

    /// Run by a worker that took the job from a queue: catch a panic (the
    /// thief must survive it), keep the result, then tell the owner.
    unsafe fn execute(data: *const (), worker: &Worker) {
        // SAFETY: `as_job_ref`'s caller keeps the job alive until `done`.
        let this = unsafe { &*data.cast::<Self>() };
        this.started.store(true, Ordering::SeqCst);
        // SAFETY: only the one worker that took the job out touches it now.
        let func = unsafe { (*this.func.get()).take() }.expect("a job runs once");
        let result = panic::catch_unwind(AssertUnwindSafe(|| func(worker)));
        unsafe { *this.result.get() = Some(result) };
        let owner = this.owner;
        // From this store on, the owner may return and free the job: only
        // values copied out before it are used after it.
        this.done.store(true, Ordering::SeqCst);
        worker.shared().sleep.wake(owner);
    }

    /// Whether a worker other than the owner ran the job (SeqCst: the owner
    /// reads it after announcing that it goes to sleep; see `sleep.rs`).
    pub(super) fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Whether a thief has taken the job out of the queues and started it.
    pub(super) fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Run the job on its owner, which took it back before anyone stole it:
    /// a plain call, as if `join` had been sequential.
    pub(super) fn run_inline(self, worker: &Worker) -> R {
        let func = self.func.into_inner().expect("a job runs once");
        func(worker)
    }

    /// The result a thief left (or the panic it caught).
    pub(super) fn into_result(self) -> Result<R, Panic> {
        self.result
            .into_inner()
            .expect("into_result is called only once the job is done")
    }
}

/// `install`'s root job, on the heap: the caller of `install` is not a
/// worker, so the job cannot live on a worker's stack.
pub(super) struct HeapJob<F> {
    func: F,
}

impl<F> HeapJob<F>
where
    F: FnOnce(&Worker) + Send,
{
    pub(super) fn new(func: F) -> Box<Self> {
        Box::new(HeapJob { func })
    }

    /// A reference for the queues, which now own the job.
    ///
    /// # Safety
    ///
    /// `F` may borrow from the caller's stack: the caller must not return
    /// before the job has run (`install` waits for the result it sends).
    pub(super) unsafe fn into_job_ref(self: Box<Self>) -> JobRef {
        JobRef {
            data: Box::into_raw(self).cast_const().cast(),
            run: Self::execute,
            owner: ROOT,
        }
    }

    unsafe fn execute(data: *const (), worker: &Worker) {
        // SAFETY: made by `into_job_ref` from a Box, and run once.
        let this = unsafe { Box::from_raw(data.cast::<Self>().cast_mut()) };
        (this.func)(worker);
    }
}
