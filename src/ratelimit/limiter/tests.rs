//! The limiter's rules, on a ManualClock: exact counts and times.

use super::*;
use crate::clock::ManualClock;
use crate::ratelimit::{FixedWindow, Gcra, LeakyQueue, Quota};
use may::go;
use std::sync::Arc;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// 10 per second (T = 100 ms), 3 at once.
fn limiter(max_keys: usize) -> (Limiter<u32, Gcra, ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let quota = Quota::per_second(10, 3).unwrap();
    (
        Limiter::with_clock(Gcra::new(quota), max_keys, clock.clone()),
        clock,
    )
}

#[test]
fn check_admits_the_burst_then_denies_with_the_exact_retry_after() {
    let (limiter, clock) = limiter(10);
    for remaining in [2, 1, 0] {
        assert!(
            matches!(limiter.check(&7, 1), Decision::Allowed { remaining: r, .. } if r == remaining)
        );
    }
    assert_eq!(
        limiter.check(&7, 1),
        Decision::Denied {
            retry_after: ms(100),
            reset: ms(300)
        }
    );
    clock.advance(ms(100));
    assert!(limiter.check(&7, 1).is_admitted());
    // Another key has its own quota.
    assert!(limiter.check(&8, 3).is_admitted());
}

#[test]
fn a_flood_of_keys_holds_exactly_max_keys_and_counts_every_eviction() {
    // 1,000 is not a multiple of the 32 shards: the shares still add up.
    let (limiter, _clock) = limiter(1_000);
    for key in 0..20_000 {
        assert!(limiter.check(&key, 1).is_admitted());
    }
    assert_eq!(limiter.keys(), 1_000);
    // The clock never moved, so no key was ever idle: each key past the
    // first thousand evicted one that still held state.
    assert_eq!((limiter.evicted(), limiter.expired()), (19_000, 0));
}

#[test]
fn idle_keys_are_dropped_before_any_key_with_state() {
    // Keys land in shards by a random hash: 5,000 fill every shard's share.
    let (limiter, clock) = limiter(1_000);
    for key in 0..5_000 {
        limiter.check(&key, 1);
    }
    assert_eq!((limiter.keys(), limiter.evicted()), (1_000, 4_000));
    clock.advance(ms(100)); // every key held is back to a full quota
    for key in 5_000..10_000 {
        limiter.check(&key, 1);
    }
    // The thousand idle keys went first, then the new (busy) keys evicted
    // one another.
    assert_eq!(limiter.keys(), 1_000);
    assert_eq!((limiter.expired(), limiter.evicted()), (1_000, 8_000));
}

#[test]
fn a_key_seen_often_survives_a_flood_and_stays_limited() {
    let (limiter, _clock) = limiter(1_000);
    let legit = u32::MAX;
    let mut admitted = 0;
    for key in 0..100_000 {
        limiter.check(&key, 1);
        if key % 100 == 0 && limiter.check(&legit, 1).is_admitted() {
            admitted += 1;
        }
    }
    // 1,000 tries and no time passed: exactly the burst got through.
    assert_eq!(admitted, 3);
}

#[test]
fn waiters_reserve_in_arrival_order_and_a_later_check_does_not_overtake() {
    let (limiter, clock) = limiter(10);
    assert!(limiter.check(&1, 3).is_admitted()); // the burst is gone
    let at = |cost| limiter.reserve(&1, cost, ms(1_000)).map(|r| r.at());
    assert_eq!(at(1), Ok(ms(100)));
    assert_eq!(at(2), Ok(ms(300)));
    // A small request does not slip in before the big one.
    assert_eq!(at(1), Ok(ms(400)));
    clock.advance(ms(250));
    // Nor does a check: it is told to come back when the last waiter goes.
    assert!(matches!(
        limiter.check(&1, 1),
        Decision::Denied { retry_after, .. } if retry_after == ms(150)
    ));
    clock.advance(ms(150));
    assert_eq!(
        limiter.check(&1, 1),
        Decision::Denied {
            retry_after: ms(100),
            reset: ms(300)
        }
    );
    clock.advance(ms(100));
    assert!(limiter.check(&1, 1).is_admitted());
}

#[test]
fn a_deadline_that_cannot_be_met_fails_up_front_and_consumes_nothing() {
    let (limiter, _clock) = limiter(10);
    limiter.check(&1, 3);
    assert_eq!(
        limiter.reserve(&1, 2, ms(199)),
        Err(AcquireError::Deadline {
            retry_after: ms(200)
        })
    );
    assert_eq!(limiter.reserve(&1, 2, ms(200)).map(|r| r.at()), Ok(ms(200)));
    assert_eq!(
        limiter.acquire(&1, 1, ms(250)),
        Err(AcquireError::Deadline {
            retry_after: ms(300)
        })
    );
}

#[test]
fn a_cost_the_algorithm_never_admits_is_exceeds_for_every_algorithm() {
    let (limiter, _clock) = limiter(10);
    assert_eq!(
        limiter.reserve(&1, 4, ms(10_000)),
        Err(AcquireError::Exceeds)
    );
    assert_eq!(limiter.keys(), 0);
    // A window admits its rate at once whatever the burst: 5 of 10 is fine.
    let quota = Quota::per_second(10, 1).unwrap();
    let window = Limiter::with_clock(FixedWindow::new(quota), 10, ManualClock::new());
    assert!(window.reserve(&1, 5, ms(0)).is_ok());
    assert_eq!(
        window.reserve(&1, 11, ms(10_000)),
        Err(AcquireError::Exceeds)
    );
}

