//! Finding a stuck worker: a watchdog that probes every may worker.
//!
//! A blocking call on a coroutine does not crash anything: a share of the
//! program just goes quiet. To tell that a worker is stuck, and which, a
//! watchdog on its own OS thread puts a tiny probe coroutine on each
//! worker's own global queue (`Builder::id(i)`) every `PATIENCE` and waits
//! for it. Only worker i moves that queue into its run queue (an idle worker
//! may steal the probe from there, which is fine: worker i is alive), so a
//! probe that has not run means worker i is inside one call that has not
//! returned. Then `gdb -p PID -batch -ex 'thread apply all bt'` shows which
//! call: the stuck worker is the thread with a blocking call on top of its
//! stack.
//!
//! Run it: `cargo run --example find_stuck_worker`, or with
//! `-- --hold-ms 30000` to have time to attach gdb.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use may::coroutine::Builder;
use may::go;
use may::sync::mpsc;
use may_patterns::runtime::{configure_once, Settings};

const WORKERS: usize = 2;
/// How often the watchdog probes, and how long a probe may wait to run.
const PATIENCE: Duration = Duration::from_millis(50);
/// The tests allow more: another test binary may be loading the machine.
#[cfg(test)]
const TEST_PATIENCE: Duration = Duration::from_millis(100);

// ANCHOR: watchdog
/// What the watchdog saw in one round.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// Worker `worker` ran nothing for `stalled` (its probe is still waiting).
    Stuck { worker: usize, stalled: Duration },
    /// Worker `worker` ran its probe again after `stalled`.
    Recovered { worker: usize, stalled: Duration },
}

/// Probe every worker each `patience` until `stop`; report each worker that
/// gets stuck once, and once more when it recovers.
fn watch(patience: Duration, stop: &AtomicBool, report: impl Fn(Seen)) {
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    // When each worker's probe was queued, while it has not run yet.
    let mut waiting: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut reported: BTreeSet<usize> = BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        for worker in 0..WORKERS {
            // One probe per worker at a time: a stuck worker's stays queued.
            waiting.entry(worker).or_insert_with(|| {
                let done = done_tx.clone();
                go!(Builder::new().id(worker), move || {
                    let _ = done.send(worker);
                })
                .expect("spawning never fails in may 0.3.51");
                Instant::now()
            });
        }
        let round = Instant::now() + patience;
        while let Some(left) = round.checked_duration_since(Instant::now()) {
            let Ok(worker) = done_rx.recv_timeout(left) else {
                break; // this round is over
            };
            let queued = waiting.remove(&worker).expect("one probe per worker");
            if reported.remove(&worker) {
                let stalled = queued.elapsed();
                report(Seen::Recovered { worker, stalled });
            }
        }
        for (&worker, queued) in &waiting {
            if queued.elapsed() >= patience && reported.insert(worker) {
                let stalled = queued.elapsed();
                report(Seen::Stuck { worker, stalled });
            }
        }
    }
}
// ANCHOR_END: watchdog

// ANCHOR: bug
/// The bug the watchdog is for: a blocking call on a coroutine, which holds
/// whichever worker runs it for `hold`.
fn block_a_worker(hold: Duration) {
    go!(move || thread::sleep(hold));
}
// ANCHOR_END: bug

/// Run the watchdog for `run_for` while a worker is blocked for `hold`
/// after `after`; everything it saw.
fn run(patience: Duration, after: Duration, hold: Duration, run_for: Duration) -> Vec<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let watchdog = {
        let stop = stop.clone();
        thread::spawn(move || watch(patience, &stop, |seen| seen_tx.send(seen).unwrap()))
    };
    thread::sleep(after); // main is a plain thread, not a worker
    block_a_worker(hold);
    thread::sleep(run_for.saturating_sub(after));
    stop.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    seen_rx.try_iter().collect()
}

/// Block a may worker on purpose and watch the watchdog find it.
#[derive(Parser)]
struct Args {
    /// How long the blocking call holds its worker, in milliseconds.
    #[arg(long, default_value_t = 400)]
    hold_ms: u64,
}

fn main() {
    let args = Args::parse();
    configure_once(Settings {
        workers: WORKERS,
        stack_words: 0x1000,
    });
    let (ms, hold) = (Duration::from_millis, Duration::from_millis(args.hold_ms));
    // The process id changes every run: standard error, for gdb.
    eprintln!("process {} (gdb -p {0})", std::process::id());
    println!("a coroutine blocks its worker for {hold:?} (std::thread::sleep)");
    // Which worker runs the blocking call varies from run to run: `~`.
    for seen in run(PATIENCE, ms(100), hold, hold + ms(400)) {
        match seen {
            Seen::Stuck { worker, stalled } => {
                println!("watchdog: worker ~{worker} has run nothing for {stalled:.0?}")
            }
            Seen::Recovered { worker, stalled } => {
                println!(
                    "watchdog: worker ~{worker} runs again, after {stalled:.0?} without a probe"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// The tests share the runtime: one that blocks a worker must not run
    /// while another watches for stuck workers.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_blocked_worker_and_no_other_is_reported_and_seen_to_recover() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        configure_for_tests();
        let (ms, hold) = (Duration::from_millis, Duration::from_millis(500));
        let seen = run(TEST_PATIENCE, ms(100), hold, ms(1_000));
        let stuck: Vec<_> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Stuck { worker, .. } => Some(*worker),
                _ => None,
            })
            .collect();
        assert_eq!(
            stuck.len(),
            1,
            "one worker, and only one, got stuck: {seen:?}"
        );
        let recovered = seen.iter().find_map(|s| match s {
            Seen::Recovered { worker, stalled } if *worker == stuck[0] => Some(*stalled),
            _ => None,
        });
        let stalled = recovered.unwrap_or_else(|| panic!("it never recovered: {seen:?}"));
        // The probe waited for most of the hold, however the rounds fell.
        assert!(stalled >= hold - 2 * TEST_PATIENCE, "{stalled:?}");
    }

    #[test]
    fn a_healthy_runtime_reports_nothing() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        configure_for_tests();
        let stop = AtomicBool::new(false);
        let seen = std::sync::Mutex::new(Vec::new());
        thread::scope(|s| {
            s.spawn(|| watch(TEST_PATIENCE, &stop, |x| seen.lock().unwrap().push(x)));
            thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(*seen.lock().unwrap(), vec![]);
    }
}
