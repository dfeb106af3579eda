//! The shard's own rules: recency order, idle first, then the stalest key,
//! never a reserved key; and the slab's links after any sequence of moves.

use super::*;
use crate::ratelimit::{Gcra, Quota};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// 10 per second (T = 100 ms), 2 at once: a key that took one unit is busy
/// for 100 ms, then idle.
fn gcra() -> Gcra {
    Gcra::new(Quota::per_second(10, 2).unwrap())
}

#[test]
fn keys_are_kept_newest_first_and_a_check_moves_a_key_to_the_front() {
    let (g, mut shard) = (gcra(), Shard::new(4));
    for key in [1, 2, 3] {
        assert!(shard.check(&g, &key, ms(0), 1).is_admitted());
    }
    assert_eq!(shard.keys_newest_first(), [3, 2, 1]);
    shard.check(&g, &1, ms(0), 1);
    assert_eq!(shard.keys_newest_first(), [1, 3, 2]);
}

#[test]
fn a_full_shard_evicts_the_least_recently_seen_key_when_none_is_idle() {
    let (g, mut shard) = (gcra(), Shard::new(3));
    for key in [1, 2, 3] {
        shard.check(&g, &key, ms(0), 1);
    }
    shard.check(&g, &1, ms(0), 1); // 2 is now the stalest
    shard.check(&g, &4, ms(0), 1);
    assert_eq!(shard.keys_newest_first(), [4, 1, 3]);
    assert_eq!((shard.evicted, shard.expired), (1, 0));
}

#[test]
fn an_idle_key_goes_before_a_staler_busy_one() {
    let (g, mut shard) = (gcra(), Shard::new(3));
    shard.check(&g, &1, ms(0), 2); // busy until 200 ms
    shard.check(&g, &2, ms(50), 1); // idle from 150 ms
    shard.check(&g, &3, ms(120), 1); // idle from 220 ms
                                     // At 160 ms key 1, the stalest, is still busy; key 2 is idle.
    shard.check(&g, &4, ms(160), 1);
    assert_eq!(shard.keys_newest_first(), [4, 3, 1]);
    assert_eq!((shard.evicted, shard.expired), (0, 1));
}

#[test]
fn idle_keys_stay_until_room_is_needed_then_every_idle_one_probed_goes() {
    let (g, mut shard) = (gcra(), Shard::new(5));
    for key in 1..=4 {
        shard.check(&g, &key, ms(0), 1);
    }
    // All four are idle at 100 ms, but the shard has room: nothing goes.
    shard.check(&g, &5, ms(100), 1);
    assert_eq!(shard.keys_newest_first(), [5, 4, 3, 2, 1]);
    // Full now: the next new key drops every idle key it probes (1-4; 5 is
    // busy), which leaves room for three more without probing again.
    shard.check(&g, &6, ms(120), 1);
    assert_eq!(shard.keys_newest_first(), [6, 5]);
    assert_eq!((shard.evicted, shard.expired), (0, 4));
}

#[test]
fn a_key_checked_in_turn_with_others_is_not_dropped_while_there_is_room() {
    // A quota that refills in a nanosecond: every key is idle between two
    // of its own checks. Below capacity none is dropped, so each check
    // finds its key (no churn of inserts).
    let g = Gcra::new(Quota::per_second(1_000_000_000, 1_000_000_000).unwrap());
    let mut shard = Shard::new(100);
    for round in 0..10u64 {
        for key in 0..50 {
            shard.check(&g, &key, ms(round), 1);
        }
    }
    assert_eq!((shard.len(), shard.expired, shard.evicted), (50, 0, 0));
}

#[test]
fn a_denied_newcomer_is_not_stored() {
    let (g, mut shard) = (gcra(), Shard::new(3));
    let d = shard.check(&g, &1, ms(0), 3); // more than the burst of 2
    assert!(matches!(
        d,
        Decision::Denied {
            retry_after: Duration::MAX,
            ..
        }
    ));
    assert_eq!(shard.len(), 0);
}

#[test]
fn a_key_with_a_reservation_is_never_evicted_and_blocks_newcomers_when_all_are() {
    let (g, mut shard) = (gcra(), Shard::new(1));
    // Two units now, a third reserved for 100 ms: key 1 is reserved until then.
    shard.check(&g, &1, ms(0), 2);
    assert_eq!(shard.reserve(&g, &1, ms(0), 1, ms(500)), Ok(ms(100)));
    // Key 2 finds the only slot reserved: denied until the reservation passes.
    let d = shard.check(&g, &2, ms(30), 1);
    assert!(matches!(d, Decision::Denied { retry_after, .. } if retry_after == ms(70)));
    assert_eq!(shard.keys_newest_first(), [1]);
    // Once it has passed, key 1 is the stalest unreserved key and goes.
    assert!(shard.check(&g, &2, ms(100), 1).is_admitted());
    assert_eq!(shard.keys_newest_first(), [2]);
    assert_eq!(shard.evicted, 1);
}

#[test]
fn the_slab_links_stay_right_after_any_sequence_of_checks_and_evictions() {
    // A model: the same rules on a Vec, newest first. With GCRA and a clock
    // that never moves, no key is idle, so every insert into a full shard
    // evicts the stalest key.
    let g = Gcra::new(Quota::per_second(1, 1_000_000).unwrap());
    let mut shard = Shard::new(5);
    let mut model: Vec<u32> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..5_000 {
        let key = rng.u32(0..12);
        assert!(shard.check(&g, &key, ms(0), 1).is_admitted());
        if let Some(at) = model.iter().position(|&k| k == key) {
            model.remove(at);
        } else if model.len() == 5 {
            model.pop();
        }
        model.insert(0, key);
        assert_eq!(shard.keys_newest_first(), model);
    }
    assert!(shard.evicted > 0);
}

#[test]
fn the_slab_stays_consistent_while_idle_and_busy_keys_come_and_go() {
    // Random keys, random costs, time moving in random steps: keys turn
    // idle at random, so drops happen mid-list as well as at the end.
    let g = gcra();
    let mut shard = Shard::new(16);
    let mut rng = fastrand::Rng::with_seed(11);
    let mut now = Duration::ZERO;
    for _ in 0..20_000 {
        now += Duration::from_millis(rng.u64(0..10));
        let key = rng.u32(0..64);
        shard.check(&g, &key, now, rng.u64(1..=2));
        if rng.u8(0..10) == 0 {
            let _ = shard.reserve(&g, &key, now, 1, ms(300));
        }
        shard.assert_consistent();
    }
    assert!(
        shard.expired > 1_000 && shard.evicted > 1_000,
        "{} {}",
        shard.expired,
        shard.evicted
    );
}
