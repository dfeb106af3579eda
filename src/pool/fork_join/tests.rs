//! The pool's promises, under both schedulings: results are right and every
//! fork is accounted for, a forked job really moves to an idle worker, a
//! panic reaches the caller only after both halves are done, idle workers
//! park, and a coroutine waiting in `install` leaves its may worker free.

use super::*;
use crate::runtime::configure_for_tests;
use may::go;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

const BOTH: [Scheduling; 2] = [Scheduling::Stealing, Scheduling::SharedQueue];

/// Long enough for a loaded machine; a healthy run takes microseconds.
const PATIENCE: Duration = Duration::from_secs(10);

fn shuffled(len: usize, seed: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u64(..)).collect()
}

#[test]
fn quicksort_sorts_and_every_fork_is_counted() {
    for scheduling in BOTH {
        let pool = ForkJoinPool::new(2, scheduling).unwrap();
        for (len, cutoff) in [(0, 1), (1, 1), (2, 1), (1_000, 1), (100_000, 256)] {
            let mut items = shuffled(len, len as u64);
            let mut expected = items.clone();
            expected.sort_unstable();
            pool.install(|worker| quicksort(worker, &mut items, cutoff));
            assert_eq!(items, expected, "{scheduling:?}, {len} items");
        }
        let stats = pool.stats();
        assert_eq!(stats.roots, 5, "{stats:?}");
        assert!(stats.joins > 0, "{stats:?}");
        assert_eq!(stats.joins, stats.local_pops + stats.steals, "{stats:?}");
    }
}

#[test]
fn the_input_cannot_make_the_recursion_deep() {
    // Equal items give the worst pivots: every partition peels one item.
    let pool = ForkJoinPool::new(2, Scheduling::Stealing).unwrap();
    let mut items = vec![7u8; 1 << 16];
    pool.install(|worker| quicksort(worker, &mut items, 1));
    let levels = 2 * 17; // 2 log2 n, rounded up
    assert!(pool.stats().joins <= levels, "{:?}", pool.stats());
    let mut sorted: Vec<u32> = (0..10_000).rev().collect();
    quicksort(&Sequential, &mut sorted, 8);
    assert!(sorted.is_sorted());
}

#[test]
fn helping_nests_at_most_max_nesting_jobs_on_a_stack() {
    // Many small jobs through one FIFO queue: unbounded, this nested
    // thousands of jobs on one stack and overflowed it.
    for scheduling in BOTH {
        let pool = ForkJoinPool::new(2, scheduling).unwrap();
        let mut items = shuffled(200_000, 3);
        pool.install(|worker| quicksort(worker, &mut items, 16));
        assert!(items.is_sorted());
        let deepest = pool.stats().deepest;
        assert!(
            deepest <= worker::MAX_NESTING + 1,
            "{scheduling:?}: {deepest}"
        );
    }
}

/// `a` waits until `b` has started: only another worker can start it.
#[test]
fn a_forked_job_moves_to_an_idle_worker() {
    for scheduling in BOTH {
        let pool = ForkJoinPool::new(2, scheduling).unwrap();
        let (mine, thief) = pool.install(|worker| {
            let thief = AtomicUsize::new(usize::MAX);
            worker.join(
                |_| wait_until(|| thief.load(Ordering::SeqCst) != usize::MAX),
                |worker| thief.store(worker.index(), Ordering::SeqCst),
            );
            (worker.index(), thief.load(Ordering::SeqCst))
        });
        assert_ne!(mine, thief, "{scheduling:?}");
        assert_eq!(pool.stats().steals, 1, "{scheduling:?}");
    }
}

fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "no other worker took the job");
        std::hint::spin_loop();
    }
}

#[test]
fn a_panic_in_a_stolen_job_reaches_the_caller_and_the_pool_goes_on() {
    for scheduling in BOTH {
        let pool = ForkJoinPool::new(2, scheduling).unwrap();
        let failed = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.install(|worker| {
                let started = AtomicBool::new(false);
                worker.join(
                    |_| wait_until(|| started.load(Ordering::SeqCst)),
                    |_| {
                        started.store(true, Ordering::SeqCst);
                        panic!("b failed");
                    },
                )
            })
        }));
        let message = failed.unwrap_err();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"b failed"));
        assert_eq!(pool.install(|worker| worker.join(|_| 1, |_| 2)), (1, 2));
    }
}

