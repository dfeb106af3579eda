//! Step 1: the baseline. A batch of independent tasks, each spending most of
//! its time waiting (like a call to a remote service), run one after another.
//! The total is the sum of every task's wait.

use std::time::{Duration, Instant};

use may_patterns::pace::Pacer;

// ANCHOR: task
/// One unit of work: its position in the batch and what it costs.
#[derive(Debug, Clone, Copy)]
struct Task {
    index: usize,
    cost: Duration,
}

/// Wait for the task's cost (a stand-in for a remote call), then answer.
fn run_task(task: &Task, pacer: &mut Pacer) -> u64 {
    pacer.wait(task.cost);
    answer(task.index)
}

/// The correct answer for task `index` (a SplitMix64 step), so every result
/// can be checked.
fn answer(index: usize) -> u64 {
    let mut z = (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
// ANCHOR_END: task

// ANCHOR: main
fn run_sequential(tasks: usize, cost: Duration) -> Vec<u64> {
    let mut pacer = Pacer::new();
    (0..tasks)
        .map(|index| run_task(&Task { index, cost }, &mut pacer))
        .collect()
}

fn main() {
    let started = Instant::now();
    let results = run_sequential(100, Duration::from_millis(2));
    println!(
        "{} tasks of 2 ms, one after another: {:.1?}",
        results.len(),
        started.elapsed()
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_answers_in_order_and_the_waits_add_up() {
        let started = Instant::now();
        let results = run_sequential(20, Duration::from_millis(1));
        assert!(started.elapsed() >= Duration::from_millis(20));
        let expected: Vec<u64> = (0..20).map(answer).collect();
        assert_eq!(results, expected);
    }
}
