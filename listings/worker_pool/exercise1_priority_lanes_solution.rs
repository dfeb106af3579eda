//! Exercise 1 (solution): two priority lanes, urgent and bulk.
//!
//! Each job waits in its lane, and each `submit` also puts one *runner* in
//! the pool's queue. A runner does not know which job it will run: when a
//! worker gets to it, it takes the oldest urgent job if there is one, else
//! the oldest bulk job. There are as many runners as jobs, so every job runs
//! exactly once, and an urgent job waits only for the jobs already running.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use may::sync::{mpsc, SyncFlag};
use may_patterns::alarm;
use may_patterns::pool::{Config, Pool};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const BULK: usize = 6;
const URGENT: usize = 3;
/// Each job's own work.
const WORK: Duration = Duration::from_millis(2);

/// Which lane a job goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Urgent,
    Bulk,
}

// ANCHOR: lanes
/// A job's result, when it has one.
struct Ticket<T>(mpsc::Receiver<T>);

impl<T> Ticket<T> {
    /// Wait for the job; `None` if it panicked (its sender was dropped
    /// while it unwound, and the pool counted the panic).
    fn wait(self) -> Option<T> {
        self.0.recv().ok()
    }
}

/// A job waiting in its lane, its result channel inside.
type Queued = Box<dyn FnOnce() + Send>;

/// The two lanes. A std `Mutex`: held for one push or one pop, never
/// across a park.
#[derive(Default)]
struct Queues {
    urgent: VecDeque<Queued>,
    bulk: VecDeque<Queued>,
}

impl Queues {
    /// The next job to run: urgent first.
    fn next(&mut self) -> Option<Queued> {
        self.urgent.pop_front().or_else(|| self.bulk.pop_front())
    }
}

/// Jobs in two lanes on one pool.
struct Lanes {
    pool: Pool,
    queues: Arc<Mutex<Queues>>,
}

impl Lanes {
    fn new(pool: Pool) -> Lanes {
        Lanes {
            pool,
            queues: Arc::default(),
        }
    }

    /// Run `job` on the pool, ahead of every queued bulk job if `lane` is
    /// urgent.
    fn submit<T, F>(&self, lane: Lane, job: F) -> Ticket<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let queued: Queued = Box::new(move || {
            let _ = tx.send(job()); // the caller may have stopped waiting
        });
        {
            let mut queues = self.queues.lock().unwrap();
            match lane {
                Lane::Urgent => queues.urgent.push_back(queued),
                Lane::Bulk => queues.bulk.push_back(queued),
            }
        }
        // One runner per job. `submit` parks while the pool's queue is full,
        // so the lanes hold at most the pool's queue, its workers and the
        // callers parked here: the bound is the pool's.
        let queues = self.queues.clone();
        self.pool
            .submit(move || {
                let next = queues.lock().unwrap().next(); // the lock ends here
                if let Some(job) = next {
                    job(); // a panic here is the pool's to catch and count
                }
            })
            .expect("the pool is open");
        Ticket(rx)
    }
}
// ANCHOR_END: lanes

/// Hold the only worker at a gate, queue the bulk backlog and then the
/// urgent jobs, open the gate; the order the jobs started in.
fn start_order() -> Vec<String> {
    let lanes = Lanes::new(Pool::new(Config::fixed(1, 16)).expect("a valid config"));
    let started = Arc::new(Mutex::new(Vec::new())); // held for one push, no park inside
    let gate = Arc::new(SyncFlag::new());
    let (held_tx, held_rx) = mpsc::channel();
    let first = {
        let (gate, started) = (gate.clone(), started.clone());
        lanes.submit(Lane::Bulk, move || {
            started.lock().unwrap().push("bulk 0".to_owned());
            held_tx.send(()).unwrap();
            gate.wait();
        })
    };
    held_rx.recv().unwrap(); // the worker is busy: everything below queues
    let mut tickets = vec![first];
    let jobs = (1..BULK)
        .map(|i| (Lane::Bulk, format!("bulk {i}")))
        .chain((0..URGENT).map(|i| (Lane::Urgent, format!("urgent {i}"))));
    for (lane, name) in jobs {
        let started = started.clone();
        tickets.push(lanes.submit(lane, move || {
            started.lock().unwrap().push(name);
            alarm::shared().sleep(WORK);
        }));
    }
    gate.fire();
    for ticket in tickets {
        ticket.wait().expect("no job fails");
    }
    let order = started.lock().unwrap().clone();
    order
}

fn main() {
    configure_once(TEST_SETTINGS);
    println!("one worker; {BULK} bulk jobs queued, then {URGENT} urgent ones; started in order:");
    println!("  {}", start_order().join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::pool::Shutdown;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn queued_urgent_jobs_start_before_queued_bulk_jobs() {
        configure_for_tests();
        let order = start_order();
        let expected: Vec<String> = ["bulk 0", "urgent 0", "urgent 1", "urgent 2"]
            .into_iter()
            .map(String::from)
            .chain((1..BULK).map(|i| format!("bulk {i}")))
            .collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn every_job_runs_exactly_once_on_several_workers() {
        configure_for_tests();
        let lanes = Lanes::new(Pool::new(Config::fixed(2, 4)).unwrap());
        let tickets: Vec<_> = (0..200u64)
            .map(|i| {
                let lane = if i % 3 == 0 { Lane::Urgent } else { Lane::Bulk };
                (i, lanes.submit(lane, move || i * 2))
            })
            .collect();
        for (i, ticket) in tickets {
            assert_eq!(ticket.wait(), Some(i * 2));
        }
        // A ticket is answered from inside its runner, before the pool
        // counts the runner: read the counts once every worker has ended.
        let report = lanes.pool.shutdown(Shutdown::Drain);
        assert_eq!((report.completed, report.stats.panicked), (200, 0));
    }

    #[test]
    fn a_panicking_job_loses_only_its_own_result() {
        configure_for_tests();
        let lanes = Lanes::new(Pool::new(Config::fixed(1, 4)).unwrap());
        let bad = lanes.submit(Lane::Urgent, || -> u64 { panic!("bad job") });
        let good = lanes.submit(Lane::Bulk, || 7u64);
        assert_eq!(bad.wait(), None);
        assert_eq!(good.wait(), Some(7));
        let report = lanes.pool.shutdown(Shutdown::Drain);
        assert_eq!((report.completed, report.stats.panicked), (1, 1));
    }
}
