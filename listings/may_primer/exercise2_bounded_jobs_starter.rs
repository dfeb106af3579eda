//! Exercise 2 (starter): run many jobs, at most `limit` at a time, and collect
//! their results in input order.
//!
//! Run it: `cargo run --example exercise2_bounded_jobs_starter`
//! (it panics at the `todo!()` until you write `run_bounded`).

// ANCHOR: starter
use std::time::Duration;

/// A job: "fetch" item `n` (simulated by a may sleep) and return its length.
fn job(n: u64) -> u64 {
    may::coroutine::sleep(Duration::from_millis(5));
    n.to_string().len() as u64
}

/// Run `job(n)` for every n in `items`, one coroutine each, with at most
/// `limit` coroutines in existence at once (not only `limit` running: each
/// waiting coroutine would still hold a stack). Return the results in the
/// order of `items`, and the most coroutines that were alive at the same time.
fn run_bounded(items: &[u64], limit: usize) -> (Vec<u64>, usize) {
    // Hint: a may::sync::Semphore with `limit` permits, taken *before* each
    // go! and given back when the coroutine ends (even if the job panics);
    // scoped coroutines (they can borrow `items`); an AtomicUsize for the peak.
    let _ = (items, limit, job(0));
    todo!("spawn the jobs, bound their concurrency, keep input order")
}

fn main() {
    may::config().set_workers(2);
    let items: Vec<u64> = (1..=100).map(|n| n * 37).collect();
    let (results, peak) = run_bounded(&items, 8);
    println!(
        "{} results, at most {peak} coroutines at once",
        results.len()
    );
}
// ANCHOR_END: starter
