//! Pitfall: blocking database calls on a coroutine. rusqlite's calls block
//! the calling OS thread (SQLite does its own file I/O and fsyncs), so a
//! coroutine that inserts rows holds its may worker for as long as each call
//! takes, and every other coroutine queued on that worker waits. Here two
//! writer stages insert the same rows, one row per transaction, first on
//! coroutines, then on dedicated OS threads fed by a bounded channel, while
//! a probe measures how long another coroutine waits to run.
//!
//! Run it: `cargo run --example pitfall_sqlite_on_coroutine`

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver};

/// Rows each writer inserts, one transaction (one fsync) per row.
const ROWS: u64 = 60;

// ANCHOR: writer
/// A writer stage: take rows from `input`, insert each in its own
/// transaction. Every call into rusqlite blocks the thread it runs on.
fn insert_rows(db: &Path, input: Receiver<u64>) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL, text TEXT NOT NULL)")
        .unwrap();
    let mut inserted = 0;
    for n in &input {
        conn.execute("INSERT INTO t VALUES (?1, 'some order data')", [n])
            .unwrap();
        inserted += 1;
    }
    inserted
}
// ANCHOR_END: writer

// ANCHOR: probe
/// Measures how long a coroutine waits for a may worker: an OS thread pings
/// a responder coroutine every millisecond over may channels, until `stop`,
/// and returns the slowest round trip. (A coroutine that only sleeps would
/// not do: may resumes it on its timer thread, not on a worker.)
fn probe(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    let (ping_tx, ping_rx) = may::sync::mpsc::channel::<()>();
    let (pong_tx, pong_rx) = may::sync::mpsc::channel::<()>();
    go!(move || {
        for () in ping_rx {
            let _ = pong_tx.send(());
        }
    });
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            ping_tx.send(()).unwrap();
            pong_rx.recv().unwrap();
            worst = worst.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(1)); // a thread may sleep
        }
        worst
    })
}
// ANCHOR_END: probe

/// Where the writers run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Place {
    Coroutines,
    Threads,
}

/// What one scenario measured.
#[derive(Debug)]
pub struct Measured {
    pub inserted: u64,
    pub elapsed: Duration,
    /// The slowest ping round trip to a coroutine meanwhile.
    pub worst_round_trip: Duration,
}

// ANCHOR: scenario
/// `writers` writer stages, each fed by a producer coroutine through a
/// bounded channel, run as coroutines or as OS threads, with the probe
/// running beside them.
pub fn scenario(place: Place, writers: usize, dir: &Path) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let probe = probe(stop.clone());
    let started = Instant::now();
    let mut handles: Vec<Box<dyn FnOnce() -> u64>> = Vec::new();
    for w in 0..writers {
        let (tx, rx) = bounded::channel(16);
        go!(move || (0..ROWS).for_each(|n| tx.send(n).unwrap()));
        let db: PathBuf = dir.join(format!("{place:?}-{w}.db"));
        match place {
            Place::Coroutines => {
                let h = go!(move || insert_rows(&db, rx));
                handles.push(Box::new(move || h.join().unwrap()));
            }
            Place::Threads => {
                let h = std::thread::spawn(move || insert_rows(&db, rx));
                handles.push(Box::new(move || h.join().unwrap()));
            }
        }
    }
    let inserted = handles.into_iter().map(|join| join()).sum();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    Measured {
        inserted,
        elapsed,
        worst_round_trip: probe.join().unwrap(),
    }
}
// ANCHOR_END: scenario

fn main() {
    let workers = 2;
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers,
        stack_words: 0x1000,
    });
    let dir = tempfile::tempdir().unwrap();
    println!("{workers} may workers, {workers} writers, {ROWS} single-row transactions each:");
    for place in [Place::Coroutines, Place::Threads] {
        let m = scenario(place, workers, dir.path());
        println!(
            "  writers on {:<10}: {} rows in {:.1?}, slowest ping to a coroutine {:.1?}",
            format!("{place:?}").to_lowercase(),
            m.inserted,
            m.elapsed,
            m.worst_round_trip
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the coroutine scenario blocks every may worker on purpose,
    // which would disturb any test running beside it.
    #[test]
    fn blocking_inserts_on_coroutines_stall_other_coroutines_and_threads_do_not() {
        let settings = may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let on_threads = scenario(Place::Threads, settings.workers, dir.path());
        let on_coroutines = scenario(Place::Coroutines, settings.workers, dir.path());
        assert_eq!(on_threads.inserted, ROWS * settings.workers as u64);
        assert_eq!(on_coroutines.inserted, on_threads.inserted);
        assert!(
            on_coroutines.worst_round_trip > on_threads.worst_round_trip,
            "coroutines {on_coroutines:?}, threads {on_threads:?}"
        );
    }
}
