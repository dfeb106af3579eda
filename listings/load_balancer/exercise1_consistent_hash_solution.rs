//! Exercise 1 (solution): sticky picks by rendezvous hashing. A request's
//! key (its `X-Session` header, or the client's address when it has none)
//! goes to the same backend every time, whatever order the pool lists the
//! backends in; and when one backend of N goes down, only the keys that
//! were on it move, a third to each of the other three here.
//!
//! Run it: `cargo run --example exercise1_consistent_hash_solution`

#[path = "exercise_balancer.rs"]
mod balancer;

use std::io;
use std::time::Duration;

use balancer::{Balancer, Chooser, RetryPolicy};
use may_patterns::backend::BackendConfig;
use may_patterns::http;

/// The pool, in order; the demo takes the last one down.
const BACKENDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Keys placed offline, to count how many move.
const KEYS: usize = 10_000;
/// Sessions sent over the wire, each `GETS` times.
const SESSIONS: [&str; 6] = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"];
const GETS: usize = 3;

// ANCHOR: chooser
/// FNV-1a (64 bits) over `parts`, then SplitMix64's finaliser: FNV-1a
/// alone mixes the last bytes it reads poorly into the high bits, which
/// decide a comparison of two hashes. The same input hashes the same on
/// every run, machine and Rust version; std's `DefaultHasher` promises
/// none of that.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in parts.iter().flat_map(|part| part.iter()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Rendezvous (highest random weight) hashing, Thaler and Ravishankar's:
/// each backend scores the key by a hash of (key, backend name), and the
/// highest score wins. A score depends on nothing but its own pair, so a
/// backend that leaves `up` takes only the keys it was winning; each of
/// those goes to its second-highest backend, spread evenly over the rest.
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

/// This exercise's backends never fail: nothing to retry.
struct NoRetries;

impl RetryPolicy for NoRetries {
    fn record_request(&self) {}
    fn may_retry(&self) -> bool {
        false
    }
}

/// The backend `Sticky` picks for each of `KEYS` keys among `up`.
fn place(up: &[&'static str]) -> Vec<&'static str> {
    let key = |i: usize| format!("session-{i}");
    (0..KEYS).map(|i| up[Sticky.choose(&key(i), up)]).collect()
}

/// Keys on each backend, in pool order.
fn shares(placed: &[&str]) -> Vec<usize> {
    let on = |name: &&str| placed.iter().filter(|p| *p == name).count();
    BACKENDS.iter().map(on).collect()
}

/// One key over the wire: its label, who answered its `GETS` requests with
/// every backend up, and who with delta down.
type Row = (String, Vec<String>, Vec<String>);

/// Each session, and a client without one, through a balancer over all
/// four backends and through one without delta. Every answer is checked
/// against `Sticky::choose`, so each row shows the pick and nothing else.
fn over_the_wire() -> io::Result<Vec<Row>> {
    let configs = BACKENDS.map(|name| BackendConfig::new(name, Duration::ZERO));
    let upstreams = balancer::start_backends(configs.into())?;
    let all: Vec<_> = upstreams.iter().collect();
    let with_all = Balancer::start(&all, Sticky, NoRetries)?;
    let without_delta = Balancer::start(&all[..3], Sticky, NoRetries)?;
    let keys = SESSIONS.iter().map(|s| Some(*s)).chain([None]);
    let mut rows = Vec::new();
    for session in keys {
        let key = session.unwrap_or("127.0.0.1");
        let answers = |balancer: &Balancer, up: &[&str]| -> io::Result<Vec<String>> {
            let mut names = Vec::new();
            for _ in 0..GETS {
                let answer = balancer::get(balancer.addr, session)?;
                let by = http::header(&answer.headers, "x-backend").unwrap_or("none");
                assert_eq!((answer.status, by), (200, up[Sticky.choose(key, up)]));
                names.push(by.to_owned());
            }
            Ok(names)
        };
        let before = answers(&with_all, &BACKENDS)?;
        let after = answers(&without_delta, &BACKENDS[..3])?;
        let label = match session {
            Some(session) => session.to_owned(),
            None => format!("no X-Session ({key})"),
        };
        rows.push((label, before, after));
    }
    Ok(rows)
}

fn main() {
    balancer::configure_may();
    let before = place(&BACKENDS);
    let after = place(&BACKENDS[..3]);
    let held: Vec<String> = BACKENDS
        .iter()
        .zip(shares(&before))
        .map(|(name, keys)| format!("{name} {keys}"))
        .collect();
    println!(
        "{KEYS} keys over {}: {}",
        BACKENDS.join(", "),
        held.join(", ")
    );
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let from_up = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a && **b != "delta");
    let percent = 100.0 * moved as f64 / KEYS as f64;
    println!(
        "delta goes down: {moved} keys move ({percent:.1}%), {} of them from a backend still up",
        from_up.count()
    );
    let rows = match over_the_wire() {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("exercise1_consistent_hash_solution: the demo failed: {e}");
            std::process::exit(1);
        }
    };
    println!("over the wire, {GETS} GETs per key, all four up -> delta down:");
    for (label, before, after) in rows {
        println!("  {label}: {} -> {}", before.join(" "), after.join(" "));
    }
}

#[cfg(test)]
mod tests {
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
        let (before, after) = (place(&BACKENDS), place(&BACKENDS[..3]));
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
        let rows = over_the_wire().unwrap();
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
