//! Step 2: a job that panics.
//!
//! Jobs parse numbers out of their input, and two inputs are not numbers.
//! Each panic stays inside its job: its handle returns the panic message as
//! `JobError::Panicked`, the pool counts it, and the worker that ran it
//! goes on with the next job, so the pool keeps both its workers. Two jobs
//! that can only finish together (each waits for the other to start) show
//! that both workers are still there.
//!
//! The default panic hook still prints each panic to stderr, as it would on
//! any thread; the pool's caller gets the message in the handle.

use std::sync::Arc;
use std::time::Duration;

use may::sync::{mpsc, SyncFlag};
use may_patterns::pool::{Config, JobError, Pool};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const WORKERS: usize = 2;
const INPUTS: [&str; 6] = ["4", "9", "x", "16", "oops", "25"];
/// The longest the two-worker check waits for the second job to start.
const BOTH_WITHIN: Duration = Duration::from_secs(5);

// ANCHOR: job
/// Parse the input and take its square root; a bad input panics, as a bug
/// in a job would.
fn root(input: &'static str) -> u64 {
    let n: u64 = input
        .parse()
        .unwrap_or_else(|_| panic!("{input:?} is not a number"));
    n.isqrt()
}
// ANCHOR_END: job

// ANCHOR: both_workers
/// Submit two jobs that each wait until both have started. With one worker
/// left, the second would never start: the wait is bounded instead.
fn both_workers_run(pool: &Pool) -> bool {
    let (started_tx, started_rx) = mpsc::channel();
    let gate = Arc::new(SyncFlag::new());
    let handles: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (started, gate) = (started_tx.clone(), gate.clone());
            pool.submit(move || {
                started.send(()).unwrap();
                gate.wait();
            })
            .expect("the pool is open")
        })
        .collect();
    let both = (0..WORKERS).all(|_| started_rx.recv_timeout(BOTH_WITHIN).is_ok());
    gate.fire(); // either way, let the held jobs end
    for h in handles {
        h.join().expect("a held job only waits");
    }
    both
}
// ANCHOR_END: both_workers

/// What the run saw.
struct Run {
    results: Vec<Result<u64, JobError>>,
    both_workers_run: bool,
    stats: may_patterns::pool::Stats,
}

// ANCHOR: run
fn run() -> Run {
    let pool = Pool::new(Config::fixed(WORKERS, 8)).expect("a valid config");
    let handles: Vec<_> = INPUTS
        .iter()
        .map(|&input| pool.submit(move || root(input)).expect("the pool is open"))
        .collect();
    let results = handles.into_iter().map(|h| h.join()).collect();
    Run {
        results,
        both_workers_run: both_workers_run(&pool),
        stats: pool.stats(),
    }
}
// ANCHOR_END: run

fn main() {
    configure_once(TEST_SETTINGS);
    let run = run();
    for (input, result) in INPUTS.iter().zip(&run.results) {
        println!("root({input:?}) -> {result:?}");
    }
    let s = &run.stats;
    println!(
        "after the panics: {} workers, completed {}, panicked {}",
        s.workers, s.completed, s.panicked
    );
    println!(
        "two jobs that need two workers at once ran: {}",
        run.both_workers_run
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_panic_comes_back_in_its_handle_and_the_others_succeed() {
        configure_for_tests();
        let run = run();
        assert_eq!(run.results[0], Ok(2));
        assert_eq!(run.results[1], Ok(3));
        assert_eq!(
            run.results[2],
            Err(JobError::Panicked("\"x\" is not a number".into()))
        );
        assert_eq!(run.results[3], Ok(4));
        assert!(matches!(run.results[4], Err(JobError::Panicked(_))));
        assert_eq!(run.results[5], Ok(5));
    }

    #[test]
    fn the_pool_keeps_its_workers_and_counts_the_panics() {
        configure_for_tests();
        let run = run();
        assert_eq!(run.stats.panicked, 2);
        assert_eq!(run.stats.workers, WORKERS);
        assert!(run.both_workers_run, "a worker was lost to a panic");
    }
}
