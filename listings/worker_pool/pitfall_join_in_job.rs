//! Pitfall: a job that waits for another job of its own pool.
//!
//! Two jobs on a pool of two workers each submit a child job to the same
//! pool and wait for its answer. Both workers are then busy waiting, and the
//! children sit in the queue behind the very jobs that wait for them:
//! nothing runs. Here each parent gives up after a bounded wait, so the
//! listing ends; a parent that called `join()` would wait for ever. The same
//! jobs on the fork-join pool finish, because its `join` runs the child on
//! the waiting worker when nobody else has taken it.
//!
//! Run it: `cargo run --example pitfall_join_in_job`

use std::sync::Arc;
use std::time::{Duration, Instant};

use may::sync::{mpsc, SyncFlag};
use may_patterns::bounded;
use may_patterns::pool::{Config, ForkJoinPool, Pool, Scheduling};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const WORKERS: usize = 2;
/// How long the parents wait for their children before they give up: one may
/// timeout per parent, long enough that may 0.3.51's timer races (the
/// pitfalls appendix) are not in play.
const GIVE_UP: Duration = Duration::from_millis(300);

/// What one parent job saw.
#[derive(Debug)]
enum Parent {
    /// The child answered within the wait.
    Answered(u64),
    /// The parent gave up after this long; the child had not started.
    GaveUp(Duration),
}

// ANCHOR: parent
/// Submit a child to the pool this job runs on, and wait for its answer
/// until `deadline`.
fn parent(pool: &Pool, n: u64, deadline: Instant, started: Arc<mpsc::Sender<Instant>>) -> Parent {
    let (answer_tx, answer_rx) = bounded::channel(1);
    pool.submit(move || {
        let _ = started.send(Instant::now());
        let _ = answer_tx.send(n * n); // the parent may have given up
    })
    .expect("the pool is open");
    let waited = Instant::now();
    let answer = answer_rx.recv_timeout(deadline.saturating_duration_since(waited));
    match answer {
        // Both parents share the deadline, so an answer that comes after
        // it came only because the other parent gave up first.
        Ok(answer) if Instant::now() < deadline => Parent::Answered(answer),
        _ => Parent::GaveUp(waited.elapsed()),
    }
}
// ANCHOR_END: parent

/// Two parents on a two-worker pool: what each saw, and whether every child
/// started only after a parent had ended and freed its worker.
fn on_the_pool() -> (Vec<Parent>, bool) {
    let pool = Arc::new(Pool::new(Config::fixed(WORKERS, 8)).expect("a valid config"));
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Arc::new(started_tx);
    // Each parent waits at the gate until both run, so that neither child
    // is queued before the second parent: both workers are then taken.
    let (running_tx, running_rx) = mpsc::channel();
    let gate = Arc::new(SyncFlag::new());
    let deadline = Instant::now() + GIVE_UP;
    let parents: Vec<_> = (0..WORKERS as u64)
        .map(|n| {
            let (inner, started) = (pool.clone(), started_tx.clone());
            let (running, gate) = (running_tx.clone(), gate.clone());
            pool.submit(move || {
                running.send(()).unwrap();
                gate.wait();
                (parent(&inner, n + 2, deadline, started), Instant::now())
            })
            .expect("the pool is open")
        })
        .collect();
    for _ in 0..WORKERS {
        running_rx.recv().expect("each parent says it runs");
    }
    gate.fire();
    drop(started_tx);
    let (seen, ended): (Vec<Parent>, Vec<Instant>) = parents
        .into_iter()
        .map(|h| h.join().expect("a parent does not panic"))
        .unzip();
    let first_free = *ended.iter().min().expect("two parents");
    // The children run once the workers are free; the last sender is gone
    // once they have, so this ends.
    let after = started_rx.iter().all(|at| at >= first_free);
    (seen, after)
}

// ANCHOR: fork_join
/// The same two parents on the fork-join pool: `join` queues the child, and
/// the worker that waits for it runs it itself if nobody else took it.
fn on_fork_join() -> Vec<u64> {
    let pool = ForkJoinPool::new(WORKERS, Scheduling::Stealing).expect("2 workers");
    pool.install(|w| {
        let (a, b) = w.join(|w| w.join(|_| 2, |_| 2 * 2), |w| w.join(|_| 3, |_| 3 * 3));
        vec![a.1, b.1]
    })
}
// ANCHOR_END: fork_join

fn main() {
    configure_once(TEST_SETTINGS);
    println!("{WORKERS} parents on a pool of {WORKERS} workers, each waiting for a child job:");
    let (seen, after) = on_the_pool();
    for (i, p) in seen.iter().enumerate() {
        match p {
            Parent::Answered(a) => println!("  parent {i}: its child answered {a}"),
            Parent::GaveUp(d) => {
                println!("  parent {i}: gave up after {d:?}, its child not started")
            }
        }
    }
    println!("  no child started before a parent had ended and freed its worker: {after}");
    println!(
        "the same on the fork-join pool: children answered {:?}",
        on_fork_join()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn parents_that_wait_on_their_own_pool_starve_their_children() {
        configure_for_tests();
        let (seen, after) = on_the_pool();
        assert_eq!(seen.len(), WORKERS);
        for p in &seen {
            assert!(matches!(p, Parent::GaveUp(_)), "{p:?}");
        }
        assert!(after, "a child ran while its parent still held a worker");
    }

    #[test]
    fn fork_join_runs_the_children_on_the_waiting_workers() {
        configure_for_tests();
        assert_eq!(on_fork_join(), vec![4, 9]);
    }
}
