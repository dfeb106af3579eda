//! Exercise 1 (starter): two priority lanes, urgent and bulk.
//!
//! A service runs a backlog of bulk jobs (reports, re-indexing) on the same
//! pool as a few urgent ones (a user is waiting). This first try submits
//! both kinds to the pool's one queue, in arrival order. Run it: the urgent
//! jobs, submitted after the bulk backlog, start only after all of it.
//! TODO: make `Lanes::submit` run every queued urgent job before any queued
//! bulk job, without a second pool and without losing or repeating a job.

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

/// Jobs in two lanes on one pool.
struct Lanes {
    pool: Pool,
}

impl Lanes {
    fn new(pool: Pool) -> Lanes {
        Lanes { pool }
    }

    /// Run `job` on the pool, ahead of every queued bulk job if `lane` is
    /// urgent.
    fn submit<T, F>(&self, lane: Lane, job: F) -> Ticket<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // TODO: the lane is ignored; every job queues in arrival order.
        let _ = lane;
        let (tx, rx) = mpsc::channel();
        self.pool
            .submit(move || {
                let _ = tx.send(job()); // the caller may have stopped waiting
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
