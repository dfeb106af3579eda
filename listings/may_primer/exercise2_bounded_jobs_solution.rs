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
fn run_bounded(items: &[u64], limit: usize) -> (Vec<u64>, usize) {
    let permits = Semphore::new(limit.max(1));
    let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let results = coroutine::scope(|s| {
        // One scoped coroutine per item; joining the handles in spawn order
        // gives the results in input order, whatever order they finish in.
        let handles: Vec<_> = items
            .iter()
            .map(|&n| {
                let (permits, running, peak) = (&permits, &running, &peak);
                go!(s, move || {
                    permits.wait();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let result = job(n);
                    running.fetch_sub(1, Ordering::SeqCst);
                    permits.post();
                    result
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
    println!("{} results, at most {peak} jobs at once", results.len());
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
