//! A submitted job's handle: its id, and the way to its result.
//!
//! Each job gets a one-shot channel (the crate's own, a small record and a
//! may `Blocker`: a may mpsc channel would cost about 3 KiB per job). The
//! worker that runs the job sends the outcome into it; a job dropped unrun
//! (cancelled at shutdown) drops the sending half instead, which its handle
//! reports as [`JobError::Cancelled`]. Waiting on the handle parks a
//! coroutine and blocks a plain thread, whichever calls it.

use std::fmt;
use std::time::Duration;

use crate::oneshot;

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
    outcome: oneshot::Receiver<Outcome<T>>,
}

/// The worker's side of one job: sends its outcome once.
pub(crate) struct Completer<T> {
    outcome: oneshot::Sender<Outcome<T>>,
}

/// A new job's two sides.
pub(crate) fn pair<T>() -> (Completer<T>, JobHandle<T>) {
    let (tx, rx) = oneshot::channel();
    let handle = JobHandle {
        id: 0, // numbered when the queue accepts it
        outcome: rx,
    };
    (Completer { outcome: tx }, handle)
}

impl<T> Completer<T> {
    /// Hand the outcome to the handle. The handle may be gone (nobody waits
    /// for this job): that is not an error.
    pub(crate) fn complete(self, outcome: Outcome<T>) {
        self.outcome.send(outcome);
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
        // The sender gone with nothing sent: the job was dropped unrun.
        self.outcome.recv().unwrap_or(Err(JobError::Cancelled))
    }

    /// Whether the job has ended (ran, panicked or was cancelled), so that
    /// `join` returns at once.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_done()
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
