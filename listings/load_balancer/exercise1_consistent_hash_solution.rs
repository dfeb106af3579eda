//! Exercise 1 (solution): sticky picks by rendezvous hashing. A request's
//! key (its `X-Session` header, or the client's address when it has none)
//! goes to the same backend every time, whatever order the pool lists the
//! backends in; and when one backend of N goes down, only the keys that
//! were on it move, a third to each of the other three here.
//!
//! Run it: `cargo run --example exercise1_consistent_hash_solution`

#[path = "exercise_balancer.rs"]
mod balancer;

#[path = "exercise1_sticky_demo.rs"]
mod demo;

use balancer::Chooser;
use demo::hash;

// ANCHOR: chooser
/// Rendezvous (highest random weight) hashing, Thaler and Ravishankar's:
/// each backend scores the key by a hash of (key, backend name), and the
/// highest score wins. A score depends on nothing but its own pair, so a
/// backend that leaves `up` takes only the keys it was winning; each of
/// those goes to its second-highest backend, spread evenly over the rest.
#[derive(Clone)]
struct Sticky;

impl Chooser for Sticky {
    fn choose(&self, key: &str, up: &[&str]) -> usize {
        // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") differ.
        let score = |name: &str| hash(&[key.as_bytes(), &[0xff], name.as_bytes()]);
        // A tie (one in 2^64) goes to the greater name, not to a position.
        let best = (0..up.len()).max_by_key(|&i| (score(up[i]), up[i]));
        best.expect("the balancer never asks with no backend up")
    }
}
// ANCHOR_END: chooser

fn main() {
    demo::run(Sticky, "exercise1_consistent_hash_solution");
}

#[cfg(test)]
mod tests {
    use super::demo::{over_the_wire, place, shares, BACKENDS, KEYS, SESSIONS};
    use super::*;

    /// The name `Sticky` picks for `key` among `up`.
    fn pick(key: &str, up: &[&'static str]) -> &'static str {
        up[Sticky.choose(key, up)]
    }

    // ANCHOR: tests
    #[test]
    fn a_key_goes_to_the_same_backend_whatever_order_the_pool_lists() {
        let mut reversed = BACKENDS;
        reversed.reverse();
        for i in 0..1_000 {
            let key = format!("key-{i}");
            let first = pick(&key, &BACKENDS);
            assert_eq!(pick(&key, &BACKENDS), first);
            assert_eq!(pick(&key, &reversed), first, "{key}");
        }
        // Pinned: the hash is ours, so these never change.
        let picks = SESSIONS.map(|s| pick(s, &BACKENDS));
        assert_eq!(picks, ["gamma", "gamma", "alpha", "beta", "delta", "gamma"]);
    }

    #[test]
    fn when_a_backend_goes_down_only_its_keys_move() {
        for down in BACKENDS {
            let up: Vec<&str> = BACKENDS.into_iter().filter(|b| *b != down).collect();
            for i in 0..KEYS {
                let key = format!("session-{i}");
                let (before, after) = (pick(&key, &BACKENDS), pick(&key, &up));
                if before != down {
                    assert_eq!(
                        after, before,
                        "{key} moved off {before} when {down} went down"
                    );
                }
            }
        }
    }

    #[test]
    fn each_backend_holds_a_quarter_and_a_down_one_s_keys_spread_evenly() {
        let (before, after) = (place(&Sticky, &BACKENDS), place(&Sticky, &BACKENDS[..3]));
        for keys in shares(&before) {
            assert!(keys.abs_diff(KEYS / 4) < KEYS / 50, "{keys} of {KEYS}");
        }
        // Each backend still up gains a third of delta's keys, and no others.
        let delta_keys = shares(&before)[3];
        for name in &BACKENDS[..3] {
            let moved = before.iter().zip(&after);
            let gained = moved.filter(|(b, a)| *a == name && *b != name).count();
            assert!(
                gained.abs_diff(delta_keys / 3) < KEYS / 50,
                "{name} gained {gained}"
            );
        }
    }

    #[test]
    fn over_the_wire_a_key_stays_on_its_backend_unless_that_one_goes_down() {
        balancer::configure_may();
        let rows = over_the_wire(Sticky).unwrap();
        assert_eq!(rows.len(), SESSIONS.len() + 1);
        for (label, before, after) in rows {
            assert!(
                before.iter().all(|b| *b == before[0]),
                "{label}: {before:?}"
            );
            match before[0].as_str() {
                "delta" => assert!(after.iter().all(|a| *a == after[0] && a != "delta")),
                stayed => assert!(after.iter().all(|a| a == stayed), "{label}: {after:?}"),
            }
        }
    }
    // ANCHOR_END: tests
}
