//! The pool's promises: results and panics come back to the caller, at most
//! `threads` jobs run at once, and a caller parks without holding its worker.

use super::*;
use crate::runtime::configure_for_tests;
use may::go;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn results_come_back_to_coroutines_and_to_plain_threads() {
    configure_for_tests();
    let pool = Arc::new(BlockingPool::new(2, 4).unwrap());
    let on_coroutine = {
        let pool = pool.clone();
        go!(move || pool.run(|| 6 * 7))
    };
    assert_eq!(on_coroutine.join().unwrap(), Ok(42));
    assert_eq!(pool.run(|| "from a thread".len()), Ok(13));
    let name = pool.run(|| thread::current().name().map(str::to_owned));
    assert!(
        name.as_ref()
            .unwrap()
            .as_deref()
            .unwrap()
            .starts_with("blocking-"),
        "{name:?}"
    );
    assert_eq!(run(|| 1 + 1), Ok(2), "the process-wide pool");
}

#[test]
fn a_panicking_job_is_an_error_and_its_thread_serves_on() {
    configure_for_tests();
    let pool = BlockingPool::new(1, 1).unwrap();
    let failed = pool.run(|| -> u32 { panic!("disk on fire") });
    assert_eq!(failed, Err(Error::Panicked("disk on fire".to_owned())));
    let formatted = pool.run(|| -> u32 { panic!("{} on fire", "disk") });
    assert_eq!(formatted, Err(Error::Panicked("disk on fire".to_owned())));
    // The only thread caught both panics and is still there.
    assert_eq!(pool.run(|| 7), Ok(7));
    let as_io: io::Error = failed.unwrap_err().into();
    assert_eq!(as_io.to_string(), "the blocking job panicked: disk on fire");
}

#[test]
fn many_coroutines_wait_their_turn_on_two_threads() {
    configure_for_tests();
    const CALLERS: usize = 20;
    const JOB: Duration = Duration::from_millis(10);
    let pool = Arc::new(BlockingPool::new(2, 4).unwrap());
    let running = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (pool, running, most) = (pool.clone(), running.clone(), most_at_once.clone());
            go!(move || {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(JOB); // a pool thread: blocking is its job
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * 10
                })
            })
        })
        .collect();
    let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        results,
        (0..CALLERS).map(|i| Ok(i * 10)).collect::<Vec<_>>()
    );
    assert_eq!(
        most_at_once.load(Ordering::SeqCst),
        2,
        "two threads, both used"
    );
    // 20 jobs of 10 ms on two threads take at least 10 rounds.
    let elapsed = started.elapsed();
    assert!(elapsed >= JOB * (CALLERS as u32 / 2), "{elapsed:?}");
}

#[test]
fn workers_stay_free_while_jobs_block() {
    configure_for_tests(); // two may workers
    const BLOCKERS: usize = 4; // more than the workers: run() must not hold one
    let pool = Arc::new(BlockingPool::new(BLOCKERS, 1).unwrap());
    let (started_tx, started_rx) = mpsc::channel();
    let blockers: Vec<_> = (0..BLOCKERS)
        .map(|_| {
            let (pool, started) = (pool.clone(), started_tx.clone());
            go!(move || {
                pool.run(move || {
                    started.send(()).unwrap();
                    thread::sleep(Duration::from_millis(300));
                })
            })
        })
        .collect();
    for _ in 0..BLOCKERS {
        started_rx.recv().unwrap(); // every thread is now blocked
    }

    // A coroutine answers pings from this (plain) thread meanwhile.
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (pong_tx, pong_rx) = mpsc::channel::<()>();
    let responder = go!(move || ping_rx.iter().for_each(|()| pong_tx.send(()).unwrap()));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let sent = Instant::now();
        ping_tx.send(()).unwrap();
        pong_rx.recv().unwrap();
        slowest = slowest.max(sent.elapsed());
        thread::sleep(Duration::from_millis(5)); // pacing on a plain thread
    }
    // Had the four callers blocked both workers, a ping would wait ~300 ms.
    // The bound leaves a wide margin for a loaded machine.
    assert!(
        slowest < Duration::from_millis(150),
        "slowest reply {slowest:?}"
    );
    drop(ping_tx);
    responder.join().unwrap();
    for blocker in blockers {
        assert_eq!(blocker.join().unwrap(), Ok(()));
    }
}

#[test]
fn dropping_the_pool_joins_its_threads() {
    configure_for_tests();
    // A thread-local's destructor runs as its OS thread ends.
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    struct CountsItsEnd;
    impl Drop for CountsItsEnd {
        fn drop(&mut self) {
            ENDED.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local!(static MARK: CountsItsEnd = const { CountsItsEnd });

    let pool = Arc::new(BlockingPool::new(2, 2).unwrap());
    // Two jobs that wait for each other run on both threads.
    let both = Arc::new(std::sync::Barrier::new(2));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, both) = (pool.clone(), both.clone());
            go!(move || {
                pool.run(move || {
                    MARK.with(|_| ());
                    both.wait();
                })
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap(), Ok(()));
    }
    assert_eq!(ENDED.load(Ordering::SeqCst), 0, "the threads wait for jobs");
    drop(Arc::into_inner(pool).expect("the callers are done"));
    assert_eq!(
        ENDED.load(Ordering::SeqCst),
        2,
        "drop returned after both ended"
    );
}
