//! The breaker's state machine, exactly: every transition, the half-open
//! permit count, stale outcomes, events in order, and callers racing a
//! transition. Time comes from a [`ManualClock`], so every count and every
//! `retry_after` is asserted exactly.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use may::go;

use super::*;
use crate::clock::ManualClock;
use crate::runtime::configure_for_tests;

const STUCK: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Window of 10 calls, all of them needed, trip at 50% failures or 50% calls
/// slower than 100 ms, open for 1 s, 3 probes.
fn config() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        min_calls: 10,
        failure_rate: 0.5,
        slow_call: ms(100),
        slow_call_rate: 0.5,
        open_for: ms(1_000),
        half_open_calls: 3,
    }
}

fn breaker() -> (Breaker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    (Breaker::with_clock(config(), clock.clone()).unwrap(), clock)
}

fn succeed(breaker: &Breaker<ManualClock>, n: u32) {
    for _ in 0..n {
        breaker.try_call().expect("closed").success();
    }
}

fn fail(breaker: &Breaker<ManualClock>, n: u32) {
    for _ in 0..n {
        breaker.try_call().expect("closed").failure();
    }
}

/// Trip a fresh breaker with ten failures at the clock's current time.
fn tripped() -> (Breaker<ManualClock>, ManualClock) {
    let (breaker, clock) = breaker();
    fail(&breaker, 10);
    assert_eq!(breaker.state(), State::Open);
    (breaker, clock)
}

#[test]
fn every_block_can_be_shared_across_workers() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Breaker>();
    send_sync::<Breaker<ManualClock>>();
    send_sync::<Permit<'static>>();
    send_sync::<RetryBudget>();
    send_sync::<Bulkhead>();
    send_sync::<BulkheadPermit<'static>>();
}

#[test]
fn no_rate_counts_before_min_calls() {
    let (breaker, _) = breaker();
    fail(&breaker, 9);
    assert_eq!(breaker.state(), State::Closed, "9 calls < min_calls");
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn trips_when_the_failure_share_reaches_the_threshold() {
    let (breaker, _) = breaker();
    let events = breaker.subscribe();
    succeed(&breaker, 5);
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed);
    fail(&breaker, 1); // 5 of 10: 50% >= 50%
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(events.try_recv().unwrap().reason, Reason::FailureRate(0.5));
}

#[test]
fn the_count_window_forgets_the_oldest_calls() {
    let (breaker, _) = breaker();
    fail(&breaker, 4);
    succeed(&breaker, 10); // the 4 failures have left the window
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed, "4 of the last 10 failed");
    let snapshot = breaker.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (10, 4));
    assert_eq!(snapshot.failure_rate, 0.4);
}

#[test]
fn trips_on_the_slow_share_even_when_every_call_succeeds() {
    let (breaker, clock) = breaker();
    let events = breaker.subscribe();
    for i in 0..10 {
        let permit = breaker.try_call().unwrap();
        // Exactly slow_call is not slow; a nanosecond more is.
        clock.advance(if i % 2 == 0 {
            ms(100)
        } else {
            ms(100) + Duration::from_nanos(1)
        });
        permit.success();
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(events.try_recv().unwrap().reason, Reason::SlowCallRate(0.5));
}

#[test]
fn a_time_window_counts_only_the_last_span() {
    let clock = ManualClock::new();
    let config = BreakerConfig {
        window: Window::Time(Duration::from_secs(10)),
        ..config()
    };
    let breaker = Breaker::with_clock(config, clock.clone()).unwrap();
    fail(&breaker, 9);
    clock.advance(Duration::from_secs(10)); // those 9 leave the window
    succeed(&breaker, 5);
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed, "4 of 9 calls in the window");
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open, "5 of 10");
}

#[test]
fn open_rejects_with_the_exact_time_left_then_half_opens_by_the_clock() {
    let (breaker, clock) = tripped();
    clock.advance(ms(250));
    assert_eq!(
        breaker.try_call().unwrap_err(),
        Rejected {
            retry_after: ms(750)
        }
    );
    clock.advance(ms(749));
    assert_eq!(breaker.try_call().unwrap_err().retry_after, ms(1));
    assert_eq!(breaker.snapshot().rejected, 2);
    clock.advance(ms(1));
    // No timer moved it: the state changes only when a call comes.
    assert_eq!(breaker.state(), State::Open);
    let probe = breaker.try_call().expect("open_for has passed");
    assert_eq!(breaker.state(), State::HalfOpen);
    probe.success();
}

