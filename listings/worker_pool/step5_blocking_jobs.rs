//! Step 5: CPU-heavy (and blocking) jobs belong on OS threads.
//!
//! A pool worker is a coroutine. A job that computes for 50 ms without a
//! park (a hash, a compression, a blocking file read) holds the may worker
//! thread under it for those 50 ms, and every coroutine and wake-up queued
//! to that thread waits (the primer's `pitfall_one_blocked_worker` shows
//! which). Here the pool has two workers and may has two threads, so two
//! such jobs hold the whole runtime. This step runs four 50 ms hashing jobs
//! while an unrelated ticker coroutine wants to wake every 2 ms, twice:
//!
//! - the wrong way, hashing on the pool's worker coroutines (bounded: four
//!   jobs, 200 ms of hashing in all);
//! - hashing on a `may_patterns::blocking::BlockingPool`, a separate pool
//!   of OS threads: the pool job parks its coroutine until the thread is
//!   done (tokio calls the idea `spawn_blocking`).
//!
//! and reports how late the ticker woke. The ticker waits on
//! `may_patterns::alarm`, whose thread wakes it through a may channel: the
//! wake-up is queued to one may worker in turn (a timer-woken may sleep
//! would run on may's timer thread and miss the effect).

use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::alarm;
use may_patterns::blocking::BlockingPool;
use may_patterns::pool::{Config, Pool};
use may_patterns::runtime::{configure_once, TEST_SETTINGS};

const JOBS: usize = 4;
const HASHING: Duration = Duration::from_millis(50);
const TICK: Duration = Duration::from_millis(2);
/// A tick later than this waited for a blocked worker.
const STALLED: Duration = Duration::from_millis(10);

// ANCHOR: hash
/// Stands in for a CPU-heavy job: FNV-1a over a 4 KiB block, again and
/// again, for `HASHING` of wall time. No park inside: nothing lets the may
/// worker go while it runs.
fn hash_for(how_long: Duration) -> u64 {
    let block = [0xA5u8; 4096];
    let started = Instant::now();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    while started.elapsed() < how_long {
        for &b in std::hint::black_box(&block) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
// ANCHOR_END: hash

/// Where the hashing runs.
enum Place {
    PoolWorkers,
    Threads(Arc<BlockingPool>),
}

// ANCHOR: submit
/// Submit `JOBS` hashing jobs to `pool`, each run where `place` says.
fn submit_hashing(pool: &Pool, place: &Place) -> Vec<may_patterns::pool::JobHandle<u64>> {
    (0..JOBS)
        .map(|_| {
            let job: Box<dyn FnOnce() -> u64 + Send> = match place {
                // The wrong way: the hash runs on the worker coroutine.
                Place::PoolWorkers => Box::new(|| hash_for(HASHING)),
                // The job parks its coroutine; an OS thread hashes.
                Place::Threads(threads) => {
                    let threads = threads.clone();
                    Box::new(move || threads.run(|| hash_for(HASHING)).expect("no panic"))
                }
            };
            pool.submit(job).expect("the pool is open")
        })
        .collect()
}
// ANCHOR_END: submit

/// How the ticker fared while the jobs ran.
#[derive(Debug)]
struct Lateness {
    /// Ticks that were waiting at some moment while the jobs ran.
    ticks: usize,
    /// Of those, the ones that woke later than `STALLED`.
    stalled: usize,
    p50: Duration,
    max: Duration,
    /// From the first job submitted to the last one done.
    window: Duration,
}

// ANCHOR: ticker
/// Run the jobs while a ticker coroutine wakes every `TICK`, and measure
/// how late it woke for each tick that was waiting while they ran.
fn ticker_while_hashing(place: Place) -> Lateness {
    let pool = Pool::new(Config::fixed(2, JOBS)).expect("a valid config");
    let (ticking_tx, ticking_rx) = may::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = may::sync::mpsc::channel::<()>();
    let ticker = go!(move || {
        let mut ticks = Vec::new(); // (due, woke)
        while stop_rx.try_recv().is_err() {
            let due = Instant::now() + TICK;
            alarm::shared().sleep(TICK);
            ticks.push((due, Instant::now()));
            let _ = ticking_tx.send(()); // the first one says it runs
        }
        ticks
    });
    ticking_rx.recv().unwrap();
    let started = Instant::now();
    for handle in submit_hashing(&pool, &place) {
        handle.join().expect("the hash ran");
    }
    let ended = Instant::now();
    stop_tx.send(()).unwrap();
    let ticks = ticker.join().expect("the ticker ran");
    let mut late: Vec<Duration> = ticks
        .into_iter()
        // Every tick that was waiting at some moment while the jobs ran.
        .filter(|&(due, woke)| woke > started && due < ended)
        .map(|(due, woke)| woke - due)
        .collect();
    late.sort();
    Lateness {
        ticks: late.len(),
        stalled: late.iter().filter(|&&l| l > STALLED).count(),
        // Never empty: a tick is always waiting, or the ticker is running
        // and about to wait.
        p50: late[late.len() / 2],
        max: *late.last().unwrap(),
        window: ended - started,
    }
}
// ANCHOR_END: ticker

fn main() {
    configure_once(TEST_SETTINGS);
    println!(
        "{JOBS} jobs of {HASHING:?} hashing on a pool of 2 workers ({} may workers); \
         a ticker wakes every {TICK:?}",
        TEST_SETTINGS.workers
    );
    let threads = Arc::new(BlockingPool::new(2, JOBS).expect("start the threads"));
    for (how, place) in [
        ("hashing on the pool's workers (wrong)", Place::PoolWorkers),
        ("hashing on 2 BlockingPool threads", Place::Threads(threads)),
    ] {
        let l = ticker_while_hashing(place);
        println!("  {how}: the jobs took {:.1?}", l.window);
        println!(
            "    ticks meanwhile ~{}, late by p50 {:.1?}, max {:.1?}; ~{} later than {STALLED:?}",
            l.ticks, l.p50, l.max, l.stalled
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::{Mutex, MutexGuard};

    /// The tests measure how late a ticker wakes while jobs hash: one at a
    /// time, so one test's hashing does not delay the other's ticker.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn setup() -> MutexGuard<'static, ()> {
        configure_for_tests();
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn hashing_on_the_workers_stalls_the_ticker_for_a_whole_job() {
        let _one = setup();
        let l = ticker_while_hashing(Place::PoolWorkers);
        // Both may workers hash: a tick due meanwhile waits for a hash to end.
        assert!(l.max >= HASHING / 2, "{l:?}");
        assert!(l.stalled >= 1, "{l:?}");
    }

    #[test]
    fn hashing_on_threads_stalls_the_ticker_less() {
        let _one = setup();
        let wrong = ticker_while_hashing(Place::PoolWorkers);
        let threads = Arc::new(BlockingPool::new(2, JOBS).unwrap());
        let right = ticker_while_hashing(Place::Threads(threads));
        // Relative, not absolute: a busy machine delays both, but only the
        // wrong way holds the workers for whole hashes.
        assert!(right.max < wrong.max, "right {right:?}, wrong {wrong:?}");
        assert!(
            right.ticks > wrong.ticks,
            "right {right:?}, wrong {wrong:?}"
        );
    }
}
