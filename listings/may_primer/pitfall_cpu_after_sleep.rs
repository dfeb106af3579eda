//! Pitfall: CPU work right after a timed wait runs on may's one timer thread,
//! and every timer in the process waits for it. A `yield_now()` first moves
//! the coroutine back to a worker.
//!
//! Run it: `cargo run --example pitfall_cpu_after_sleep`

use std::time::{Duration, Instant};

use may::coroutine;
use may::go;

const WORK: Duration = Duration::from_millis(200);
const NAP: Duration = Duration::from_millis(10);

fn main() {
    may::config().set_workers(2);
    may::config().set_worker_pin(false);
    println!(
        "a coroutine sleeps {NAP:?} while another wakes from a sleep and computes for {WORK:?}:"
    );
    let right_after = nap_next_to(false);
    println!(
        "  computing right after its sleep:            the {NAP:?} sleep took {right_after:?}"
    );
    let after_yield = nap_next_to(true);
    println!(
        "  calling yield_now() first, then computing:  the {NAP:?} sleep took {after_yield:?}"
    );
}

// ANCHOR: nap_next_to
/// How long an unrelated `sleep(NAP)` takes while another coroutine wakes
/// from a shorter sleep and then keeps the CPU for `WORK`.
fn nap_next_to(yield_first: bool) -> Duration {
    let cruncher = go!(move || {
        coroutine::sleep(NAP / 2);
        // Here the coroutine runs on the timer thread (scheduler.rs:55).
        if yield_first {
            // The timer thread has no worker id, so this queues the
            // coroutine for a worker (scheduler.rs:185-190).
            coroutine::yield_now();
        }
        busy_for(WORK);
    });
    let napper = go!(|| {
        let start = Instant::now();
        coroutine::sleep(NAP);
        start.elapsed()
    });
    cruncher.join().unwrap();
    napper.join().unwrap()
}
// ANCHOR_END: nap_next_to

/// Stands in for real CPU work (parsing, compressing, hashing): it never
/// makes a may call, so nothing can switch away from it.
fn busy_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn cpu_work_after_a_sleep_delays_other_timers_unless_it_yields_first() {
        configure_for_tests();
        let right_after = nap_next_to(false);
        let after_yield = nap_next_to(true);
        // The napper's timer is due while the timer thread computes, so it
        // waits for most of WORK; wide margins for a loaded machine.
        assert!(right_after >= WORK / 2, "{right_after:?}");
        assert!(after_yield < WORK / 2, "{after_yield:?}");
    }
}
