//! Step 3: a pool that grows and shrinks with the queue.
//!
//! A fixed pool is sized for the worst burst and idles the rest of the time.
//! Here a supervisor coroutine watches the shared queue: while more than
//! `scale_up_at` tasks wait and fewer than `max` workers are alive, it adds
//! one. A worker that gets no task for `idle` retires, unless that would
//! leave fewer than `min`. Tasks arrive in bursts, so the pool has something
//! to follow.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::go;
use may_patterns::bounded::{self, Receiver, RecvTimeoutError, Sender};
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};

#[derive(Debug, Clone, Copy)]
struct Task {
    index: usize,
    cost: Duration,
}

/// The pool's settings: its bounds and when it changes size.
#[derive(Debug, Clone, Copy)]
struct Limits {
    min: usize,
    max: usize,
    scale_up_at: usize,
    idle: Duration,
}

// ANCHOR: pool
/// Workers alive now, the most and fewest seen, and how many retired.
#[derive(Default)]
struct PoolStats {
    alive: AtomicUsize,
    peak: AtomicUsize,
    low: AtomicUsize,
    retired: AtomicUsize,
}

impl PoolStats {
    /// Leave the pool unless that would take it below `min`. Only workers
    /// decrement `alive` and only the supervisor increments it, so a
    /// compare-and-swap keeps it within its bounds without a lock.
    fn try_retire(&self, min: usize) -> bool {
        let mut alive = self.alive.load(Ordering::SeqCst);
        while alive > min {
            let fewer = alive - 1;
            match self
                .alive
                .compare_exchange(alive, fewer, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.low.fetch_min(fewer, Ordering::SeqCst);
                    self.retired.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                Err(now) => alive = now,
            }
        }
        false
    }
}

fn worker(queue: Receiver<Task>, done: Sender<usize>, stats: Arc<PoolStats>, limits: Limits) {
    let mut pacer = Pacer::new();
    loop {
        match queue.recv_timeout(limits.idle) {
            Ok(task) => {
                pacer.wait(task.cost);
                done.send(task.index).expect("the collector is reading");
            }
            Err(RecvTimeoutError::Timeout) if stats.try_retire(limits.min) => return,
            Err(RecvTimeoutError::Timeout) => {} // needed to keep the floor: wait on
            Err(RecvTimeoutError::Disconnected) => return, // the batch is over
        }
    }
}
// ANCHOR_END: pool

// ANCHOR: supervisor
/// Start `min` workers, then add one whenever the queue is longer than
/// `scale_up_at` and fewer than `max` are alive, until `finished`.
fn supervise(
    queue: Receiver<Task>,
    done: Sender<usize>,
    stats: Arc<PoolStats>,
    limits: Limits,
    finished: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    let start = |workers: &mut Vec<JoinHandle<()>>| {
        let alive = stats.alive.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(alive, Ordering::SeqCst);
        let (q, d, s) = (queue.clone(), done.clone(), stats.clone());
        workers.push(go!(move || worker(q, d, s, limits)));
    };
    for _ in 0..limits.min {
        start(&mut workers);
    }
    while !finished.load(Ordering::SeqCst) {
        let alive = stats.alive.load(Ordering::SeqCst);
        if queue.len() > limits.scale_up_at && alive < limits.max {
            start(&mut workers);
        } else {
            may::coroutine::sleep(Duration::from_millis(1)); // look again soon
        }
    }
    workers
}
// ANCHOR_END: supervisor

// ANCHOR: run
/// `bursts` bursts of `per_burst` tasks, `gap` apart; returns the indices
/// done and the pool's statistics.
fn run(bursts: usize, per_burst: usize, gap: Duration, limits: Limits) -> (Vec<usize>, PoolStats) {
    let (queue_tx, queue_rx) = bounded::channel::<Task>(64);
    let (done_tx, done_rx) = bounded::channel::<usize>(64);
    let stats = Arc::new(PoolStats {
        low: AtomicUsize::new(usize::MAX),
        ..PoolStats::default()
    });
    let finished = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let (stats, finished) = (stats.clone(), finished.clone());
        go!(move || supervise(queue_rx, done_tx, stats, limits, finished))
    };
    let distributor = go!(move || {
        for burst in 0..bursts {
            if burst > 0 {
                may::coroutine::sleep(gap); // the next burst has not arrived
            }
            for i in 0..per_burst {
                let task = Task {
                    index: burst * per_burst + i,
                    cost: Duration::from_millis(1),
                };
                queue_tx.send(task).expect("a worker is always alive");
            }
        }
        drop(queue_tx); // the end of the queue, then tell the supervisor
        finished.store(true, Ordering::SeqCst);
    });
    let done: Vec<usize> = done_rx.iter().collect();
    distributor.join().unwrap();
    for w in supervisor.join().unwrap() {
        w.join().unwrap();
    }
    (
        done,
        Arc::into_inner(stats).expect("every worker has been joined"),
    )
}
// ANCHOR_END: run

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let limits = Limits {
        min: 1,
        max: 16,
        scale_up_at: 8,
        idle: Duration::from_millis(10),
    };
    let started = Instant::now();
    let (done, stats) = run(3, 200, Duration::from_millis(100), limits);
    println!(
        "{} tasks in 3 bursts: {:.1?}; workers: peak ~{}, low ~{}, ~{} retired idle",
        done.len(),
        started.elapsed(),
        stats.peak.into_inner(),
        stats.low.into_inner(),
        stats.retired.into_inner()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_pool_grows_in_bursts_and_shrinks_between_them_within_its_bounds() {
        configure_for_tests();
        let limits = Limits {
            min: 2,
            max: 8,
            scale_up_at: 4,
            idle: Duration::from_millis(5),
        };
        let (mut done, stats) = run(3, 100, Duration::from_millis(60), limits);
        done.sort_unstable();
        assert_eq!(done, (0..300).collect::<Vec<_>>(), "each task once");
        assert_eq!(
            stats.peak.into_inner(),
            8,
            "a long queue grows the pool to max"
        );
        assert!(
            stats.retired.into_inner() > 0,
            "idle workers retire in the gaps"
        );
        let low = stats.low.into_inner();
        assert!((2..8).contains(&low), "never below min: {low}");
    }

    #[test]
    fn retiring_stops_at_the_floor() {
        let stats = PoolStats::default();
        stats.alive.store(3, Ordering::SeqCst);
        assert!(stats.try_retire(2));
        assert!(!stats.try_retire(2));
        assert_eq!(stats.alive.load(Ordering::SeqCst), 2);
    }
}
