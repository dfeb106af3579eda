//! Step 6: configure may first; a late setting is silently ignored.
//!
//! Run it: `cargo run --example step6_configure_first`

use std::collections::HashSet;
use std::thread::{self, ThreadId};

use may::coroutine;
use may::go;

fn main() {
    // ANCHOR: first
    // Before anything starts may: this is the setting that counts.
    may::config().set_workers(2).set_stack_size(0x1000);
    // ANCHOR_END: first

    // ANCHOR: late
    // The first go! starts the scheduler with the settings above...
    let threads = worker_threads_used(1_000);
    // ...so this later call changes the number may reports, not the one it uses.
    may::config().set_workers(8);
    println!(
        "may::config().get_workers() now reports {}",
        may::config().get_workers()
    );
    let threads_after = worker_threads_used(1_000);
    println!(
        "coroutines ran on at most 2 worker threads before and after the late call: {}",
        threads.len() <= 2 && threads_after.len() <= 2
    );
    // ANCHOR_END: late
}

// ANCHOR: worker_threads_used
/// The distinct OS threads that ran `coroutines` short coroutines.
fn worker_threads_used(coroutines: usize) -> HashSet<ThreadId> {
    let handles: Vec<_> = (0..coroutines)
        .map(|_| {
            go!(|| {
                let mut seen = vec![thread::current().id()];
                coroutine::yield_now(); // may resume on another worker
                seen.push(thread::current().id());
                seen
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}
// ANCHOR_END: worker_threads_used

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_late_set_workers_changes_the_report_but_not_the_scheduler() {
        let settings = configure_for_tests();
        let before = worker_threads_used(2_000);
        assert!(before.len() <= settings.workers, "{} threads", before.len());

        may::config().set_workers(settings.workers + 6);
        assert_eq!(may::config().get_workers(), settings.workers + 6);
        let after = worker_threads_used(2_000);
        assert!(
            after.len() <= settings.workers,
            "the late setting took effect: {} threads",
            after.len()
        );
    }
}
