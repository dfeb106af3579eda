//! Step 4: three ways to hand tasks to workers, on a workload where the
//! choice matters.
//!
//! - shared: one queue; a free worker takes the next task.
//! - round-robin: one queue per worker, task `i` to worker `i % N`.
//! - least-loaded: one queue per worker, each task to the worker with the
//!   fewest tasks queued or running.
//!
//! The skewed batch makes every 4th task 20 times dearer. With 4 workers,
//! round-robin sends every dear task to worker 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Sender};
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    Shared,
    RoundRobin,
    LeastLoaded,
}

// ANCHOR: skew
/// Task `index` costs `base`, or 20x `base` for every `period`-th task
/// (`period` 0: never).
fn cost(index: usize, base: Duration, period: usize) -> Duration {
    if period > 0 && index.is_multiple_of(period) {
        base * 20
    } else {
        base
    }
}
// ANCHOR_END: skew

// ANCHOR: distribute
/// Where the distributor sends task `index`.
fn pick(strategy: Strategy, index: usize, outstanding: &[Arc<AtomicUsize>]) -> usize {
    match strategy {
        Strategy::Shared => 0, // there is only one queue
        Strategy::RoundRobin => index % outstanding.len(),
        Strategy::LeastLoaded => (0..outstanding.len())
            .min_by_key(|&w| outstanding[w].load(Ordering::SeqCst))
            .expect("at least one worker"),
    }
}

/// Run the batch; returns how many tasks each worker ran.
fn run(
    strategy: Strategy,
    tasks: usize,
    workers: usize,
    base: Duration,
    period: usize,
) -> Vec<usize> {
    let queues = if strategy == Strategy::Shared {
        1
    } else {
        workers
    };
    let outstanding: Vec<_> = (0..workers)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let (senders, mut receivers): (Vec<Sender<(usize, Duration)>>, Vec<_>) =
        (0..queues).map(|_| bounded::channel(8)).unzip();
    let (done_tx, done_rx) = bounded::channel::<usize>(64);
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            // Shared: every worker gets a clone of the one receiver.
            let queue = if queues == 1 {
                receivers[0].clone()
            } else {
                receivers.remove(0)
            };
            let (done, load) = (done_tx.clone(), outstanding[w].clone());
            go!(move || {
                let mut pacer = Pacer::new();
                for (_index, cost) in queue.iter() {
                    pacer.wait(cost);
                    load.fetch_sub(1, Ordering::SeqCst); // this task is no longer outstanding
                    done.send(w).expect("the collector is reading");
                }
            })
        })
        .collect();
    drop((done_tx, receivers));
    // The distributor is a coroutine of its own: if this thread filled the
    // queues before reading results, workers blocked on a full result
    // channel and a distributor blocked on full queues would wait forever.
    let distributor = go!(move || {
        for index in 0..tasks {
            let w = pick(strategy, index, &outstanding);
            let q = if queues == 1 { 0 } else { w };
            if strategy != Strategy::Shared {
                outstanding[w].fetch_add(1, Ordering::SeqCst);
            }
            senders[q]
                .send((index, cost(index, base, period)))
                .expect("workers run");
        }
        // Returning drops the senders: every queue ends.
    });
    let mut per_worker = vec![0; workers];
    done_rx.iter().for_each(|w| per_worker[w] += 1);
    distributor.join().unwrap();
    handles.into_iter().for_each(|h| h.join().unwrap());
    per_worker
}
// ANCHOR_END: distribute

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let base = Duration::from_micros(500);
    // The first batch in a process also pays for starting may (its worker
    // and timer threads) and for allocating the first coroutine stacks,
    // which later batches take from may's pool: about 10 ms in a debug
    // build. One unmeasured batch first, so the table compares strategies.
    run(Strategy::Shared, 200, 4, base, 0);
    for (workload, period) in [("uniform", 0), ("every 4th task 20x", 4)] {
        for strategy in [
            Strategy::Shared,
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
        ] {
            let started = Instant::now();
            let per_worker = run(strategy, 200, 4, base, period);
            let elapsed = started.elapsed();
            let (least, most) = (
                per_worker.iter().min().unwrap(),
                per_worker.iter().max().unwrap(),
            );
            println!(
                "{workload:>18}, {:<11}: {elapsed:.1?}, ~{least} to ~{most} tasks per worker",
                format!("{strategy:?}"),
            );
        }
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn every_strategy_runs_every_task() {
        configure_for_tests();
        for strategy in [
            Strategy::Shared,
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
        ] {
            let per_worker = run(strategy, 120, 4, Duration::from_micros(50), 4);
            assert_eq!(per_worker.iter().sum::<usize>(), 120, "{strategy:?}");
        }
    }

    #[test]
    fn round_robin_splits_evenly_by_count_whatever_the_cost() {
        configure_for_tests();
        let per_worker = run(Strategy::RoundRobin, 120, 4, Duration::from_micros(50), 4);
        assert_eq!(per_worker, vec![30; 4]);
    }

    #[test]
    fn least_loaded_steers_work_away_from_a_worker_busy_with_dear_tasks() {
        configure_for_tests();
        // Worker 0 gets the first (dear) task; while it works, the others
        // take the cheap ones, so it ends up with fewer tasks than its share.
        let per_worker = run(Strategy::LeastLoaded, 200, 4, Duration::from_micros(500), 4);
        assert_eq!(per_worker.iter().sum::<usize>(), 200);
        let fewest = *per_worker.iter().min().unwrap();
        assert!(
            fewest < 50,
            "someone took less than an equal share: {per_worker:?}"
        );
    }

    #[test]
    fn the_skew_makes_every_period_th_task_dear() {
        let base = Duration::from_micros(10);
        let dear: Vec<usize> = (0..12).filter(|&i| cost(i, base, 4) > base).collect();
        assert_eq!(dear, vec![0, 4, 8]);
        assert!((0..12).all(|i| cost(i, base, 0) == base));
    }
}
