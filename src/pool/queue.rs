//! What travels through the pool's bounded queue, and the book of jobs not
//! yet started that lets the scaler see how long the oldest one has waited.
//!
//! The queue itself is a [`bounded`](crate::bounded) channel: it can say how
//! many messages it holds, but not how old its head is. So every accepted
//! job is also written, with its submission time, into [`Waiting`], and
//! struck out when a worker takes it. Its lock is a std `Mutex` held for a
//! map insert or remove (no park inside); the scaler reads the oldest entry
//! once a tick.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::handle::JobId;
use super::shared::{lock, Shared};

/// One message in the queue.
pub(crate) enum Msg {
    /// A job to run.
    Job(Task),
    /// The scaler's request that one spare worker end. Any worker may take
    /// it: the scaler sends it only when workers have been spare for `idle`.
    Retire,
}

/// How a job ended on its worker.
pub(crate) enum Ran {
    Completed,
    Panicked,
}

/// A job with its type erased; see [`Task`].
pub(crate) type Run = Box<dyn FnOnce(Instant, &Shared) + Send>;

/// A job with its type erased: the closure runs the user's job, times it
/// from the start instant it is given, counts it in the pool's counters and
/// completes the job's handle. Dropping it unrun cancels the job (its
/// handle sees the sender go).
pub(crate) struct Task {
    pub(crate) id: JobId,
    pub(crate) run: Run,
}

/// Jobs accepted and not yet started, by id; ids are handed out under the
/// same lock as the insert, so the smallest id is also the oldest entry.
#[derive(Default)]
pub(crate) struct Waiting {
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    next_id: JobId,
    since: BTreeMap<JobId, Instant>,
}

impl Waiting {
    /// Number a job, stamp it and write it in, if `send` puts it in the
    /// queue. `send` runs under the lock, so it must not park (`try_send`
    /// only); an id it refuses is handed out again. Its error (which holds
    /// the refused job) goes back to the caller to drop after the lock.
    pub(crate) fn admit<E>(
        &self,
        send: impl FnOnce(JobId, Instant) -> Result<(), E>,
    ) -> Result<JobId, E> {
        let mut book = self.lock();
        let (id, now) = (book.next_id, Instant::now());
        send(id, now)?;
        book.next_id += 1;
        book.since.insert(id, now);
        Ok(id)
    }

    /// Number a job, stamp it and write it in before it is sent with a send
    /// that may park (outside the lock). If that send fails,
    /// [`forget`](Self::forget) it.
    pub(crate) fn reserve(&self) -> (JobId, Instant) {
        let mut book = self.lock();
        let (id, now) = (book.next_id, Instant::now());
        book.next_id += 1;
        book.since.insert(id, now);
        (id, now)
    }

    /// A worker took job `id`, or its send failed.
    pub(crate) fn forget(&self, id: JobId) {
        self.lock().since.remove(&id);
    }

    /// When the oldest job not yet started was submitted.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.lock().since.first_key_value().map(|(_, at)| *at)
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }
}
