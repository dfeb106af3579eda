//! A submitted job's handle: its id, and the way to its result.
//!
//! Each job gets a one-shot may channel. The worker that runs the job sends
//! the outcome into it; a job dropped unrun (cancelled at shutdown) drops the
//! sending half instead, which its handle reports as
//! [`JobError::Cancelled`]. Waiting on the handle parks a coroutine and
//! blocks a plain thread, whichever calls it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::sync::mpsc;

/// A job's number: jobs accepted by one pool are numbered in submission
/// order from 0.
pub type JobId = u64;

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The job panicked; this is its panic message.
    Panicked(String),
    /// The pool was shut down with [`Shutdown::Cancel`](super::Shutdown)
    /// before the job started.
    Cancelled,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Panicked(message) => write!(f, "the job panicked: {message}"),
            JobError::Cancelled => f.write_str("the job was cancelled before it started"),
        }
    }
}

impl std::error::Error for JobError {}

/// Where a job's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From the call to `submit` to the start of the job: time parked on a
    /// full queue plus time in the queue.
    pub queued: Duration,
    /// From the start of the job to its end.
    pub ran: Duration,
}

type Outcome<T> = Result<(T, Timing), JobError>;

/// The caller's side of one job. `Send`: hand it to another coroutine or
/// thread to wait on.
pub struct JobHandle<T> {
    id: JobId,
    outcome: mpsc::Receiver<Outcome<T>>,
    finished: Arc<AtomicBool>,
}

/// The worker's side of one job: sends its outcome once.
pub(crate) struct Completer<T> {
    outcome: mpsc::Sender<Outcome<T>>,
    finished: Arc<AtomicBool>,
}

/// A new job's two sides.
pub(crate) fn pair<T>() -> (Completer<T>, JobHandle<T>) {
    let (tx, rx) = mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let completer = Completer {
        outcome: tx,
        finished: Arc::clone(&finished),
    };
    let handle = JobHandle {
        id: 0, // numbered when the queue accepts it
        outcome: rx,
        finished,
    };
    (completer, handle)
}

impl<T> Completer<T> {
    /// Hand the outcome to the handle. The handle may be gone (nobody waits
    /// for this job): that is not an error.
    pub(crate) fn complete(self, outcome: Outcome<T>) {
        let _ = self.outcome.send(outcome);
    }
}

impl<T> Drop for Completer<T> {
    /// Runs after `complete`'s send, or when the job is dropped unrun: either
    /// way, `join` no longer waits.
    fn drop(&mut self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

impl<T> JobHandle<T> {
    pub(crate) fn numbered(mut self, id: JobId) -> JobHandle<T> {
        self.id = id;
        self
    }

    /// This job's number.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Wait for the job's result.
    pub fn join(self) -> Result<T, JobError> {
        self.join_timed().map(|(value, _)| value)
    }

    /// Wait for the job's result and how long it queued and ran.
    pub fn join_timed(self) -> Result<(T, Timing), JobError> {
        // A closed channel with nothing in it: the job was dropped unrun.
        self.outcome.recv().unwrap_or(Err(JobError::Cancelled))
    }

    /// Whether the job has ended (ran, panicked or was cancelled), so that
    /// `join` returns at once.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

impl<T> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}
