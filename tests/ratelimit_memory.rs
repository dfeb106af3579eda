//! A flood of a million client addresses against a limiter that holds at
//! most 100,000 keys: resident memory grows by what 100,000 keys take, not a
//! million, and a client seen throughout is still limited exactly.
//!
//! Its own test binary, with one test, so no other test's allocations move
//! the process's resident size while it measures.

use may_patterns::clock::{Clock, ManualClock};
use may_patterns::ratelimit::{Algorithm, Gcra, Limiter, Quota};
use std::time::Duration;

const FLOOD: u32 = 1_000_000;
const MAX_KEYS: usize = 100_000;

/// Resident memory of this process in bytes (`VmRSS` in /proc/self/status,
/// which the kernel reports in kB: no page size to look up).
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in kB");
    kb * 1024
}

#[test]
fn a_million_keys_hold_no_more_memory_than_max_keys_and_a_steady_client_stays_limited() {
    let clock = ManualClock::new();
    let quota = Quota::per_second(10, 5).unwrap();
    let limiter = Limiter::with_clock(Gcra::new(quota), MAX_KEYS, clock.clone());
    // The reference: the same client alone, on a bare GCRA state.
    let (alone, mut alone_state) = (Gcra::new(quota), Gcra::new(quota).new_state(clock.now()));
    let legit = u32::MAX; // 255.255.255.255, not among the flood's addresses
    let (mut admitted, mut admitted_alone) = (0u32, 0u32);

    let before = resident_bytes();
    for address in 0..FLOOD {
        // A new address every 100 ns: the whole flood takes 100 ms, less
        // than the 100 ms a key needs to give its unit back, so no flood key
        // is ever idle and every one past max_keys evicts a busy key, the
        // case where only the bound stands between the flood and memory.
        clock.advance(Duration::from_nanos(100));
        assert!(limiter.check(&address, 1).is_admitted());
        if address % 100 == 0 {
            admitted += u32::from(limiter.check(&legit, 1).is_admitted());
            admitted_alone +=
                u32::from(alone.decide(&mut alone_state, clock.now(), 1).is_admitted());
        }
    }
    let grown = resident_bytes().saturating_sub(before);

    // Bound, from the per-key size (a slot, exactly sized, and an index
    // entry): the index is a power-of-two table at most 7/8 full, so it can
    // take up to 2.3 times its entries' bytes, which makes the live tables at
    // most 1.4 times `per_key` per key; the buffers outgrown on the way
    // (each table doubles) add less than the final size again. Three times
    // `per_key` per held key, plus 1 MiB for the allocator's own arenas.
    // A million keys held would need three times this bound.
    let per_key = limiter.entry_bytes();
    let bound = 3 * MAX_KEYS * per_key + (1 << 20);
    let (keys, expired, evicted) = (limiter.keys(), limiter.expired(), limiter.evicted());
    println!(
        "{FLOOD} addresses, max_keys {MAX_KEYS}: {keys} keys held, {expired} idle dropped, \
         {evicted} evicted; {per_key} bytes per key, resident growth {grown} bytes \
         (bound {bound}, a million keys would take {})",
        FLOOD as usize * per_key
    );
    assert_eq!(keys, MAX_KEYS);
    // Every key that came in is held or was dropped, and counted once.
    assert_eq!(
        (expired, evicted),
        (0, u64::from(FLOOD) + 1 - MAX_KEYS as u64)
    );
    assert!(
        grown < bound,
        "resident memory grew by {grown} bytes, over the bound of {bound}"
    );
    // 10,000 tries in 100 ms: exactly what the client would have got with
    // no flood at all, its burst of 5. Had the flood evicted it even once,
    // it would have had 5 more.
    assert_eq!(admitted, admitted_alone);
    assert_eq!(admitted, 5);
}
