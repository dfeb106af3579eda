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
//! (local pops), how many moved to the other worker (steals), the most
//! jobs that helping stacked on one worker's stack, and how long workers at
//! the nesting bound waited instead of helping. Then it waits for the
//! idle pool's workers to park, and reads from Linux's /proc how much CPU
//! the pool's threads use over the next 100 ms: parked workers use none.

use std::thread;
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
/// Sort a copy of `numbers` on `pool`: the time, whether the result is
/// sorted, and what the pool's workers did.
fn sort_on(pool: &ForkJoinPool, numbers: &[u64]) -> (Duration, bool, ForkJoinStats) {
    let mut items = numbers.to_vec();
    let started = Instant::now();
    pool.install(|worker| quicksort(worker, &mut items, CUTOFF));
    let took = started.elapsed();
    (took, items.is_sorted(), pool.stats())
}
// ANCHOR_END: run

/// A pool of two workers that share forked jobs as `scheduling` says.
fn pool(scheduling: Scheduling) -> ForkJoinPool {
    ForkJoinPool::new(WORKERS, scheduling).expect("two workers is a valid size")
}

// ANCHOR: idle
/// CPU time used so far by the threads of the live pools (named
/// `fork-join-N`), from /proc/self/task (Linux).
fn pool_cpu_time() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").expect("Linux /proc");
    let ticks: u64 = tasks
        .flatten()
        .filter(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            name.starts_with("fork-join-")
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| {
            // After the ")" closing the name: utime and stime are the 12th
            // and 13th fields, in clock ticks.
            let (_, fields) = stat.rsplit_once(')').expect("a stat line");
            let fields: Vec<&str> = fields.split_whitespace().collect();
            let tick = |i: usize| fields[i].parse::<u64>().expect("a tick count");
            tick(11) + tick(12)
        })
        .sum();
    Duration::from_millis(ticks * 10) // Linux's clock tick (USER_HZ) is 10 ms
}

/// Once `pool` is idle: how many workers parked (waiting at most 5 s for
/// all of them; each looks for work a few rounds first, and a busy machine
/// may make those slow), then the CPU its threads used over 100 ms more.
fn idle(pool: &ForkJoinPool) -> (usize, Duration) {
    let deadline = Instant::now() + Duration::from_secs(5);
    // main is a plain thread: std's sleep blocks no may worker.
    while pool.stats().asleep < WORKERS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let parked = pool.stats().asleep;
    let before = pool_cpu_time();
    thread::sleep(Duration::from_millis(100));
    (parked, pool_cpu_time() - before)
}
// ANCHOR_END: idle

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
        let pool = pool(scheduling);
        let (took, sorted, stats) = sort_on(&pool, &numbers);
        println!(
            "{name} {took:?}, sorted: {}",
            if sorted { "yes" } else { "NO" }
        );
        println!(
            "  {} joins: local pops ~{}, steals ~{}; deepest nesting ~{}, waited at the bound {:?}",
            stats.joins, stats.local_pops, stats.steals, stats.deepest, stats.waited_at_bound
        );
        let (parked, cpu) = idle(&pool);
        println!("  then idle: {parked} of {WORKERS} workers parked, CPU used in 100ms: {cpu:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, so no other pool of this process is busy while an idle
    // pool's threads are measured (pool_cpu_time reads every pool's).
    #[test]
    fn each_pool_sorts_accounts_for_every_fork_and_parks_when_idle() {
        for scheduling in [Scheduling::Stealing, Scheduling::SharedQueue] {
            let pool = pool(scheduling);
            let (_, sorted, stats) = sort_on(&pool, &numbers());
            assert!(sorted, "{scheduling:?}");
            assert_eq!(stats.joins, stats.local_pops + stats.steals, "{stats:?}");
            if scheduling == Scheduling::Stealing {
                // A thief takes the oldest job, the biggest: a few steals
                // keep it busy.
                assert!(stats.steals * 10 < stats.joins, "{stats:?}");
            }
            let (parked, cpu) = idle(&pool);
            assert_eq!(parked, WORKERS, "{scheduling:?}");
            // Two spinning threads would use about 200 ms; a tick may be
            // charged to a thread that was just parking.
            assert!(cpu <= Duration::from_millis(20), "{scheduling:?}: {cpu:?}");
            drop(pool); // its threads end before the next pool's start
        }
    }
}
