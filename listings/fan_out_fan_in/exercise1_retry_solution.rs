//! Exercise 1 (solution): retry transient failures inside the worker.
//!
//! Every 7th task fails on its first attempt (a timeout from a busy
//! service, say) and succeeds when tried again. The
//! worker retries, up to `MAX_ATTEMPTS` in all, so no task fails.

use std::time::Duration;

use may::go;
use may_patterns::bounded;
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};

/// How many times a task may be tried in all.
const MAX_ATTEMPTS: u32 = 3;

/// Attempt `attempt` (1, 2, ...) of task `index`.
fn call(index: usize, attempt: u32, pacer: &mut Pacer) -> Result<u64, String> {
    pacer.wait(Duration::from_micros(300));
    if index.is_multiple_of(7) && attempt == 1 {
        return Err(format!("task {index}: timed out"));
    }
    Ok(index as u64 * 2)
}

/// A task's final outcome and how many attempts it took.
#[derive(Debug)]
struct Outcome {
    index: usize,
    attempts: u32,
    result: Result<u64, String>,
}

// ANCHOR: worker
fn work(index: usize, pacer: &mut Pacer) -> Outcome {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = call(index, attempts, pacer);
        // Retry only while attempts remain; the last error is the outcome.
        if result.is_ok() || attempts == MAX_ATTEMPTS {
            return Outcome {
                index,
                attempts,
                result,
            };
        }
    }
}
// ANCHOR_END: worker

fn run(tasks: usize, workers: usize) -> Vec<Outcome> {
    let (queue_tx, queue_rx) = bounded::channel::<usize>(16);
    let (done_tx, done_rx) = bounded::channel::<Outcome>(16);
    let distributor = go!(move || (0..tasks).for_each(|i| queue_tx.send(i).unwrap()));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, done) = (queue_rx.clone(), done_tx.clone());
            go!(move || {
                let mut pacer = Pacer::new();
                for index in queue.iter() {
                    done.send(work(index, &mut pacer)).unwrap();
                }
            })
        })
        .collect();
    drop(done_tx);
    let outcomes = done_rx.iter().collect();
    distributor.join().unwrap();
    handles.into_iter().for_each(|h| h.join().unwrap());
    outcomes
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let outcomes = run(70, 4);
    let mut failed: Vec<usize> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.index)
        .collect();
    failed.sort_unstable();
    let attempts: u32 = outcomes.iter().map(|o| o.attempts).sum();
    println!(
        "{} tasks, {attempts} attempts (at most {MAX_ATTEMPTS} each), failed: {failed:?}",
        outcomes.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn retries_turn_every_transient_failure_into_a_result() {
        configure_for_tests();
        let outcomes = run(70, 4);
        assert_eq!(outcomes.len(), 70);
        assert!(outcomes.iter().all(|o| o.result == Ok(o.index as u64 * 2)));
        for o in &outcomes {
            let expected = if o.index.is_multiple_of(7) { 2 } else { 1 };
            assert_eq!(o.attempts, expected, "task {}", o.index);
        }
    }
}
