use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::runtime::configure_for_tests;

/// Run `f` on a coroutine; fail the test if it has not returned within 10 s
/// (a worker or submitter left parked shows up here, not as a hang).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done_tx, done_rx) = may::sync::mpsc::channel();
    may::go!(move || {
        let _ = done_tx.send(f());
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the test body did not finish within 10 s")
}

/// A gate jobs park on until the test opens it, so a test decides exactly
/// when workers are busy. Parks on a may channel: no worker thread blocks.
#[derive(Clone)]
struct Gate {
    tx: may::sync::mpmc::Sender<()>,
    rx: may::sync::mpmc::Receiver<()>,
}

impl Gate {
    fn new() -> Gate {
        let (tx, rx) = may::sync::mpmc::channel();
        Gate { tx, rx }
    }

    /// Park until the gate lets one job through.
    fn pass(&self) {
        self.rx.recv().unwrap();
    }

    fn open(&self, jobs: usize) {
        for _ in 0..jobs {
            self.tx.send(()).unwrap();
        }
    }
}

/// Poll `done` until it holds; false after `limit`. For states the pool
/// reaches on its own (a worker ending); a short real sleep between looks
/// is fine on the test's OS thread.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    done()
}

#[test]
fn bad_configs_are_refused_with_a_sentence() {
    let cases = [
        (Config::fixed(0, 4), "--min 0: a pool needs at least one worker"),
        (Config::dynamic(8, 4, 4), "--min 8 is above --max 4"),
        (
            Config::fixed(2, 0),
            "--queue 0: the submission queue needs room for at least one job",
        ),
        (
            Config {
                tick: Duration::ZERO,
                ..Config::dynamic(1, 2, 4)
            },
            "--tick 0: the scaler needs a tick above zero",
        ),
        (
            Config {
                idle: Duration::ZERO,
                ..Config::dynamic(1, 2, 4)
            },
            "--idle 0: give spare workers a time above zero before they retire",
        ),
        (
            Config {
                stack_size: 1024,
                ..Config::fixed(1, 1)
            },
            "--stack 1024 bytes is below the smallest worker stack, 8192 bytes",
        ),
    ];
    for (config, sentence) in cases {
        let error = Pool::new(config).err().expect("a bad config must be refused");
        assert_eq!(error.to_string(), sentence);
    }
    assert!(Config::dynamic(1, 4, 16).check().is_ok());
}

#[test]
fn jobs_return_their_results_through_their_handles() {
    configure_for_tests();
    let pool = Pool::new(Config::fixed(2, 4)).unwrap();
    let handles: Vec<_> = (0..20u64).map(|n| pool.submit(move || n * n).unwrap()).collect();
    let ids: Vec<JobId> = handles.iter().map(JobHandle::id).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "ids in submission order from 0");
    let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(squares, (0..20u64).map(|n| n * n).collect::<Vec<_>>());
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.completed), (20, 20));
    assert_eq!(stats.workers, 2);
    assert!(stats.queue_high_water <= 4, "{stats:?}");
    assert!(pool.timeline().is_empty(), "a fixed pool runs no scaler");
}

#[test]
fn a_handle_reports_when_and_how_long() {
    configure_for_tests();
    let pool = Pool::new(Config::fixed(1, 4)).unwrap();
    let gate = Gate::new();
    let blocker = pool.submit({
        let gate = gate.clone();
        move || gate.pass()
    });
    let timed = pool.submit(|| "done").unwrap();
    assert!(!timed.is_finished(), "queued behind a job that has not passed the gate");
    std::thread::sleep(Duration::from_millis(20)); // real queueing time to measure
    gate.open(1);
    blocker.unwrap().join().unwrap();
    let (value, timing) = timed.join_timed().unwrap();
    assert_eq!(value, "done");
    assert!(timing.queued >= Duration::from_millis(20), "{timing:?}");
}

#[test]
fn try_submit_on_a_full_queue_says_full_and_uses_no_id() {
    configure_for_tests();
    within_10s(|| {
        let pool = Pool::new(Config::fixed(1, 2)).unwrap();
        let gate = Gate::new();
        let running = {
            let gate = gate.clone();
            pool.submit(move || gate.pass()).unwrap()
        };
        // Wait until the one worker holds the first job, so the queue is empty.
        assert!(eventually(Duration::from_secs(5), || pool.stats().busy == 1));
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                pool.try_submit(move || gate.pass()).unwrap()
            })
            .collect();
        assert_eq!(pool.try_submit(|| ()).err(), Some(SubmitError::Full));
        assert_eq!(pool.stats().queued, 2);
        gate.open(3);
        running.join().unwrap();
        for handle in queued {
            handle.join().unwrap();
        }
        let next = pool.try_submit(|| ()).unwrap();
        assert_eq!(next.id(), 3, "the refused job used up no id");
        next.join().unwrap();
        assert_eq!(pool.stats().queue_high_water, 2);
    });
}

#[test]
fn submit_parks_on_a_full_queue_until_a_worker_takes_a_job() {
    configure_for_tests();
    within_10s(|| {
        let pool = Arc::new(Pool::new(Config::fixed(1, 1)).unwrap());
        let gate = Gate::new();
        for _ in 0..2 {
            let gate = gate.clone();
            pool.submit(move || gate.pass()).unwrap(); // one runs, one queued
        }
        let (parked_tx, parked_rx) = may::sync::mpsc::channel();
        let submitter = {
            let pool = Arc::clone(&pool);
            may::go!(move || {
                let handle = pool.submit(|| "third").unwrap();
                parked_tx.send(()).unwrap();
                handle.join().unwrap()
            })
        };
        assert!(
            parked_rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "submit returned while the queue was full"
        );
        gate.open(2);
        parked_rx.recv().unwrap();
        assert_eq!(submitter.join().unwrap(), "third");
        assert_eq!(pool.stats().queue_high_water, 1);
    });
}

#[test]
fn a_panicking_job_is_an_error_and_its_worker_carries_on() {
    configure_for_tests();
    let pool = Pool::new(Config::fixed(1, 4)).unwrap();
    let literal = pool.submit(|| -> u8 { panic!("bad input") }).unwrap();
    let formatted = pool.submit(|| -> u8 { panic!("bad input {}", 7) }).unwrap();
    assert_eq!(literal.join(), Err(JobError::Panicked("bad input".into())));
    assert_eq!(formatted.join(), Err(JobError::Panicked("bad input 7".into())));
    // The one worker survived both and runs the next job.
    assert_eq!(pool.submit(|| 5).unwrap().join(), Ok(5));
    let stats = pool.stats();
    assert_eq!((stats.workers, stats.panicked, stats.completed), (1, 2, 1));
    assert_eq!(stats.busy, 0);
}

#[test]
fn the_pool_is_send_and_sync_and_handles_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Pool>();
    send::<JobHandle<Vec<u8>>>();
}
