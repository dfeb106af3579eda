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

/// The same key to the same backend, while the pool stays the same.
struct Sticky;

impl Chooser for Sticky {
    fn choose(&self, key: &str, up: &[&str]) -> usize {
        // TODO: when a backend leaves `up`, every other backend's keys
        // must stay where they are.
        (hash(&[key.as_bytes()]) % up.len() as u64) as usize
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
            eprintln!("exercise1_consistent_hash_starter: the demo failed: {e}");
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

    #[test]
    fn the_starter_is_sticky_but_moves_keys_off_backends_still_up() {
        let (before, after) = (place(&BACKENDS), place(&BACKENDS[..3]));
        assert_eq!(before, place(&BACKENDS));
        let from_up = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **b != "delta");
        assert!(from_up.count() > KEYS / 4);
    }
}