#[test]
fn half_open_hands_out_exactly_half_open_calls_permits() {
    let (breaker, clock) = tripped();
    clock.advance(ms(1_000));
    let probes: Vec<_> = (0..3).map(|_| breaker.try_call().unwrap()).collect();
    for _ in 0..5 {
        assert_eq!(
            breaker.try_call().unwrap_err(),
            Rejected {
                retry_after: Duration::ZERO
            }
        );
    }
    // Finishing two of three decides nothing and frees no permit.
    let mut probes = probes.into_iter();
    probes.next().unwrap().success();
    probes.next().unwrap().success();
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(breaker.try_call().is_err());
    probes.next().unwrap().success();
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn probes_under_the_threshold_close_it_even_with_one_failure() {
    let (breaker, clock) = tripped();
    clock.advance(ms(1_000));
    let events = breaker.subscribe();
    let (a, b, c) = (
        breaker.try_call().unwrap(),
        breaker.try_call().unwrap(),
        breaker.try_call().unwrap(),
    );
    a.failure(); // 1 of 3 = 33% < 50%
    b.success();
    c.success();
    assert_eq!(breaker.state(), State::Closed);
    let reasons: Vec<_> = events.try_iter().map(|t| t.reason).collect();
    assert_eq!(reasons, [Reason::OpenElapsed, Reason::ProbesPassed]);
    // Closed again from an empty window: nine failures do not trip it.
    fail(&breaker, 9);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn failing_probes_open_it_again_for_a_full_interval() {
    let (breaker, clock) = tripped();
    clock.advance(ms(1_500));
    let (a, b, c) = (
        breaker.try_call().unwrap(),
        breaker.try_call().unwrap(),
        breaker.try_call().unwrap(),
    );
    a.failure();
    b.success();
    clock.advance(ms(10));
    c.failure(); // 2 of 3 failed
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.try_call().unwrap_err().retry_after, ms(1_000));
}

#[test]
fn slow_probes_open_it_again() {
    let (breaker, clock) = tripped();
    clock.advance(ms(1_000));
    let probes: Vec<_> = (0..3).map(|_| breaker.try_call().unwrap()).collect();
    clock.advance(ms(101));
    for probe in probes {
        probe.success();
    }
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_dropped_permit_counts_as_a_failure() {
    let (breaker, _) = breaker();
    for _ in 0..10 {
        drop(breaker.try_call().unwrap());
    }
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn an_outcome_from_an_earlier_generation_is_ignored() {
    let (breaker, clock) = breaker();
    // Taken while closed; the call is slow and outlives the trip.
    let slow_from_before = breaker.try_call().unwrap();
    let failing_from_before = breaker.try_call().unwrap();
    fail(&breaker, 10);
    assert_eq!(breaker.state(), State::Open);
    clock.advance(ms(400));
    // Reported while open: it must not restart the open interval.
    failing_from_before.failure();
    assert_eq!(breaker.try_call().unwrap_err().retry_after, ms(600));
    clock.advance(ms(600));
    let probes: Vec<_> = (0..3).map(|_| breaker.try_call().unwrap()).collect();
    // Reported while half-open: it is not a probe and frees no permit.
    slow_from_before.success();
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(breaker.snapshot().calls, 0, "no probe has finished");
    assert!(breaker.try_call().is_err(), "still three probes out");
    assert_eq!(breaker.snapshot().stale, 2);
    for probe in probes {
        probe.success();
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn events_arrive_in_order_with_their_times_on_every_subscriber() {
    let (breaker, clock) = breaker();
    let first = breaker.subscribe();
    let second = breaker.subscribe();
    let gone = breaker.subscribe();
    drop(gone); // a dead subscriber must not stop the others
    clock.set(ms(5_000));
    fail(&breaker, 10); // closed -> open at 5 s
    clock.advance(ms(1_000));
    let probes: Vec<_> = (0..3).map(|_| breaker.try_call().unwrap()).collect(); // -> half-open at 6 s
    clock.advance(ms(20));
    for probe in probes {
        probe.failure(); // -> open at 6.02 s
    }
    clock.advance(ms(1_000));
    let probes: Vec<_> = (0..3).map(|_| breaker.try_call().unwrap()).collect(); // -> half-open at 7.02 s
    for probe in probes {
        probe.success(); // -> closed at 7.02 s
    }
    let t = |from, to, at, reason| Transition {
        from,
        to,
        at: ms(at),
        reason,
    };
    let expected = vec![
        t(State::Closed, State::Open, 5_000, Reason::FailureRate(1.0)),
        t(State::Open, State::HalfOpen, 6_000, Reason::OpenElapsed),
        t(State::HalfOpen, State::Open, 6_020, Reason::ProbeFailed),
        t(State::Open, State::HalfOpen, 7_020, Reason::OpenElapsed),
        t(State::HalfOpen, State::Closed, 7_020, Reason::ProbesPassed),
    ];
    assert_eq!(first.try_iter().collect::<Vec<_>>(), expected);
    assert_eq!(second.try_iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        expected.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        [
            "closed -> open (failure rate 100.0%)",
            "open -> half-open (open interval elapsed)",
            "half-open -> open (probes failed)",
            "open -> half-open (open interval elapsed)",
            "half-open -> closed (probes passed)",
        ]
    );
}

#[test]
fn a_hundred_threads_racing_the_end_of_open_for_get_exactly_three_probes() {
    for _round in 0..20 {
        let (breaker, clock) = tripped();
        let breaker = Arc::new(breaker);
        let start = Arc::new(Barrier::new(101));
        let counted = Arc::new(Barrier::new(101));
        let permits = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..100)
            .map(|_| {
                let (breaker, start, counted, permits) = (
                    breaker.clone(),
                    start.clone(),
                    counted.clone(),
                    permits.clone(),
                );
                std::thread::spawn(move || {
                    start.wait();
                    let permit = breaker.try_call();
                    if permit.is_ok() {
                        permits.fetch_add(1, Ordering::SeqCst);
                    }
                    // Hold the probe until everyone has tried, so no
                    // finished probe can close the breaker mid-race.
                    counted.wait();
                    if let Ok(permit) = permit {
                        permit.success();
                    }
                })
            })
            .collect();
        clock.advance(ms(1_000));
        start.wait();
        counted.wait();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(permits.load(Ordering::SeqCst), 3);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().rejected, 97);
    }
}

#[test]
fn coroutines_on_two_workers_race_the_transition_and_see_it_once() {
    configure_for_tests();
    let (breaker, clock) = tripped();
    let breaker = Arc::new(breaker);
    let events = breaker.subscribe();
    clock.advance(ms(1_000));
    let (done_tx, done_rx) = may::sync::mpsc::channel();
    let go_on = Arc::new(may::sync::Barrier::new(100));
    for _ in 0..100 {
        let (breaker, done_tx, go_on) = (breaker.clone(), done_tx.clone(), go_on.clone());
        go!(move || {
            let permit = breaker.try_call();
            let _ = done_tx.send(permit.is_ok());
            go_on.wait(); // every coroutine has tried before any probe ends
            if let Ok(permit) = permit {
                permit.success();
            }
        });
    }
    drop(done_tx);
    let mut granted = 0;
    for _ in 0..100 {
        granted += u32::from(done_rx.recv_timeout(STUCK).expect("a coroutine is stuck"));
    }
    assert_eq!(granted, 3);
    let reasons: Vec<_> = (0..2)
        .map(|_| events.recv_timeout(STUCK).expect("no transition").reason)
        .collect();
    assert_eq!(reasons, [Reason::OpenElapsed, Reason::ProbesPassed]);
    assert!(
        events.try_recv().is_err(),
        "exactly one half-open, one close"
    );
}

#[test]
fn call_maps_outcomes_and_counts_a_panic_as_a_failure() {
    let (breaker, _) = breaker();
    assert_eq!(breaker.call(|| Ok::<_, &str>(7)), Ok(7));
    assert_eq!(
        breaker.call(|| Err::<(), _>("refused")),
        Err(CallError::Failed("refused"))
    );
    for _ in 0..8 {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            breaker.call(|| -> Result<(), ()> { panic!("the call panicked") })
        }));
        assert!(panicked.is_err());
    }
    // 1 success, 9 failures (one Err, eight panics).
    assert_eq!(breaker.state(), State::Open);
    let refused = breaker.call(|| Ok::<_, &str>(())).unwrap_err();
    assert_eq!(refused.to_string(), "circuit breaker open: retry after 1s");
}
