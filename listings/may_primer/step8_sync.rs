//! Step 8: may's Mutex, Semphore and WaitGroup park coroutines, not threads.
//!
//! Run it: `cargo run --example step8_sync`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::coroutine;
use may::go;
use may::sync::{Mutex, Semphore, WaitGroup};

fn main() {
    may::config().set_workers(2);
    println!(
        "mutex: 100 coroutines x 100 increments = {}",
        shared_counter(100, 100)
    );
    println!(
        "semaphore: 50 jobs, at most 3 at a time; most seen at once = {}",
        limited_concurrency(50, 3)
    );
    println!(
        "a job panicked holding a permit: {} of 3 free with a guard, {} with bare wait/post",
        free_permits_after_a_panic(true),
        free_permits_after_a_panic(false)
    );
    println!("wait group: {} coroutines checked in", wait_for_all(20));
}

// ANCHOR: mutex
/// A may Mutex: a coroutine waiting for the lock parks, freeing its worker.
fn shared_counter(coroutines: usize, increments: usize) -> usize {
    let counter = Arc::new(Mutex::new(0usize));
    let handles: Vec<_> = (0..coroutines)
        .map(|_| {
            let counter = Arc::clone(&counter);
            go!(move || {
                for _ in 0..increments {
                    *counter.lock().unwrap() += 1;
                    coroutine::yield_now(); // let others contend for the lock
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let total = *counter.lock().unwrap();
    total
}
// ANCHOR_END: mutex

// ANCHOR: semaphore
/// Run `jobs` coroutines but let at most `limit` work at once. Returns the
/// highest number seen working at the same time.
fn limited_concurrency(jobs: usize, limit: usize) -> usize {
    let permits = Arc::new(Semphore::new(limit));
    let working = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..jobs)
        .map(|_| {
            let (permits, working, peak) = (permits.clone(), working.clone(), peak.clone());
            go!(move || {
                let _permit = Permit::acquire(&permits); // parks while `limit` others work
                let now = working.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                coroutine::sleep(Duration::from_millis(2)); // the "work"
                working.fetch_sub(1, Ordering::SeqCst);
            }) // `_permit` is dropped here: the next waiter gets it
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    peak.load(Ordering::SeqCst)
}
// ANCHOR_END: semaphore

// ANCHOR: permit
/// One permit of a `Semphore`, handed back when dropped. A bare `wait()` ...
/// `post()` pair leaks the permit if the code between them panics, and the
/// semaphore then admits one fewer for the rest of the program.
struct Permit<'a>(&'a Semphore);

impl<'a> Permit<'a> {
    fn acquire(permits: &'a Semphore) -> Self {
        permits.wait();
        Permit(permits)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.post(); // also runs while a panic unwinds the coroutine
    }
}
// ANCHOR_END: permit

// ANCHOR: panic_with_permit
/// Let one coroutine panic while it holds one of 3 permits, taken with a
/// `Permit` guard or with a bare `wait()`/`post()` pair; return how many of
/// the 3 are free afterwards.
fn free_permits_after_a_panic(guarded: bool) -> usize {
    let permits = Arc::new(Semphore::new(3));
    let held = permits.clone();
    let failing = go!(move || {
        if guarded {
            let _permit = Permit::acquire(&held);
            failing_job();
        } else {
            held.wait();
            failing_job();
            held.post(); // never reached
        }
    });
    assert!(failing.join().is_err(), "the job panicked");
    permits.get_value()
}

fn failing_job() {
    panic!("job failed while holding a permit");
}
// ANCHOR_END: panic_with_permit

// ANCHOR: wait_group
/// Wait for a group of coroutines without keeping their handles.
fn wait_for_all(coroutines: usize) -> usize {
    let checked_in = Arc::new(AtomicUsize::new(0));
    let wg = WaitGroup::new();
    for _ in 0..coroutines {
        let wg = wg.clone(); // each clone is one member of the group
        let checked_in = checked_in.clone();
        go!(move || {
            checked_in.fetch_add(1, Ordering::SeqCst);
            drop(wg); // dropping a clone marks this member done
        });
    }
    wg.wait(); // returns when every clone has been dropped
    checked_in.load(Ordering::SeqCst)
}
// ANCHOR_END: wait_group

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_mutex_loses_no_increment() {
        configure_for_tests();
        assert_eq!(shared_counter(50, 200), 10_000);
    }

    #[test]
    fn the_semaphore_never_admits_more_than_its_permits() {
        configure_for_tests();
        for limit in [1, 2, 5] {
            let peak = limited_concurrency(40, limit);
            assert!(peak <= limit, "peak {peak} exceeded limit {limit}");
            assert!(peak >= 1);
        }
    }

    #[test]
    fn a_permit_guard_survives_a_panic_and_a_bare_wait_leaks() {
        configure_for_tests();
        assert_eq!(free_permits_after_a_panic(true), 3);
        assert_eq!(free_permits_after_a_panic(false), 2);
    }

    #[test]
    fn the_wait_group_waits_for_every_member() {
        configure_for_tests();
        assert_eq!(wait_for_all(200), 200);
    }
}
