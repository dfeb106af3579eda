//! Step 2: coroutines are cheap enough to start by the ten thousand, and a
//! may `sleep` parks one without holding its worker thread.
//!
//! Run it: `cargo run --example step2_many_coroutines`

use std::time::{Duration, Instant};

use may::coroutine;
use may::go;

fn main() {
    may::config().set_workers(2);

    // ANCHOR: many
    let started = Instant::now();
    let sleepers = sleep_in_coroutines(10_000, Duration::from_millis(50));
    println!(
        "{sleepers} coroutines each slept 50ms; all done after {:?}",
        started.elapsed()
    );
    // ANCHOR_END: many
}

// ANCHOR: sleep_in_coroutines
/// Start `count` coroutines that each sleep for `nap`, wait for all of them,
/// and return how many finished.
fn sleep_in_coroutines(count: usize, nap: Duration) -> usize {
    let handles: Vec<_> = (0..count)
        // may's sleep parks the coroutine; the worker thread runs others.
        .map(|_| go!(move || coroutine::sleep(nap)))
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).count()
}
// ANCHOR_END: sleep_in_coroutines

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn sleeping_coroutines_overlap_instead_of_queueing() {
        configure_for_tests();
        let started = Instant::now();
        assert_eq!(sleep_in_coroutines(2_000, Duration::from_millis(50)), 2_000);
        // One after another they would take 100 s; together about 50 ms. The
        // bound leaves a wide margin for a slow, busy CI machine.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }
}