#[test]
fn a_panic_in_the_first_half_waits_for_the_second() {
    for scheduling in BOTH {
        let pool = ForkJoinPool::new(2, scheduling).unwrap();
        let (started, finished) = (AtomicBool::new(false), AtomicBool::new(false));
        let failed = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.install(|worker| {
                worker.join(
                    |_| {
                        wait_until(|| started.load(Ordering::SeqCst));
                        panic!("a failed");
                    },
                    |_| {
                        started.store(true, Ordering::SeqCst);
                        // Still running when `a` panics: `join` must wait.
                        thread::sleep(Duration::from_millis(50));
                        finished.store(true, Ordering::SeqCst);
                    },
                )
            })
        }));
        assert!(failed.is_err());
        assert!(finished.load(Ordering::SeqCst), "{scheduling:?}");
    }
}

#[test]
fn a_panic_before_the_second_half_started_drops_it_unrun() {
    let pool = ForkJoinPool::new(1, Scheduling::Stealing).unwrap();
    let ran = AtomicBool::new(false);
    let failed = panic::catch_unwind(AssertUnwindSafe(|| {
        pool.install(|worker| {
            worker.join(
                |_| panic!("a failed"),
                |_| ran.store(true, Ordering::SeqCst),
            )
        })
    }));
    assert!(failed.is_err());
    assert!(
        !ran.load(Ordering::SeqCst),
        "one worker: nobody could steal b"
    );
    assert_eq!(pool.install(|worker| worker.join(|_| 3, |_| 4)), (3, 4));
}

#[test]
fn idle_workers_park() {
    for scheduling in BOTH {
        let pool = ForkJoinPool::new(2, scheduling).unwrap();
        let mut items = shuffled(10_000, 1);
        pool.install(|worker| quicksort(worker, &mut items, 64));
        let deadline = Instant::now() + PATIENCE;
        while pool.stats().asleep < 2 {
            assert!(Instant::now() < deadline, "{:?}", pool.stats());
            thread::sleep(Duration::from_millis(1)); // a plain test thread
        }
        // Parked workers stay parked: nothing wakes them.
        let parks = pool.stats().parks;
        thread::sleep(Duration::from_millis(50));
        let stats = pool.stats();
        assert_eq!((stats.parks, stats.asleep), (parks, 2), "{scheduling:?}");
    }
}

#[test]
fn install_from_a_job_runs_inline() {
    let pool = ForkJoinPool::new(2, Scheduling::Stealing).unwrap();
    let (outer, inner) = pool.install(|worker| (worker.index(), pool.install(|w| w.index())));
    assert_eq!(outer, inner);
    assert_eq!(pool.stats().roots, 1);
}

#[test]
fn zero_workers_is_an_error() {
    assert!(matches!(
        ForkJoinPool::new(0, Scheduling::Stealing),
        Err(ConfigError::NoWorkers)
    ));
}

#[test]
fn coroutines_waiting_in_install_leave_their_may_workers_free() {
    configure_for_tests(); // two may workers
    let pool = Arc::new(ForkJoinPool::new(2, Scheduling::Stealing).unwrap());
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let (started_tx, started_rx) = may::sync::mpsc::channel();
    // As many waiting callers as may has workers: had `install` blocked the
    // thread, nothing else could run on may until they return.
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, release, started) = (pool.clone(), release_rx.clone(), started_tx.clone());
            go!(move || pool.install(move |_| {
                started.send(()).unwrap();
                // Blocking is fine here: this is a pool thread, not may's.
                release.lock().unwrap().recv().unwrap();
            }))
        })
        .collect();
    started_rx.recv().unwrap();
    started_rx.recv().unwrap();
    let answer = go!(|| 6 * 7);
    assert_eq!(answer.join().unwrap(), 42, "a coroutine ran meanwhile");
    for _ in 0..2 {
        release_tx.send(()).unwrap();
    }
    for caller in callers {
        caller.join().unwrap();
    }
}
