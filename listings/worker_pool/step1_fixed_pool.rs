//! Step 1: a fixed pool with a bounded submission queue.
//!
//! Two worker coroutines take jobs from a queue that holds at most four.
//! `submit` hands back a handle whose `join` gives the job's result; when
//! the queue is full, `submit` parks its caller until a worker takes a job
//! (backpressure), and `try_submit` says `Full` at once instead.
//!
//! To fill the pool exactly, the first two jobs wait at a gate: both workers
//! are then busy, and the next four jobs stay queued until it opens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use may::sync::{mpsc, SyncFlag};
use may_patterns::alarm;
use may_patterns::pool::{Config, JobHandle, Pool, SubmitError};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const WORKERS: usize = 2;
const QUEUE: usize = 4;
/// How long the opener waits before it opens the gate: the parked `submit`
/// waits about this long.
const HOLD: Duration = Duration::from_millis(20);

// ANCHOR: fill
/// Occupy every worker with a job that waits at `gate`, and return once
/// each has started (so the queue is empty and every worker is busy).
fn hold_every_worker(pool: &Pool, gate: &Arc<SyncFlag>) -> Vec<JobHandle<u64>> {
    let (started_tx, started_rx) = mpsc::channel();
    let held = (0..WORKERS)
        .map(|_| {
            let (gate, started) = (gate.clone(), started_tx.clone());
            pool.submit(move || {
                started.send(()).unwrap();
                gate.wait(); // parks the worker coroutine, not its thread
                0
            })
            .expect("the pool is open")
        })
        .collect();
    for _ in 0..WORKERS {
        started_rx.recv().unwrap();
    }
    held
}

/// A job with a result to check: the square of its number.
fn square(pool: &Pool, n: u64) -> JobHandle<u64> {
    pool.submit(move || n * n).expect("the pool is open")
}
// ANCHOR_END: fill

/// What the run saw, for `main` to print and the tests to check.
struct Run {
    queued_when_full: usize,
    try_submit: Result<(), SubmitError>,
    parked: Duration,
    results: Vec<(u64, u64)>,
    stats: may_patterns::pool::Stats,
}

// ANCHOR: run
fn run() -> Run {
    let pool = Pool::new(Config::fixed(WORKERS, QUEUE)).expect("a valid config");
    let gate = Arc::new(SyncFlag::new());
    let mut handles = hold_every_worker(&pool, &gate);
    handles.extend((2..2 + QUEUE as u64).map(|n| square(&pool, n)));
    let queued_when_full = pool.stats().queued;

    // Full: the caller decides (shed, retry later, answer 503).
    let try_submit = pool.try_submit(|| 0u64).map(|_| ());

    // `submit` parks until a worker frees a slot: the opener thread lets
    // the held jobs finish after HOLD, the workers take two queued jobs,
    // and this submit gets a slot.
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            alarm::shared().sleep(HOLD);
            gate.fire();
        })
    };
    let asked = Instant::now();
    handles.push(square(&pool, 6));
    let parked = asked.elapsed();
    opener.join().unwrap();

    let results = handles
        .into_iter()
        .map(|h| (h.id(), h.join().expect("no job fails here")))
        .collect();
    Run {
        queued_when_full,
        try_submit,
        parked,
        results,
        stats: pool.stats(),
    }
}
// ANCHOR_END: run

fn main() {
    configure_once(TEST_SETTINGS);
    let run = run();
    println!("fixed pool: {WORKERS} workers, a queue of {QUEUE}");
    println!(
        "{WORKERS} jobs held at a gate, {} more queued",
        run.queued_when_full
    );
    println!("try_submit on the full queue: {:?}", run.try_submit);
    println!(
        "submit on the full queue parked {:.1?} (the gate opened after {HOLD:?})",
        run.parked
    );
    let results: Vec<String> = run
        .results
        .iter()
        .map(|(id, r)| format!("{id}:{r}"))
        .collect();
    println!("results by job id: {}", results.join(" "));
    let s = &run.stats;
    println!(
        "stats: {} workers, submitted {}, completed {}, queue high water {}",
        s.workers, s.submitted, s.completed, s.queue_high_water
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_full_queue_refuses_try_submit_and_parks_submit() {
        configure_for_tests();
        let run = run();
        assert_eq!(run.queued_when_full, QUEUE);
        assert_eq!(run.try_submit, Err(SubmitError::Full));
        // Loose: the opener waited HOLD; a parked submit cannot beat it by
        // more than the alarm's rounding.
        assert!(run.parked >= HOLD / 2, "parked only {:?}", run.parked);
    }

    #[test]
    fn every_handle_joins_with_its_own_result() {
        configure_for_tests();
        let run = run();
        // A refused try_submit takes no id: the parked submit got 6.
        let expected = [(0, 0), (1, 0), (2, 4), (3, 9), (4, 16), (5, 25), (6, 36)];
        assert_eq!(run.results, expected);
        assert_eq!(run.stats.completed, 7);
        assert_eq!(run.stats.queue_high_water, QUEUE);
        assert_eq!(run.stats.workers, WORKERS);
    }
}
