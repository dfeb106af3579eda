//! What both files of exercise 1 share: the hash they may use, the pool
//! and the keys, and the demo, which runs whichever chooser it is given.
//! Included with `#[path = "exercise1_sticky_demo.rs"] mod demo;`, after
//! `mod balancer;`.

use std::io;
use std::time::Duration;

use crate::balancer::{self, Balancer, Chooser, RetryPolicy};
use may_patterns::backend::BackendConfig;
use may_patterns::http;

/// The pool, in order; the demo takes the last one down.
pub const BACKENDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Keys placed offline, to count how many move.
pub const KEYS: usize = 10_000;
/// Sessions sent over the wire, each `GETS` times.
pub const SESSIONS: [&str; 6] = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"];
pub const GETS: usize = 3;

// ANCHOR: hash
/// FNV-1a (64 bits) over `parts`, then SplitMix64's finaliser: FNV-1a
/// alone mixes the last bytes it reads poorly into the high bits, which
/// decide a comparison of two hashes. The same input hashes the same on
/// every run, machine and Rust version; std's `DefaultHasher` promises
/// none of that.
pub fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in parts.iter().flat_map(|part| part.iter()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
// ANCHOR_END: hash

/// This exercise's backends never fail: nothing to retry.
struct NoRetries;

impl RetryPolicy for NoRetries {
    fn record_request(&self) {}
    fn may_retry(&self) -> bool {
        false
    }
}

/// The backend `chooser` picks for each of `KEYS` keys among `up`.
pub fn place(chooser: &impl Chooser, up: &[&'static str]) -> Vec<&'static str> {
    let key = |i: usize| format!("session-{i}");
    (0..KEYS).map(|i| up[chooser.choose(&key(i), up)]).collect()
}

/// Keys on each backend, in pool order.
pub fn shares(placed: &[&str]) -> Vec<usize> {
    let on = |name: &&str| placed.iter().filter(|p| *p == name).count();
    BACKENDS.iter().map(on).collect()
}

/// One key over the wire: its label, who answered its `GETS` requests with
/// every backend up, and who with delta down.
pub type Row = (String, Vec<String>, Vec<String>);

/// Each session, and a client without one, through a balancer over all
/// four backends and through one without delta. Every answer is checked
/// against `chooser`, so each row shows the pick and nothing else.
pub fn over_the_wire<C: Chooser + Clone>(chooser: C) -> io::Result<Vec<Row>> {
    let configs = BACKENDS.map(|name| BackendConfig::new(name, Duration::ZERO));
    let upstreams = balancer::start_backends(configs.into())?;
    let all: Vec<_> = upstreams.iter().collect();
    let with_all = Balancer::start(&all, chooser.clone(), NoRetries)?;
    let without_delta = Balancer::start(&all[..3], chooser.clone(), NoRetries)?;
    let keys = SESSIONS.iter().map(|s| Some(*s)).chain([None]);
    let mut rows = Vec::new();
    for session in keys {
        let key = session.unwrap_or("127.0.0.1");
        let answers = |balancer: &Balancer, up: &[&str]| -> io::Result<Vec<String>> {
            let mut names = Vec::new();
            for _ in 0..GETS {
                let answer = balancer::get(balancer.addr, session)?;
                let by = http::header(&answer.headers, "x-backend").unwrap_or("none");
                assert_eq!((answer.status, by), (200, up[chooser.choose(key, up)]));
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

/// The demo both files run: where `chooser` puts `KEYS` keys, how many
/// move when delta goes down, and the same over the wire. `program` names
/// the example in an error.
pub fn run<C: Chooser + Clone>(chooser: C, program: &str) {
    balancer::configure_may();
    let before = place(&chooser, &BACKENDS);
    let after = place(&chooser, &BACKENDS[..3]);
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
    let rows = match over_the_wire(chooser) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("{program}: the demo failed: {e}");
            std::process::exit(1);
        }
    };
    println!("over the wire, {GETS} GETs per key, all four up -> delta down:");
    for (label, before, after) in rows {
        println!("  {label}: {} -> {}", before.join(" "), after.join(" "));
    }
}
