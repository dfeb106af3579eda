//! Exercise 3 (starter): a deadline for each task.
//!
//! Every 5th task takes 300 ms, the others 2 ms; a task may take at most
//! `TASK_TIMEOUT`. A task past its deadline should fail with "timed out" and
//! stop waiting, so that its worker moves on to the next task.
//! TODO: make `work` give up at `TASK_TIMEOUT`.

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded;
use may_patterns::runtime::{configure_once, Settings};

/// The longest a task may take.
#[allow(dead_code)] // the TODO needs it
const TASK_TIMEOUT: Duration = Duration::from_millis(50);

/// A task waits in slices this long (like a call polling for its answer);
/// never shorter than 1 ms, the shortest coroutine sleep this book makes.
const SLICE: Duration = Duration::from_millis(1);

/// How long task `index` would take if left alone.
fn cost(index: usize) -> Duration {
    if index % 5 == 4 {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(2)
    }
}

/// A task's outcome and how long it held its worker.
#[derive(Debug)]
struct Outcome {
    index: usize,
    held: Duration,
    result: Result<u64, String>,
}

// ANCHOR: worker
fn work(index: usize) -> Outcome {
    let started = Instant::now();
    // TODO: fail with "task {index}: timed out" once TASK_TIMEOUT has passed.
    let mut left = cost(index);
    while !left.is_zero() {
        let slice = left.min(SLICE);
        may::coroutine::sleep(slice);
        left -= slice;
    }
    Outcome {
        index,
        held: started.elapsed(),
        result: Ok(index as u64 * 2),
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
                for index in queue.iter() {
                    done.send(work(index)).unwrap();
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
    let outcomes = run(30, 4);
    let mut timed_out: Vec<usize> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.index)
        .collect();
    timed_out.sort_unstable();
    let longest = outcomes.iter().map(|o| o.held).max().unwrap_or_default();
    println!(
        "{} tasks, timed out: {timed_out:?}; the longest held its worker {longest:.1?}",
        outcomes.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_starter_lets_every_task_run_to_the_end() {
        configure_for_tests();
        let outcomes = run(10, 4);
        assert!(outcomes.iter().all(|o| o.result == Ok(o.index as u64 * 2)));
        let slow = outcomes.iter().find(|o| o.index == 4).unwrap();
        assert!(slow.held >= cost(4), "{:?}", slow.held);
    }
}
