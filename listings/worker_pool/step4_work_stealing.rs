//! Step 4: work stealing, for jobs that spawn jobs.
//!
//! A parallel quicksort partitions its slice, then forks both sides with
//! `Worker::join`, down to slices of 64 numbers. The same sort of the same
//! numbers runs on two fork-join pools of two workers each: one where every
//! worker keeps its own deque and steals from the other's only when it runs
//! dry (`Scheduling::Stealing`), and one where every forked half goes
//! through one shared FIFO queue (`Scheduling::SharedQueue`). For each, the
//! listing prints the time, whether the result is sorted, and the pool's
//! counters: how many forked halves the worker that forked them ran itself
//! (local pops), how many moved to the other worker (steals), and the most
//! jobs that helping stacked on one worker's stack.

use std::time::{Duration, Instant};

use may_patterns::pool::fork_join::{quicksort, Sequential};
use may_patterns::pool::{ForkJoinPool, ForkJoinStats, Scheduling};

const ITEMS: usize = 200_000;
/// Slices this short are sorted where they are: forking them would cost
/// more than sorting them.
const CUTOFF: usize = 64;
const WORKERS: usize = 2;

/// The same numbers on every run (fixed seed).
fn numbers() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(4);
    (0..ITEMS).map(|_| rng.u64(..)).collect()
}

// ANCHOR: run
/// Sort a copy of `numbers` on a new pool: the time, whether the result is
/// sorted, and what the pool's workers did.
fn sort_on(scheduling: Scheduling, numbers: &[u64]) -> (Duration, bool, ForkJoinStats) {
    let pool = ForkJoinPool::new(WORKERS, scheduling).expect("two workers is a valid size");
    let mut items = numbers.to_vec();
    let started = Instant::now();
    pool.install(|worker| quicksort(worker, &mut items, CUTOFF));
    let took = started.elapsed();
    (took, items.is_sorted(), pool.stats())
}
// ANCHOR_END: run

fn main() {
    let numbers = numbers();
    println!(
        "quicksort of {ITEMS} numbers, slices of {CUTOFF} or fewer sorted in place, \
         {WORKERS} workers"
    );
    let mut items = numbers.clone();
    let started = Instant::now();
    quicksort(&Sequential, &mut items, CUTOFF);
    println!("sequential:  {:?}", started.elapsed());
    for (name, scheduling) in [
        ("Stealing:   ", Scheduling::Stealing),
        ("SharedQueue:", Scheduling::SharedQueue),
    ] {
        let (took, sorted, stats) = sort_on(scheduling, &numbers);
        println!(
            "{name} {took:?}, sorted: {}",
            if sorted { "yes" } else { "NO" }
        );
        println!(
            "  {} joins: local pops ~{}, steals ~{}; deepest nesting ~{}",
            stats.joins, stats.local_pops, stats.steals, stats.deepest
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sort_and_every_fork_runs_once() {
        for scheduling in [Scheduling::Stealing, Scheduling::SharedQueue] {
            let (_, sorted, stats) = sort_on(scheduling, &numbers());
            assert!(sorted, "{scheduling:?}");
            assert_eq!(stats.joins, stats.local_pops + stats.steals, "{stats:?}");
        }
    }

    #[test]
    fn with_stealing_most_forks_stay_on_their_worker() {
        // A thief takes the oldest job, the biggest: a few steals feed it.
        let (_, _, stats) = sort_on(Scheduling::Stealing, &numbers());
        assert!(stats.steals * 10 < stats.joins, "{stats:?}");
    }
}
