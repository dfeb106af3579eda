//! Step 6: ending a pool: drain or cancel, and `Drop`.
//!
//! Each run holds the two workers at a gate with two jobs, queues four
//! more, and then ends the pool:
//!
//! - `shutdown(Drain)` runs the four queued jobs, then returns;
//! - `shutdown(Cancel)` runs none of them: their handles say `Cancelled`
//!   and the report names their ids; the two running jobs still finish (a
//!   job is never stopped halfway);
//! - dropping the pool drains it, as `Drain` does;
//! - `close` (the first thing a shutdown does) refuses later submits.
//!
//! In each case the call returns only when every worker has ended: the
//! held jobs had finished by then, and the report counts no live worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use may::sync::{mpsc, SyncFlag};
use may_patterns::alarm;
use may_patterns::pool::{
    Closed, Config, JobError, JobHandle, Pool, Report, Shutdown, SubmitError,
};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const WORKERS: usize = 2;
const QUEUED: usize = 4;

/// A pool with both workers held at `gate` and `QUEUED` jobs behind them.
/// `finished` counts the jobs that ran to their end.
struct Busy {
    pool: Pool,
    gate: Arc<SyncFlag>,
    held: Vec<JobHandle<usize>>,
    queued: Vec<JobHandle<usize>>,
    finished: Arc<AtomicUsize>,
}

// ANCHOR: busy
fn busy() -> Busy {
    let pool = Pool::new(Config::fixed(WORKERS, QUEUED)).expect("a valid config");
    let gate = Arc::new(SyncFlag::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel();
    // Job `n` returns `n`; the held ones first wait at the gate.
    let job = |n: usize, held: bool| {
        let (gate, finished, started) = (gate.clone(), finished.clone(), started_tx.clone());
        move || {
            if held {
                started.send(()).unwrap();
                gate.wait();
            }
            finished.fetch_add(1, Ordering::SeqCst);
            n
        }
    };
    let held: Vec<_> = (0..WORKERS)
        .map(|n| pool.submit(job(n, true)).unwrap())
        .collect();
    for _ in 0..WORKERS {
        started_rx.recv().unwrap(); // both workers are inside a held job
    }
    let queued = (WORKERS..WORKERS + QUEUED)
        .map(|n| pool.submit(job(n, false)).unwrap())
        .collect();
    Busy {
        pool,
        gate,
        held,
        queued,
        finished,
    }
}
// ANCHOR_END: busy

/// What one way of ending the pool did.
struct Ended {
    report: Option<Report>,
    /// Jobs that had run to their end when the call returned.
    finished_when_it_returned: usize,
    held: Vec<Result<usize, JobError>>,
    queued: Vec<Result<usize, JobError>>,
}

fn ended(
    finished: &AtomicUsize,
    report: Option<Report>,
    held: Vec<JobHandle<usize>>,
    queued: Vec<JobHandle<usize>>,
) -> Ended {
    let finished_when_it_returned = finished.load(Ordering::SeqCst);
    Ended {
        report,
        finished_when_it_returned,
        held: held.into_iter().map(JobHandle::join).collect(),
        queued: queued.into_iter().map(JobHandle::join).collect(),
    }
}

/// The held jobs run this long after the pool is told to end, so a call
/// that returned before they finished would show it.
const HOLD: Duration = Duration::from_millis(20);

fn open_after_hold(gate: Arc<SyncFlag>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        alarm::shared().sleep(HOLD);
        gate.fire();
    })
}

// ANCHOR: drain
/// Open the gate from another thread after `HOLD`, and drain.
fn drain() -> Ended {
    let b = busy();
    let opener = open_after_hold(b.gate.clone());
    let report = b.pool.shutdown(Shutdown::Drain);
    opener.join().unwrap();
    ended(&b.finished, Some(report), b.held, b.queued)
}
// ANCHOR_END: drain

// ANCHOR: cancel
/// Cancel. The gate opens once the last queued job's handle says it was
/// cancelled, so the queued jobs are certainly still queued when the
/// shutdown empties the queue.
fn cancel() -> Ended {
    let mut b = busy();
    let last = b.queued.pop().unwrap();
    let gate = b.gate.clone();
    let opener = thread::spawn(move || {
        let outcome = last.join(); // returns when the shutdown drops it
        gate.fire();
        outcome
    });
    let report = b.pool.shutdown(Shutdown::Cancel);
    let last = opener.join().unwrap();
    let mut e = ended(&b.finished, Some(report), b.held, b.queued);
    e.queued.push(last);
    e
}
// ANCHOR_END: cancel

