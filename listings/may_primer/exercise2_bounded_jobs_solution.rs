//! Exercise 2 (solution): bounded concurrency with results in input order.
//!
//! Run it: `cargo run --example exercise2_bounded_jobs_solution`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use may::coroutine;
use may::go;
use may::sync::Semphore;

fn job(n: u64) -> u64 {
    coroutine::sleep(Duration::from_millis(5));
    n.to_string().len() as u64
}

// ANCHOR: solution
/// One running job's share of the limit: a semaphore permit and one count in
/// `alive`, both given back when the job's coroutine drops it (also when the
/// job panics, so a failed job cannot shrink the limit).
struct Slot<'a> {
    permits: &'a Semphore,
    alive: &'a AtomicUsize,
}

impl<'a> Slot<'a> {
    /// Park until a permit is free, then count one more live coroutine.
    fn take(permits: &'a Semphore, alive: &'a AtomicUsize, peak: &AtomicUsize) -> Self {
        permits.wait();
        let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        Slot { permits, alive }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.permits.post();
    }
}

fn run_bounded(items: &[u64], limit: usize) -> (Vec<u64>, usize) {
    let permits = Semphore::new(limit.max(1));
    let (alive, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let results = coroutine::scope(|s| {
        // The slot is taken *before* go!: a coroutine, and its stack, exists
        // only while it holds one, so at most `limit` exist at once. Joining
        // the handles in spawn order gives the results in input order.
        let handles: Vec<_> = items
            .iter()
            .map(|&n| {
                let slot = Slot::take(&permits, &alive, &peak);
                go!(s, move || {
                    let _slot = slot; // dropped when the job is done
                    job(n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    (results, peak.load(Ordering::SeqCst))
}
// ANCHOR_END: solution

fn main() {
    may::config().set_workers(2);
    let items: Vec<u64> = (1..=100).map(|n| n * 37).collect();
    let (results, peak) = run_bounded(&items, 8);
    println!(
        "{} results, at most {peak} coroutines at once",
        results.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn results_keep_input_order_and_concurrency_stays_bounded() {
        configure_for_tests();
        let items: Vec<u64> = (0..200).map(|n| n * n * 7).collect();
        let expected: Vec<u64> = items.iter().map(|n| n.to_string().len() as u64).collect();
        for limit in [1, 3, 16] {
            let (results, peak) = run_bounded(&items, limit);
            assert_eq!(results, expected, "limit {limit}");
            assert!((1..=limit).contains(&peak), "peak {peak}, limit {limit}");
        }
    }
}
