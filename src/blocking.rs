//! Run blocking calls on a few OS threads, so they never hold a may worker.
//!
//! A call that blocks the OS thread (`std::fs`, a DNS lookup, a C library
//! such as SQLite, `std::thread::sleep`) freezes the may worker it runs on,
//! and with it every coroutine and socket that worker serves (the primer's
//! `pitfall_blocking_call` listing measures it). tokio's answer is
//! `spawn_blocking`; may has none. A [`BlockingPool`] is that idea made
//! small: [`BlockingPool::run`] hands a closure to one of a fixed number of
//! OS threads and *parks* the calling coroutine until the result comes back,
//! so the worker serves other coroutines in the meantime.
//!
//! - The job queue is a [`crate::bounded`] channel: when every thread is
//!   busy and the queue is full, `run` parks its caller (backpressure)
//!   instead of letting jobs pile up without limit.
//! - The result comes back on a may channel, which parks a coroutine and
//!   blocks a plain thread, so `run` works from either.
//! - A job that panics is caught on its thread: `run` returns
//!   [`Error::Panicked`] and the thread goes on to the next job.
//! - Dropping the pool lets the threads finish the queued jobs, then joins
//!   them.
//!
//! For a one-off call, [`run`] uses a process-wide pool of
//! [`DEFAULT_THREADS`] threads, started on first use. A long-lived resource
//! that one thread owns for the whole run (a database connection writing a
//! transaction, a file being written) is a different pattern: give it a
//! dedicated thread fed by a channel, as the data pipeline chapter does.
//!
//! ```
//! use may_patterns::blocking::BlockingPool;
//!
//! let pool = BlockingPool::new(2, 16).unwrap();
//! let reading = may::go!(move || {
//!     // On a coroutine: the worker is free while the thread reads.
//!     pool.run(|| std::fs::read_to_string("Cargo.toml"))
//! });
//! let manifest = reading.join().unwrap().unwrap().unwrap();
//! assert!(manifest.contains("may-patterns"));
//! ```

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};

use may::sync::mpsc;

use crate::bounded;

/// A job as the threads see it: it runs the caller's closure and sends the
/// outcome back itself, so the queue needs no type per result.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed number of OS threads that run blocking closures for coroutines.
pub struct BlockingPool {
    jobs: Option<bounded::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

/// Why [`BlockingPool::run`] returned no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The closure panicked; this is its panic message.
    Panicked(String),
    /// The job was dropped without running: the pool's threads had ended.
    /// They end only when the pool is dropped, so this is a closure that
    /// outlived its pool (e.g. submitted from a job while the pool drops).
    Stopped,
}

impl BlockingPool {
    /// Start `threads` OS threads (named `blocking-0`, `blocking-1`, ...)
    /// that take jobs from a queue holding at most `queue_capacity` jobs
    /// waiting for a thread.
    ///
    /// Fails if the operating system refuses to start a thread.
    ///
    /// # Panics
    ///
    /// If `threads` or `queue_capacity` is 0: such a pool could run nothing.
    pub fn new(threads: usize, queue_capacity: usize) -> io::Result<Self> {
        assert!(threads > 0, "a blocking pool needs at least one thread");
        let (jobs, queue) = bounded::channel::<Job>(queue_capacity);
        let threads = (0..threads)
            .map(|i| {
                let queue = queue.clone();
                thread::Builder::new()
                    .name(format!("blocking-{i}"))
                    .spawn(move || queue.iter().for_each(|job| job()))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(BlockingPool {
            jobs: Some(jobs),
            threads,
        })
    }

    /// Run `f` on one of the pool's threads and return what it returns.
    ///
    /// On a coroutine this parks the coroutine (its worker runs others)
    /// until the result is ready, first while the queue is full if it is;
    /// on a plain thread it blocks that thread. Do not call it from a job
    /// of the same pool: once every thread waits for a job queued behind
    /// it, nothing runs.
    pub fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (result_tx, result_rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            // Unwind safety: the closure's captures are dropped while
            // unwinding and nothing else sees them; the caller only gets
            // the message.
            let outcome = panic::catch_unwind(AssertUnwindSafe(f))
                .map_err(|payload| Error::Panicked(panic_message(payload)));
            // The caller may be gone (a cancelled coroutine): nobody to tell.
            let _ = result_tx.send(outcome);
        });
        let jobs = self.jobs.as_ref().expect("set until the pool drops");
        jobs.send(job).map_err(|_| Error::Stopped)?;
        result_rx.recv().map_err(|_| Error::Stopped)?
    }

    /// How many threads run jobs.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for BlockingPool {
    /// Close the queue (the threads finish what is queued, then end) and
    /// join the threads.
    fn drop(&mut self) {
        drop(self.jobs.take());
        let me = thread::current().id();
        for thread in self.threads.drain(..) {
            // A job that held the last handle to its own pool drops it on a
            // pool thread, which must not wait for itself.
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// Threads in the pool that [`run`] uses. Blocking calls mostly wait (on a
/// disk, a name server, a lock), so this is more than the cores of a small
/// machine; at most this many of them are in flight at once.
pub const DEFAULT_THREADS: usize = 16;

/// Jobs that wait for a thread in the pool [`run`] uses before a caller of
/// [`run`] parks until there is room.
pub const DEFAULT_QUEUE: usize = 256;

/// Run `f` on the process-wide pool ([`DEFAULT_THREADS`] threads, a queue of
/// [`DEFAULT_QUEUE`] jobs, started on first use, never stopped), parking the
/// calling coroutine until its result is ready. See [`BlockingPool::run`].
///
/// # Panics
///
/// On first use, if the operating system refuses to start the threads.
pub fn run<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    static DEFAULT: OnceLock<BlockingPool> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            BlockingPool::new(DEFAULT_THREADS, DEFAULT_QUEUE)
                .expect("cannot start the default blocking pool's threads")
        })
        .run(f)
}

/// The text of a panic payload (`panic!` makes a `&str` or a `String`).
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "a panic with a non-text payload".to_owned(),
        },
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Panicked(message) => write!(f, "the blocking job panicked: {message}"),
            Error::Stopped => f.write_str("the blocking pool stopped before running the job"),
        }
    }
}

impl std::error::Error for Error {}

/// So a job's failure can travel as the `io::Error` of the I/O it replaced.
impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::other(e)
    }
}

#[cfg(test)]
mod tests;