// ANCHOR: drop
/// Drop the pool with jobs queued.
fn dropped() -> Ended {
    let b = busy();
    let opener = open_after_hold(b.gate.clone());
    drop(b.pool); // drains and waits, as shutdown(Drain)
    opener.join().unwrap();
    ended(&b.finished, None, b.held, b.queued)
}
// ANCHOR_END: drop

// ANCHOR: close
/// A closed pool refuses new jobs, whichever way they are offered, and
/// still runs the ones it took.
fn closed() -> (Result<(), Closed>, Result<(), SubmitError>, Report) {
    let pool = Pool::new(Config::fixed(WORKERS, QUEUED)).expect("a valid config");
    let accepted = pool.submit(|| 1).unwrap();
    pool.close();
    let submit = pool.submit(|| 2).map(|_| ());
    let try_submit = pool.try_submit(|| 3).map(|_| ());
    let report = pool.shutdown(Shutdown::Drain);
    assert_eq!(accepted.join(), Ok(1));
    (submit, try_submit, report)
}
// ANCHOR_END: close

fn show(how: &str, e: &Ended) {
    println!("{how}:");
    println!("  running jobs: {:?}", e.held);
    println!("  queued jobs:  {:?}", e.queued);
    println!(
        "  when it returned: {} of {} jobs finished{}",
        e.finished_when_it_returned,
        WORKERS + QUEUED,
        match &e.report {
            Some(r) => format!(
                "; report: completed {}, cancelled {:?}, live workers {}",
                r.completed, r.cancelled, r.stats.workers
            ),
            None => String::new(),
        }
    );
}

fn main() {
    configure_once(TEST_SETTINGS);
    println!("{WORKERS} workers held by 2 running jobs, {QUEUED} jobs queued behind them");
    show("shutdown(Drain)", &drain());
    show("shutdown(Cancel)", &cancel());
    show("drop(pool)", &dropped());
    let (submit, try_submit, report) = closed();
    println!("after close(): submit -> {submit:?}, try_submit -> {try_submit:?}");
    println!(
        "  the job accepted before it still ran: completed {}",
        report.completed
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn all_ok(results: &[Result<usize, JobError>]) -> bool {
        results.iter().all(Result::is_ok)
    }

    #[test]
    fn drain_runs_every_queued_job_before_it_returns() {
        configure_for_tests();
        let e = drain();
        assert!(all_ok(&e.held) && all_ok(&e.queued));
        assert_eq!(e.finished_when_it_returned, WORKERS + QUEUED);
        let r = e.report.unwrap();
        assert_eq!((r.completed, r.cancelled.len(), r.stats.workers), (6, 0, 0));
    }

    #[test]
    fn cancel_reports_the_queued_ids_and_lets_the_running_jobs_finish() {
        configure_for_tests();
        let e = cancel();
        assert!(all_ok(&e.held));
        assert_eq!(e.queued, vec![Err(JobError::Cancelled); QUEUED]);
        assert_eq!(e.finished_when_it_returned, WORKERS);
        let r = e.report.unwrap();
        assert_eq!(r.cancelled, vec![2, 3, 4, 5]);
        assert_eq!((r.completed, r.stats.cancelled, r.stats.workers), (2, 4, 0));
    }

    #[test]
    fn dropping_the_pool_drains_it() {
        configure_for_tests();
        let e = dropped();
        assert!(all_ok(&e.held) && all_ok(&e.queued));
        assert_eq!(e.finished_when_it_returned, WORKERS + QUEUED);
    }

    #[test]
    fn a_closed_pool_refuses_submits_and_runs_what_it_took() {
        configure_for_tests();
        let (submit, try_submit, report) = closed();
        assert_eq!(submit, Err(Closed));
        assert_eq!(try_submit, Err(SubmitError::Closed));
        assert_eq!((report.completed, report.stats.submitted), (1, 1));
    }
}
