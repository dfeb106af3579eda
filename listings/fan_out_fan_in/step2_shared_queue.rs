//! Step 2: fan out over one shared queue, fan in over one result channel.
//!
//! A distributor coroutine puts the tasks in one bounded queue; N worker
//! coroutines take from it (whoever is free takes the next task); every
//! worker sends its results into one channel that the collector reads.

use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded;
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};

#[derive(Debug, Clone, Copy)]
struct Task {
    index: usize,
    cost: Duration,
}

fn run_task(task: &Task, pacer: &mut Pacer) -> u64 {
    pacer.wait(task.cost);
    answer(task.index)
}

fn answer(index: usize) -> u64 {
    let mut z = (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a worker sends back: which task, who ran it, the answer.
#[derive(Debug)]
struct Outcome {
    index: usize,
    worker: usize,
    value: u64,
}

// ANCHOR: fan_out
/// Run `tasks` tasks on `workers` coroutines; return the outcomes in the
/// order they completed.
fn fan_out(tasks: usize, workers: usize, cost: Duration) -> Vec<Outcome> {
    // Bounded: the distributor stays at most 32 tasks ahead of the workers.
    let (queue_tx, queue_rx) = bounded::channel::<Task>(32);
    let (results_tx, results_rx) = bounded::channel::<Outcome>(32);

    let distributor = go!(move || {
        for index in 0..tasks {
            queue_tx
                .send(Task { index, cost })
                .expect("workers are running");
        }
        // Dropping the sender ends the queue: every worker sees the end.
    });
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let (queue, results) = (queue_rx.clone(), results_tx.clone());
            go!(move || {
                let mut pacer = Pacer::new();
                for task in queue.iter() {
                    let value = run_task(&task, &mut pacer);
                    let outcome = Outcome {
                        index: task.index,
                        worker,
                        value,
                    };
                    results.send(outcome).expect("the collector is reading");
                }
            })
        })
        .collect();
    // Only the workers may hold result senders, or the loop below never ends.
    drop(results_tx);

    // Fan in: one channel, read until every worker has dropped its sender.
    let outcomes: Vec<Outcome> = results_rx.iter().collect();
    distributor.join().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    outcomes
}
// ANCHOR_END: fan_out

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    for workers in [1, 4, 16] {
        let started = Instant::now();
        let outcomes = fan_out(100, workers, Duration::from_millis(2));
        let elapsed = started.elapsed();
        let mut per_worker = vec![0; workers];
        outcomes.iter().for_each(|o| per_worker[o.worker] += 1);
        let correct = outcomes.iter().all(|o| o.value == answer(o.index));
        let (least, most) = (
            per_worker.iter().min().unwrap(),
            per_worker.iter().max().unwrap(),
        );
        println!(
            "{} tasks of 2 ms on {workers:>2} workers: {elapsed:.1?}, \
             ~{least} to ~{most} tasks per worker, answers correct: {correct}",
            outcomes.len(),
        );
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn every_result_arrives_exactly_once_with_its_answer() {
        configure_for_tests();
        let outcomes = fan_out(500, 8, Duration::from_micros(100));
        let mut indices: Vec<usize> = outcomes.iter().map(|o| o.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..500).collect::<Vec<_>>());
        assert!(outcomes.iter().all(|o| o.value == answer(o.index)));
        assert!(outcomes.iter().all(|o| o.worker < 8));
    }

    #[test]
    fn eight_workers_finish_waiting_tasks_several_times_faster_than_one() {
        configure_for_tests();
        let time = |workers| {
            let started = Instant::now();
            fan_out(64, workers, Duration::from_millis(2));
            started.elapsed()
        };
        let (one, eight) = (time(1), time(8));
        // 8x in theory; 2x leaves room for a busy test machine.
        assert!(one > eight * 2, "1 worker {one:?}, 8 workers {eight:?}");
    }
}
