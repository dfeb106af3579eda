//! Pitfall: a `thread_local!` is shared by every coroutine that runs on that
//! worker thread, and a coroutine may resume on another thread after any
//! yield. `coroutine_local!` gives each coroutine its own value.
//!
//! Run it: `cargo run --example pitfall_thread_local`

use std::cell::Cell;
use std::thread;

use may::coroutine;
use may::{coroutine_local, go};

// ANCHOR: locals
thread_local!(static REQUEST_ID_PER_THREAD: Cell<usize> = const { Cell::new(0) });
coroutine_local!(static REQUEST_ID_PER_COROUTINE: Cell<usize> = Cell::new(0));
// ANCHOR_END: locals

const COROUTINES: usize = 40;
const YIELDS: usize = 100;

fn main() {
    may::config().set_workers(2);
    let report = run_requests(COROUTINES, YIELDS);
    let checks = COROUTINES * YIELDS;
    println!("{COROUTINES} coroutines each stored its id, then yielded {YIELDS} times:");
    println!(
        "  thread_local! held another coroutine's id in {:.1}% of checks",
        100.0 * report.thread_local_wrong as f64 / checks as f64
    );
    println!(
        "  coroutine_local! held another coroutine's id in {:.1}% of checks",
        100.0 * report.coroutine_local_wrong as f64 / checks as f64
    );
    println!(
        "  a coroutine resumed on a different OS thread in {:.1}% of yields",
        100.0 * report.moved_thread as f64 / checks as f64
    );
}

#[derive(Debug, Default)]
struct Report {
    thread_local_wrong: usize,
    coroutine_local_wrong: usize,
    moved_thread: usize,
}

// ANCHOR: run_requests
fn run_requests(coroutines: usize, yields: usize) -> Report {
    let handles: Vec<_> = (1..=coroutines)
        .map(|id| {
            go!(move || {
                let mut report = Report::default();
                REQUEST_ID_PER_THREAD.with(|v| v.set(id));
                REQUEST_ID_PER_COROUTINE.with(|v| v.set(id));
                for _ in 0..yields {
                    let before = thread::current().id();
                    coroutine::yield_now();
                    if thread::current().id() != before {
                        report.moved_thread += 1;
                    }
                    if REQUEST_ID_PER_THREAD.with(Cell::get) != id {
                        report.thread_local_wrong += 1;
                    }
                    if REQUEST_ID_PER_COROUTINE.with(Cell::get) != id {
                        report.coroutine_local_wrong += 1;
                    }
                }
                report
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(Report::default(), |a, b| Report {
            thread_local_wrong: a.thread_local_wrong + b.thread_local_wrong,
            coroutine_local_wrong: a.coroutine_local_wrong + b.coroutine_local_wrong,
            moved_thread: a.moved_thread + b.moved_thread,
        })
}
// ANCHOR_END: run_requests

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn thread_locals_are_clobbered_and_coroutine_locals_are_not() {
        configure_for_tests();
        let report = run_requests(COROUTINES, YIELDS);
        // Many coroutines take turns on two threads, so a thread-local is
        // overwritten whenever another coroutine runs in between.
        assert!(report.thread_local_wrong > 0, "{report:?}");
        assert_eq!(report.coroutine_local_wrong, 0, "{report:?}");
    }
}
