//! Step 6: what to do when a task fails.
//!
//! Collect-errors: every task runs; each failure is reported with its task;
//! the batch result lists them. Fail-fast: the first failure cancels the
//! batch: the distributor dispatches nothing more, and workers skip the
//! tasks already queued (they still report them, as skipped, so the
//! collector can account for every dispatched task).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::go;
use may_patterns::bounded;
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};

// ANCHOR: outcome
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(usize),
    Failed(usize, String),
    Skipped(usize),
}

/// Where every task of the batch ended up.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    ok: usize,
    failed: Vec<usize>,
    skipped: usize,
    not_dispatched: usize,
}
// ANCHOR_END: outcome

// ANCHOR: run
fn run(tasks: usize, workers: usize, fail_at: &'static [usize], fail_fast: bool) -> Tally {
    let cancelled = Arc::new(AtomicBool::new(false));
    let (queue_tx, queue_rx) = bounded::channel::<usize>(8);
    let (done_tx, done_rx) = bounded::channel::<Outcome>(8);
    let distributor = {
        let cancelled = cancelled.clone();
        go!(move || {
            for index in 0..tasks {
                if cancelled.load(Ordering::SeqCst) {
                    return index; // dispatched so far
                }
                queue_tx.send(index).expect("workers run");
            }
            tasks
        })
    };
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, done, cancelled) = (queue_rx.clone(), done_tx.clone(), cancelled.clone());
            go!(move || {
                let mut pacer = Pacer::new();
                for index in queue.iter() {
                    let outcome = if cancelled.load(Ordering::SeqCst) {
                        Outcome::Skipped(index)
                    } else {
                        pacer.wait(Duration::from_micros(500));
                        match fail_at.contains(&index) {
                            true => Outcome::Failed(index, format!("task {index} failed")),
                            false => Outcome::Ok(index),
                        }
                    };
                    done.send(outcome).expect("the collector is reading");
                }
            })
        })
        .collect();
    drop(done_tx);

    let mut tally = Tally::default();
    for outcome in done_rx.iter() {
        match outcome {
            Outcome::Ok(_) => tally.ok += 1,
            Outcome::Failed(index, _) => {
                tally.failed.push(index);
                if fail_fast {
                    cancelled.store(true, Ordering::SeqCst); // stop the rest
                }
            }
            Outcome::Skipped(_) => tally.skipped += 1,
        }
    }
    tally.not_dispatched = tasks - distributor.join().unwrap();
    handles.into_iter().for_each(|h| h.join().unwrap());
    tally.failed.sort_unstable();
    tally
}
// ANCHOR_END: run

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let collect = run(1000, 8, &[10, 500], false);
    println!(
        "collect errors: {} ok, failed {:?}, {} skipped, {} not dispatched",
        collect.ok, collect.failed, collect.skipped, collect.not_dispatched
    );
    let fast = run(1000, 8, &[10, 500], true);
    println!(
        "fail fast:      ~{} ok, failed {:?}, ~{} skipped, ~{} not dispatched",
        fast.ok, fast.failed, fast.skipped, fast.not_dispatched
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn collect_errors_runs_every_task_and_names_each_failure() {
        configure_for_tests();
        let tally = run(300, 8, &[3, 150, 299], false);
        assert_eq!(tally.ok, 297);
        assert_eq!(tally.failed, vec![3, 150, 299]);
        assert_eq!((tally.skipped, tally.not_dispatched), (0, 0));
    }

    #[test]
    fn fail_fast_stops_the_rest_and_accounts_for_every_task() {
        configure_for_tests();
        let tally = run(2000, 8, &[10, 1500], true);
        assert_eq!(tally.failed, vec![10], "the batch stopped long before 1500");
        let ran = tally.ok + tally.failed.len();
        assert!(ran < 100, "{tally:?}");
        assert_eq!(ran + tally.skipped + tally.not_dispatched, 2000);
        assert!(tally.not_dispatched > 1800, "{tally:?}");
    }
}