#[test]
fn a_leaky_queue_reservation_goes_after_its_queue_wait() {
    let quota = Quota::per_second(10, 3).unwrap();
    let limiter = Limiter::with_clock(LeakyQueue::new(quota), 10, ManualClock::new());
    let at: Vec<_> = (0..3)
        .map(|_| limiter.reserve(&1, 1, ms(1_000)).map(|r| r.at()))
        .collect();
    assert_eq!(at, [Ok(ms(0)), Ok(ms(100)), Ok(ms(200))]);
    // The queue is full: it has room at 100 ms, for a wait of 200 ms more.
    // A deadline short of 300 ms is refused, and takes nothing...
    for deadline in [ms(50), ms(299)] {
        assert_eq!(
            limiter.reserve(&1, 1, deadline),
            Err(AcquireError::Deadline {
                retry_after: ms(300)
            })
        );
    }
    // ...so the next caller still gets that turn.
    assert_eq!(limiter.reserve(&1, 1, ms(300)).map(|r| r.at()), Ok(ms(300)));
}

#[test]
fn acquire_parks_each_waiter_until_the_clock_reaches_its_turn() {
    crate::runtime::configure_for_tests();
    let (limiter, clock) = limiter(10);
    let limiter = Arc::new(limiter);
    limiter.check(&1, 3);
    let (went, gone) = may::sync::mpsc::channel();
    // Reserve in a known order here, then wait on coroutines.
    let waiters: Vec<_> = (0..3u64)
        .map(|i| {
            let reservation = limiter.reserve(&1, 1, ms(1_000)).unwrap();
            let (limiter, went) = (limiter.clone(), went.clone());
            go!(move || {
                reservation.wait(limiter.clock());
                went.send((i, limiter.clock().now())).unwrap();
            })
        })
        .collect();
    for i in 0..3 {
        // Nobody goes before the clock says so.
        assert!(gone.recv_timeout(ms(30)).is_err());
        clock.advance(ms(100));
        assert_eq!(gone.recv_timeout(ms(5_000)), Ok((i, ms(100 * (i + 1)))));
    }
    for w in waiters {
        w.join().unwrap();
    }
}

#[test]
fn no_update_is_lost_when_threads_race_on_one_key() {
    let clock = ManualClock::new();
    let quota = Quota::per_second(1, 10_000).unwrap();
    let limiter = Arc::new(Limiter::with_clock(Gcra::new(quota), 10, clock));
    let admitted: u64 = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..5_000)
                        .filter(|_| limiter.check(&1, 1).is_admitted())
                        .count() as u64
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).sum()
    });
    assert_eq!(admitted, 10_000);
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        AcquireError::Deadline {
            retry_after: ms(300)
        }
        .to_string(),
        "would not be admitted before the deadline (it would be after 300ms)"
    );
    assert_eq!(
        AcquireError::Exceeds.to_string(),
        "the cost is more than the quota ever admits at once"
    );
}

#[test]
fn fewer_keys_than_shards_still_holds_exactly_max_keys() {
    let (limiter, _clock) = limiter(5);
    for key in 0..1_000 {
        limiter.check(&key, 1);
    }
    assert_eq!(limiter.keys(), 5);
    assert_eq!(limiter.evicted(), 995);
}

#[test]
#[should_panic(expected = "at least one key")]
fn a_limiter_for_no_keys_is_refused() {
    limiter(0);
}

#[test]
fn sequential_keys_spread_evenly_over_the_shards() {
    // The memory test's addresses are sequential: the shard hash must not
    // pile them into a few shards.
    let (limiter, _clock) = limiter(32 * 2_000);
    for key in 0..32_000 {
        limiter.check(&key, 1);
    }
    for shard in limiter.shards.iter() {
        let len = lock(&shard.0).len();
        assert!(
            (800..1_200).contains(&len),
            "a shard holds {len} of 32,000 keys"
        );
    }
}

#[test]
fn a_new_key_is_refused_a_reservation_when_every_key_of_its_shard_is_reserved() {
    let (limiter, _clock) = limiter(1);
    limiter.check(&1, 3);
    assert_eq!(
        limiter.reserve(&1, 1, ms(1_000)).map(|r| r.at()),
        Ok(ms(100))
    );
    assert_eq!(
        limiter.reserve(&2, 1, ms(1_000)),
        Err(AcquireError::Deadline {
            retry_after: ms(100)
        })
    );
    assert_eq!(limiter.keys(), 1);
}

/// An algorithm whose decision panics for cost 13 (a bug), to show that the
/// limiter goes on after it.
struct PanicsOn13;

impl Algorithm for PanicsOn13 {
    type State = u64;
    fn name(&self) -> &'static str {
        "panics-on-13"
    }
    fn quota(&self) -> Quota {
        Quota::per_second(100, 100).unwrap()
    }
    fn new_state(&self, _: Duration) -> u64 {
        0
    }
    fn decide(&self, used: &mut u64, _: Duration, cost: u64) -> Decision {
        assert_ne!(cost, 13, "a bug");
        *used += cost;
        Decision::Allowed {
            remaining: 100 - *used,
            reset: Duration::ZERO,
        }
    }
    fn is_idle(&self, used: &u64, _: Duration) -> bool {
        *used == 0
    }
    fn state_bytes(&self, _: &u64) -> usize {
        8
    }
}

#[test]
fn a_panic_inside_a_decision_does_not_take_the_limiter_down() {
    let limiter = Limiter::with_clock(PanicsOn13, 1, ManualClock::new());
    limiter.check(&1, 1);
    let panicked = std::panic::catch_unwind(|| limiter.check(&1, 13));
    assert!(panicked.is_err());
    // The shard's lock is poisoned now; the next caller is served anyway.
    assert_eq!(
        limiter.check(&1, 1),
        Decision::Allowed {
            remaining: 98,
            reset: Duration::ZERO
        }
    );
}
