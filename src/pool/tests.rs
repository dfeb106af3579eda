use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scale::{Decision, Rule, Seen};
use super::*;
use crate::runtime::configure_for_tests;

/// Run `f` on a coroutine; fail the test if it has not returned within 10 s
/// (a worker or submitter left parked shows up here, not as a hang). A
/// failed assertion inside `f` fails the test with its own message.
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done_tx, done_rx) = may::sync::mpsc::channel();
    let body = may::go!(move || {
        let _ = done_tx.send(f());
    });
    match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match body.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body sends before it returns"),
        },
        Err(timeout) => panic!("the test body did not finish within 10 s: {timeout}"),
    }
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
/// reaches on its own (a worker ending). Waits between looks on the alarm
/// thread, so it parks a coroutine instead of blocking its worker.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        crate::alarm::shared().sleep(Duration::from_millis(2));
    }
    done()
}

#[test]
fn bad_configs_are_refused_with_a_sentence() {
    let cases = [
        (
            Config::fixed(0, 4),
            "--min 0: a pool needs at least one worker",
        ),
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
            "--stack 1024 is below 32768 bytes, the smallest worker stack",
        ),
    ];
    for (config, sentence) in cases {
        let error = Pool::new(config)
            .err()
            .expect("a bad config must be refused");
        assert_eq!(error.to_string(), sentence);
    }
    assert!(Config::dynamic(1, 4, 16).check().is_ok());
}

#[test]
fn jobs_return_their_results_through_their_handles() {
    configure_for_tests();
    let pool = Pool::new(Config::fixed(2, 4)).unwrap();
    let handles: Vec<_> = (0..20u64)
        .map(|n| pool.submit(move || n * n).unwrap())
        .collect();
    let ids: Vec<JobId> = handles.iter().map(JobHandle::id).collect();
    assert_eq!(
        ids,
        (0..20).collect::<Vec<_>>(),
        "ids in submission order from 0"
    );
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
    assert!(
        !timed.is_finished(),
        "queued behind a job that has not passed the gate"
    );
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
    assert_eq!(
        formatted.join(),
        Err(JobError::Panicked("bad input 7".into()))
    );
    // The one worker survived both and runs the next job.
    assert_eq!(pool.submit(|| 5).unwrap().join(), Ok(5));
    let stats = pool.stats();
    assert_eq!((stats.workers, stats.panicked, stats.completed), (1, 2, 1));
    assert_eq!(stats.busy, 0);
}

#[test]
fn a_panic_fits_the_smallest_stack() {
    configure_for_tests();
    within_10s(|| {
        // One word over the minimum: not may's default size, so a fresh
        // stack of this size, not a pooled one of the default.
        let config = Config {
            stack_size: config::MIN_STACK_SIZE + 8,
            ..Config::fixed(1, 2)
        };
        let pool = Pool::new(config).unwrap();
        // The panic hook prints a backtrace only under RUST_BACKTRACE, and
        // that is its deepest path; capture and print one here whatever
        // the environment, so the test checks the worst case everywhere.
        let panicked = pool.submit(|| -> u8 {
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            panic!(
                "on a small stack, after a backtrace of {} bytes",
                trace.len()
            )
        });
        assert!(panicked.unwrap().join().is_err());
        assert_eq!(
            pool.submit(|| 1).unwrap().join(),
            Ok(1),
            "the worker survived"
        );
    });
}

#[test]
fn the_pool_is_send_and_sync_and_handles_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Pool>();
    send::<JobHandle<Vec<u8>>>();
}

// --- the scaling rule, tick by tick (no clock, no threads) ---

