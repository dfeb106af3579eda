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
fn every_new_key_sweeps_idle_keys_from_the_stale_end_before_the_shard_is_full() {
    let (g, mut shard) = (gcra(), Shard::new(10));
    for key in 1..=5 {
        shard.check(&g, &key, ms(0), 1);
    }
    // All five are idle at 100 ms; a new key drops two of them (SWEEP).
    shard.check(&g, &6, ms(100), 1);
    assert_eq!(shard.keys_newest_first(), [6, 5, 4, 3]);
    assert_eq!((shard.evicted, shard.expired), (0, 2));
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
