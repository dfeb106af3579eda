//! Step 7: one state per client address, and at most `max_keys` of them.
//!
//! A limiter in front of a server keeps a state for every client it has
//! seen. A flood of new addresses (spoofed, or a botnet's) would grow that
//! map without end; `Limiter` holds at most `max_keys` and drops idle keys
//! first, then the least recently seen. Three floods of a million
//! addresses show what it keeps, what it drops, what a key costs, and what
//! the bound costs a client that stays quiet through a flood.

use may_patterns::clock::{Clock, ManualClock};
use may_patterns::ratelimit::{Algorithm, Gcra, GcraState, Limiter, Quota};
use std::net::Ipv4Addr;
use std::time::Duration;

type Keyed = Limiter<Ipv4Addr, Gcra, ManualClock>;

/// A client from the documentation range, never among the flood's 10.x.x.x.
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

// ANCHOR: flood
/// The client as the limiter sees it, and the same requests decided on a
/// bare GCRA state of its own, as if there were no flood and no bound.
struct Client {
    admitted: u32,
    alone: GcraState,
    admitted_alone: u32,
}

impl Client {
    fn ask(&mut self, limiter: &Keyed) {
        let now = limiter.clock().now();
        self.admitted += u32::from(limiter.check(&CLIENT, 1).is_admitted());
        let alone = limiter.algorithm().decide(&mut self.alone, now, 1);
        self.admitted_alone += u32::from(alone.is_admitted());
    }
}

/// One request from each of `count` new addresses from `first` on, 10 ns
/// apart (a million in 10 ms: no flood key becomes idle), the client asking
/// after every `client_every` of them if it asks at all.
fn flood(limiter: &Keyed, first: u32, count: u32, client: Option<(&mut Client, u32)>) {
    let mut client = client;
    for i in 0..count {
        limiter.clock().advance(Duration::from_nanos(10));
        limiter.check(&Ipv4Addr::from(0x0a00_0000 + first + i), 1);
        if let Some((client, every)) = client.as_mut() {
            if i % *every == 0 {
                client.ask(limiter);
            }
        }
    }
}
// ANCHOR_END: flood

/// What the three floods did.
#[derive(Debug, PartialEq)]
struct Floods {
    /// Keys held, idle keys dropped and busy keys evicted, after each flood.
    after: [(usize, u64, u64); 3],
    /// Admitted for the client during flood 1, by the limiter and alone.
    during: (u32, u32),
    /// Admitted for the client's burst after it sat out flood 3.
    back: (u32, u32),
    /// Bytes one held key takes in the limiter's tables.
    per_key: usize,
    /// Resident memory grown by flood 1, in bytes.
    grown: usize,
}

// ANCHOR: floods
fn floods(max_keys: usize, count: u32) -> Floods {
    let quota = Quota::per_second(10, 5).expect("a valid quota");
    let limiter = Limiter::with_clock(Gcra::new(quota), max_keys, ManualClock::new());
    let counts = |l: &Keyed| (l.keys(), l.expired(), l.evicted());
    let alone = limiter.algorithm().new_state(Duration::ZERO);
    let mut client = Client {
        admitted: 0,
        alone,
        admitted_alone: 0,
    };

    // 1: new addresses, none idle, the client asking all along.
    let before = resident_bytes();
    flood(&limiter, 0, count, Some((&mut client, 100)));
    let grown = resident_bytes().saturating_sub(before);
    let after_1 = counts(&limiter);
    let during = (client.admitted, client.admitted_alone);

    // 2: a second later every key held is idle; as many new addresses again.
    limiter.clock().advance(Duration::from_secs(1));
    flood(&limiter, count, count, None);
    let after_2 = counts(&limiter);

    // 3: the client spends its burst, sits out a flood, and comes back.
    limiter.clock().advance(Duration::from_secs(1));
    (0..5).for_each(|_| client.ask(&limiter));
    flood(&limiter, 2 * count, count, None);
    let (admitted, admitted_alone) = (client.admitted, client.admitted_alone);
    (0..5).for_each(|_| client.ask(&limiter));
    let back = (
        client.admitted - admitted,
        client.admitted_alone - admitted_alone,
    );

    Floods {
        after: [after_1, after_2, counts(&limiter)],
        during,
        back,
        per_key: limiter.entry_bytes(),
        grown,
    }
}
// ANCHOR_END: floods

/// Resident memory of this process in bytes (`VmRSS`, which the kernel
/// reports in kB).
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

const MAX_KEYS: usize = 100_000;
const FLOOD: u32 = 1_000_000;

fn main() {
    let f = floods(MAX_KEYS, FLOOD);
    println!(
        "GCRA, 10 per second, burst 5; max_keys {MAX_KEYS}; {} bytes per key held",
        f.per_key
    );
    let line = |(keys, idle, evicted): (usize, u64, u64)| {
        format!("{keys} keys held, {idle} idle dropped, {evicted} evicted (so far)")
    };
    println!("flood 1: {FLOOD} new addresses, none idle");
    println!("  {}", line(f.after[0]));
    println!(
        "  the client, asking after every 100: {} admitted (alone: {})",
        f.during.0, f.during.1
    );
    println!(
        "  resident memory grew ~{:.1} MB: ~{} bytes per key held",
        f.grown as f64 / 1e6,
        f.grown / MAX_KEYS
    );
    println!("flood 2: 1s later (every key idle), {FLOOD} more");
    println!("  {}", line(f.after[1]));
    println!("flood 3: the client spends its burst, sits out {FLOOD} more, asks for 5");
    println!("  {}", line(f.after[2]));
    println!(
        "  the client: {} admitted (alone: {}): it was evicted and started over",
        f.back.0, f.back.1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_idle_keys_go_first_and_a_quiet_client_starts_over() {
        // A tenth of main's sizes, every shard still filled many times over.
        let f = floods(10_000, 100_000);
        assert_eq!(
            f.after,
            [
                (10_000, 0, 90_001),
                (10_000, 10_000, 180_001),
                (10_000, 20_000, 270_003),
            ]
        );
        // A client seen all along keeps its state: only its burst of 5.
        assert_eq!(f.during, (5, 5));
        // One that sat out a flood was evicted: 5 fresh units, not 0.
        assert_eq!(f.back, (5, 0));
    }
}