fn rule(min: usize, max: usize) -> Rule {
    Rule::new(&Config {
        idle: Duration::from_millis(100),
        grow_after: Duration::from_millis(10),
        tick: Duration::from_millis(5),
        ..Config::dynamic(min, max, 16)
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A tick at which jobs wait (`waited` ms for the oldest) and nobody is spare.
fn backlog(at: u64, workers: usize, waited: u64) -> Seen {
    Seen {
        at: ms(at),
        workers,
        queued: 3,
        oldest_wait: Some(ms(waited)),
        spare_low: 0,
    }
}

/// A tick with an empty queue and `spare` workers never needed since the last.
fn quiet(at: u64, workers: usize, spare: usize) -> Seen {
    Seen {
        at: ms(at),
        workers,
        queued: 0,
        oldest_wait: None,
        spare_low: spare,
    }
}

#[test]
fn the_rule_grows_one_a_tick_on_a_long_wait_up_to_max() {
    let mut rule = rule(1, 3);
    assert_eq!(
        rule.decide(backlog(5, 1, 9)),
        Decision::Stay,
        "9 ms < grow_after"
    );
    assert_eq!(rule.decide(backlog(10, 1, 10)), Decision::Grow);
    assert_eq!(rule.decide(backlog(15, 2, 15)), Decision::Grow);
    assert_eq!(rule.decide(backlog(20, 3, 20)), Decision::Stay, "at max");
}

#[test]
fn the_rule_retires_what_a_whole_idle_window_never_needed() {
    let mut rule = rule(1, 4);
    assert_eq!(rule.decide(backlog(0, 3, 50)), Decision::Grow); // 4 workers, window from 0
    for at in (5..100).step_by(5) {
        // At the busiest moment of the window 2 workers were spare.
        let spare = if at == 50 { 2 } else { 3 };
        assert_eq!(
            rule.decide(quiet(at, 4, spare)),
            Decision::Stay,
            "at {at} ms"
        );
    }
    assert_eq!(rule.decide(quiet(100, 4, 3)), Decision::Shrink(2));
    // The next window starts now; every worker but one spare: down to min.
    for at in (105..200).step_by(5) {
        assert_eq!(rule.decide(quiet(at, 2, 2)), Decision::Stay);
    }
    assert_eq!(rule.decide(quiet(200, 2, 2)), Decision::Shrink(1));
    assert_eq!(rule.decide(quiet(300, 1, 1)), Decision::Stay, "at min");
}

#[test]
fn a_load_that_flaps_faster_than_idle_does_not_flap_the_pool() {
    let mut rule = rule(1, 4);
    let mut workers = 1;
    let (mut grew, mut shrank) = (0, 0);
    // 2 s of a 40 ms cycle: 10 ms of backlog, 30 ms with everyone spare.
    for at in (0..2000).step_by(5) {
        let seen = match at % 40 {
            0..=9 => backlog(at, workers, 20),
            _ => quiet(at, workers, workers),
        };
        match rule.decide(seen) {
            Decision::Grow => (workers, grew) = (workers + 1, grew + 1),
            Decision::Shrink(n) => (workers, shrank) = (workers - n, shrank + n),
            Decision::Stay => {}
        }
    }
    assert_eq!(
        (workers, grew, shrank),
        (4, 3, 0),
        "grew to the peak and stayed"
    );
    // The lull that outlasts idle gives the spare workers back in one step.
    let mut decisions = (2000..2200)
        .step_by(5)
        .map(|at| rule.decide(quiet(at, 4, 4)));
    assert!(decisions.any(|d| d == Decision::Shrink(3)));
}

#[test]
fn the_rule_does_not_shrink_within_idle_of_a_grow() {
    let mut rule = rule(1, 4);
    for at in (5..95).step_by(5) {
        assert_eq!(rule.decide(quiet(at, 2, 1)), Decision::Stay);
    }
    assert_eq!(rule.decide(backlog(95, 2, 10)), Decision::Grow);
    for at in (100..195).step_by(5) {
        assert_eq!(rule.decide(quiet(at, 3, 2)), Decision::Stay, "at {at} ms");
    }
    assert_eq!(rule.decide(quiet(195, 3, 2)), Decision::Shrink(2));
}

#[test]
fn the_history_keeps_only_the_latest_samples_and_events() {
    let history = scale::History::default();
    for n in 0..scale::TIMELINE_LEN + 5 {
        history.sample(Sample {
            at: ms(n as u64),
            workers: 1,
            busy: 0,
            queued: 0,
        });
    }
    for n in 0..scale::EVENTS_LEN + 3 {
        history.event(ScaleEvent {
            at: ms(n as u64),
            kind: ScaleKind::Grew,
            workers: 2,
            reason: scale::GREW_BECAUSE,
        });
    }
    let (samples, events) = (history.samples(), history.events());
    assert_eq!((samples.len(), samples[0].at), (scale::TIMELINE_LEN, ms(5)));
    assert_eq!((events.len(), events[0].at), (scale::EVENTS_LEN, ms(3)));
}

// --- a scaling pool, live (short ticks, loose bounds) ---

/// A dynamic pool with short ticks for tests.
fn quick(min: usize, max: usize, idle: Duration) -> Pool {
    Pool::new(Config {
        idle,
        grow_after: ms(4),
        tick: ms(2),
        ..Config::dynamic(min, max, 64)
    })
    .unwrap()
}

/// A job that waits `d` on the process's alarm thread: it parks its
/// coroutine, as an I/O wait would, and arms no may timer.
fn wait_job(d: Duration) -> impl FnOnce() + Send + 'static {
    move || crate::alarm::shared().sleep(d)
}

#[test]
fn a_flapping_load_grows_the_pool_once_and_a_long_lull_shrinks_it() {
    configure_for_tests();
    within_10s(|| {
        let pool = quick(1, 4, ms(400));
        // 12 bursts, 30 ms apart (well inside idle): 8 jobs of 5 ms each.
        for _ in 0..12 {
            let burst: Vec<_> = (0..8)
                .map(|_| pool.submit(wait_job(ms(5))).unwrap())
                .collect();
            crate::alarm::shared().sleep(ms(30));
            for job in burst {
                job.join().unwrap();
            }
        }
        let during = pool.stats();
        assert!((1..=3).contains(&during.grown), "{during:?}");
        assert_eq!(
            during.shrunk,
            0,
            "shrank between bursts: {:?}",
            pool.events()
        );
        assert!(pool.events().iter().all(|e| e.kind == ScaleKind::Grew));
        // Quiet now: after idle, the spare workers go, down to min.
        let shrunk = eventually(Duration::from_secs(5), || pool.stats().workers == 1);
        assert!(shrunk, "{:?}", pool.events());
        let after = pool.stats();
        assert_eq!(after.shrunk, after.grown, "{after:?}");
        let last = *pool.events().last().unwrap();
        assert_eq!((last.kind, last.workers), (ScaleKind::Shrank, 1));
        assert_eq!(last.reason, scale::SHRANK_BECAUSE);
        let timeline = pool.timeline();
        assert!(!timeline.is_empty());
        assert!(
            timeline.iter().all(|s| (1..=4).contains(&s.workers)),
            "{timeline:?}"
        );
        assert!(timeline.iter().any(|s| s.workers > 1));
        assert!(timeline.windows(2).all(|w| w[0].at <= w[1].at));
    });
}

#[test]
fn a_backlog_grows_the_pool_to_max_and_no_further() {
    configure_for_tests();
    within_10s(|| {
        let pool = quick(1, 3, Duration::from_secs(5));
        let jobs: Vec<_> = (0..30)
            .map(|_| pool.submit(wait_job(ms(10))).unwrap())
            .collect();
        for job in jobs {
            job.join().unwrap();
        }
        let stats = pool.stats();
        assert_eq!((stats.grown, stats.workers), (2, 3), "{stats:?}");
        let events = pool.events();
        assert_eq!(events.iter().map(|e| e.workers).collect::<Vec<_>>(), [2, 3]);
        assert!(events.iter().all(|e| e.reason == scale::GREW_BECAUSE));
        assert!(pool.timeline().iter().all(|s| s.workers <= 3));
    });
}

// --- shutdown ---

#[test]
fn drain_runs_every_queued_job_then_every_worker_ends() {
    configure_for_tests();
    within_10s(|| {
        let pool = quick(2, 4, ms(100));
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..40 {
            let ran = Arc::clone(&ran);
            pool.submit(move || {
                crate::alarm::shared().sleep(ms(1));
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        let report = pool.shutdown(Shutdown::Drain);
        assert_eq!(ran.load(Ordering::SeqCst), 40);
        assert_eq!((report.completed, report.cancelled.len()), (40, 0));
        assert_eq!(
            (report.stats.workers, report.stats.busy),
            (0, 0),
            "{report:?}"
        );
    });
}

#[test]
fn cancel_finishes_the_running_job_and_cancels_the_queued_ones() {
    configure_for_tests();
    within_10s(|| {
        let pool = Pool::new(Config::fixed(1, 8)).unwrap();
        let gate = Gate::new();
        let running = {
            let gate = gate.clone();
            pool.submit(move || gate.pass()).unwrap()
        };
        assert!(eventually(Duration::from_secs(5), || pool.stats().busy == 1));
        let queued: Vec<_> = (0..5).map(|n| pool.submit(move || n).unwrap()).collect();
        let ids: Vec<JobId> = queued.iter().map(JobHandle::id).collect();
        let shutting = may::go!(move || pool.shutdown(Shutdown::Cancel));
        // The queued jobs are cancelled at once; only then let the running one end.
        assert!(eventually(Duration::from_secs(5), || queued
            .iter()
            .all(JobHandle::is_finished)));
        gate.open(1);
        let report = shutting.join().unwrap();
        assert_eq!(running.join(), Ok(()));
        for handle in queued {
            assert_eq!(handle.join(), Err(JobError::Cancelled));
        }
        assert_eq!(report.cancelled, ids);
        assert_eq!(report.completed, 1);
        assert_eq!((report.stats.cancelled, report.stats.workers), (5, 0));
    });
}

#[test]
fn dropping_the_pool_drains_it_and_no_worker_outlives_it() {
    configure_for_tests();
    within_10s(|| {
        let pool = quick(1, 4, ms(100));
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let ran = Arc::clone(&ran);
            pool.submit(move || {
                crate::alarm::shared().sleep(ms(2));
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        // Every worker (and the scaler) holds the shared state: once drop
        // returns, none may hold it any more.
        let state = Arc::downgrade(&pool.shared);
        drop(pool);
        assert_eq!(ran.load(Ordering::SeqCst), 20);
        assert!(state.upgrade().is_none(), "a worker outlived its pool");
    });
}

#[test]
fn a_closed_pool_refuses_jobs() {
    configure_for_tests();
    let pool = Pool::new(Config::fixed(1, 2)).unwrap();
    let accepted = pool.submit(|| 1).unwrap();
    pool.close();
    assert_eq!(pool.submit(|| 2).err(), Some(Closed));
    assert_eq!(pool.try_submit(|| 3).err(), Some(SubmitError::Closed));
    assert_eq!(
        accepted.join(),
        Ok(1),
        "a job accepted before close still runs"
    );
    let report = pool.shutdown(Shutdown::Drain);
    assert_eq!((report.stats.submitted, report.completed), (1, 1));
}

#[test]
fn the_books_balance_with_many_submitters_panics_and_a_cancel() {
    configure_for_tests();
    within_10s(|| {
        let pool = Arc::new(quick(1, 4, ms(50)));
        let submitters: Vec<_> = (0..4u64)
            .map(|s| {
                let pool = Arc::clone(&pool);
                may::go!(move || {
                    (0..100u64)
                        .map(|i| {
                            let n = s * 100 + i;
                            let job = move || {
                                crate::alarm::shared().sleep(Duration::from_micros(200));
                                assert!(n % 7 != 0, "job {n} fails");
                                n
                            };
                            // Half park on a full queue, half shed the load.
                            let handle = match n % 2 {
                                0 => pool.submit(job).ok(),
                                _ => pool.try_submit(job).ok(),
                            };
                            (n, handle)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let jobs: Vec<_> = submitters
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        let pool = Arc::into_inner(pool).expect("every submitter has returned");
        let report = pool.shutdown(Shutdown::Cancel);
        let (mut ok, mut panicked, mut cancelled, mut refused) = (0, 0, Vec::new(), 0);
        for (n, handle) in jobs {
            let Some(handle) = handle else {
                refused += 1;
                continue;
            };
            let id = handle.id();
            match handle.join() {
                Ok(value) => {
                    assert_eq!(value, n);
                    ok += 1;
                }
                Err(JobError::Panicked(message)) => {
                    assert_eq!(message, format!("job {n} fails"));
                    panicked += 1;
                }
                Err(JobError::Cancelled) => cancelled.push(id),
            }
        }
        cancelled.sort_unstable();
        let stats = &report.stats;
        assert_eq!(stats.submitted, 400 - refused, "{stats:?}");
        assert_eq!((report.completed, stats.panicked), (ok, panicked));
        assert_eq!(report.cancelled, cancelled);
        assert_eq!(stats.cancelled, cancelled.len() as u64);
        assert_eq!(ok + panicked + stats.cancelled, stats.submitted);
        assert_eq!((stats.workers, stats.busy, stats.queued), (0, 0, 0));
        assert!(stats.queue_high_water <= 64);
    });
}
