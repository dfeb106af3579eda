//! Exercise 1 (starter): sticky picks. A request's key (its `X-Session`
//! header, or the client's address when it has none) must go to the same
//! backend every time, so a backend's cache or session store keeps
//! serving it; and when one backend of N goes down, only the keys that
//! were on it may move. `hash(key) % up.len()` does the first and not the
//! second, as the demo shows. TODO: write `Sticky::choose` so that a
//! backend's going down moves only its own keys.
//!
//! Run it: `cargo run --example exercise1_consistent_hash_starter`

#[path = "exercise_balancer.rs"]
mod balancer;

#[path = "exercise1_sticky_demo.rs"]
mod demo;

use balancer::Chooser;
use demo::hash;

// ANCHOR: chooser
/// The same key to the same backend, while the pool stays the same.
#[derive(Clone)]
struct Sticky;

impl Chooser for Sticky {
    fn choose(&self, key: &str, up: &[&str]) -> usize {
        // TODO: when a backend leaves `up`, every other backend's keys
        // must stay where they are.
        (hash(&[key.as_bytes()]) % up.len() as u64) as usize
    }
}
// ANCHOR_END: chooser

fn main() {
    demo::run(Sticky, "exercise1_consistent_hash_starter");
}

#[cfg(test)]
mod tests {
    use super::demo::{place, BACKENDS, KEYS};
    use super::*;

    #[test]
    fn the_starter_is_sticky_but_moves_keys_off_backends_still_up() {
        let (before, after) = (place(&Sticky, &BACKENDS), place(&Sticky, &BACKENDS[..3]));
        assert_eq!(before, place(&Sticky, &BACKENDS));
        let from_up = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **b != "delta");
        assert!(from_up.count() > KEYS / 4);
    }
}
