//! The worker: a may coroutine that takes jobs from the queue and runs them,
//! one at a time, on its own stack, until the queue ends or it is told to
//! retire.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use may::coroutine::Builder;

use super::handle::{Completer, JobError, JobId, Timing};
use super::queue::{Msg, Ran, Task};
use super::shared::{lock, Shared};
use crate::bounded::Receiver;

/// Wrap a user's job as a [`Task`]: run it, time it, catch its panic, count
/// how it ended and complete its handle, in that order, so the pool's
/// counters already include a job when its `join` returns.
pub(crate) fn task<T, F>(id: JobId, submitted: Instant, job: F, completer: Completer<T>) -> Task
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let run = move |started: Instant, shared: &Shared| {
        let outcome = catch_panic(job);
        let timing = Timing {
            queued: started.duration_since(submitted),
            ran: started.elapsed(),
        };
        match outcome {
            Ok(value) => {
                shared.job_ended(Ran::Completed);
                completer.complete(Ok((value, timing)));
            }
            Err(message) => {
                shared.job_ended(Ran::Panicked);
                completer.complete(Err(JobError::Panicked(message)));
            }
        }
    };
    Task {
        id,
        run: Box::new(run),
    }
}

// ANCHOR: catch_panic
/// Run `job`, turning a panic into its message.
///
/// Catching is safe here because the worker shares nothing with the job:
/// the job owns what it captured, and unwinding drops all of it, so no
/// half-updated state is left for the next job to see. (Whatever the job
/// shares through an `Arc<Mutex<..>>` of its own is poisoned for its other
/// users as usual.) That is what the `AssertUnwindSafe` asserts.
fn catch_panic<T>(job: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(job)).map_err(|payload| panic_message(&*payload))
}
// ANCHOR_END: catch_panic

/// The text of a panic: `panic!` with a literal gives a `&str`, with a
/// format string a `String`.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic whose payload is not text".to_owned()
    }
}

/// Start one more worker coroutine.
pub(crate) fn spawn(shared: &Arc<Shared>) {
    // Counted before it runs, so the scaler and `stats` see it at once.
    let number = shared.counts.live.fetch_add(1, Ordering::SeqCst);
    let (state, queue) = (Arc::clone(shared), shared.queue.clone());
    let builder = Builder::new()
        .name(format!("pool-worker-{number}"))
        .stack_size(shared.config.stack_words());
    // may 0.3.51's `Builder::spawn` returns `io::Result` but has no failing
    // path: a failed stack allocation panics instead.
    let worker = may::go!(builder, move || worker_loop(state, queue))
        .expect("may's Builder::spawn does not fail");
    let mut workers = lock(&shared.workers);
    workers.retain(|w| !w.is_done());
    workers.push(worker);
}

/// Counts a worker out when its loop ends, however it ends.
struct Live<'a>(&'a Shared);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.counts.live.fetch_sub(1, Ordering::SeqCst);
    }
}

// ANCHOR: worker_loop
/// Take messages until the queue ends (every sender dropped and every job
/// taken) or a `Retire` arrives. An idle worker is parked in `recv`, so it
/// costs no CPU and wakes the moment a job arrives.
fn worker_loop(shared: Arc<Shared>, queue: Receiver<Msg>) {
    let live = Live(&shared);
    while let Ok(message) = queue.recv() {
        let task = match message {
            Msg::Job(task) => task,
            Msg::Retire => {
                drop(live); // counted out before it stops counting as leaving
                shared.counts.retiring.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        if shared.cancelling.load(Ordering::SeqCst) {
            shared.cancel(task);
            continue;
        }
        shared.waiting.forget(task.id);
        shared.job_started();
        (task.run)(Instant::now(), &shared);
    }
}
// ANCHOR_END: worker_loop
