//! Step 9: configure may first. A late worker count is silently ignored; a
//! late stack size takes effect, but only after may's pool of ready-made
//! coroutines (with stacks of the old size) runs dry.
//!
//! Run it: `cargo run --example step9_configure_first`

use std::collections::HashSet;
use std::thread::{self, ThreadId};

use may::coroutine;
use may::go;
use may::sync::mpsc;

fn main() {
    // ANCHOR: first
    // Before anything starts may: this is the setting that counts.
    may::config().set_workers(2).set_stack_size(0x1000);
    // ANCHOR_END: first

    // ANCHOR: late
    // The first go! starts the scheduler with the settings above...
    let threads = worker_threads_used(1_000);
    // ...so this later call changes the number may reports, not the one it uses.
    may::config().set_workers(8);
    println!(
        "may::config().get_workers() now reports {}",
        may::config().get_workers()
    );
    let threads_after = worker_threads_used(1_000);
    println!(
        "coroutines ran on at most 2 worker threads before and after the late call: {}",
        threads.len() <= 2 && threads_after.len() <= 2
    );
    // ANCHOR_END: late

    // ANCHOR: late_stack
    // The stack size, by contrast, is read at every spawn...
    may::config().set_stack_size(0x2000); // 64 KiB
    let old_stacks = spawns_until_the_stack_is_not(32 * 1024);
    // ...but a spawn at the default size first takes a ready-made coroutine
    // from may's pool, and those still have the stacks made at start-up.
    println!(
        "after a late set_stack_size(0x2000): ~{old_stacks} coroutines still got 32 KiB \
         stacks from may's pool (capacity {}), then {} KiB",
        may::config().get_pool_capacity(),
        stack_bytes_of_a_new_coroutine() / 1024
    );
    // ANCHOR_END: late_stack
}

// ANCHOR: worker_threads_used
/// The distinct OS threads that ran `coroutines` short coroutines.
fn worker_threads_used(coroutines: usize) -> HashSet<ThreadId> {
    let handles: Vec<_> = (0..coroutines)
        .map(|_| {
            go!(|| {
                let mut seen = vec![thread::current().id()];
                coroutine::yield_now(); // may resume on another worker
                seen.push(thread::current().id());
                seen
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}
// ANCHOR_END: worker_threads_used

// ANCHOR: stack_bytes
/// How many coroutines in a row get a stack of `old_bytes` (at most one more
/// than the pool holds, so a surprise cannot loop forever).
fn spawns_until_the_stack_is_not(old_bytes: usize) -> usize {
    let limit = may::config().get_pool_capacity() + 1;
    (0..limit)
        .take_while(|_| stack_bytes_of_a_new_coroutine() == old_bytes)
        .count()
}

/// The size of the stack may gives the next coroutine spawned with the
/// default size: the coroutine reports where one of its locals lives, and
/// this thread (not a coroutine: it reads a file) looks up the memory mapping
/// around that address in /proc/self/maps.
fn stack_bytes_of_a_new_coroutine() -> usize {
    let (address_tx, address_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let coroutine = go!(move || {
        let local = 0u8;
        address_tx.send(&local as *const u8 as usize).unwrap();
        done_rx.recv().unwrap(); // keep the stack mapped until it is measured
    });
    let address = address_rx.recv().unwrap();
    let bytes = mapping_bytes_around(address);
    done_tx.send(()).unwrap();
    coroutine.join().unwrap();
    bytes
}

/// The length of the /proc/self/maps range that contains `address`.
fn mapping_bytes_around(address: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("Linux has /proc/self/maps");
    maps.lines()
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start..end).contains(&address).then_some(end - start)
        })
        .next()
        .expect("a coroutine's stack is mapped")
}
// ANCHOR_END: stack_bytes

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// Both tests change may's global configuration: one at a time.
    static CONFIG: Mutex<()> = Mutex::new(());

    #[test]
    fn a_late_set_workers_changes_the_report_but_not_the_scheduler() {
        let _config = CONFIG.lock().unwrap();
        let settings = configure_for_tests();
        let before = worker_threads_used(2_000);
        assert!(before.len() <= settings.workers, "{} threads", before.len());

        may::config().set_workers(settings.workers + 6);
        assert_eq!(may::config().get_workers(), settings.workers + 6);
        let after = worker_threads_used(2_000);
        assert!(
            after.len() <= settings.workers,
            "the late setting took effect: {} threads",
            after.len()
        );
    }

    #[test]
    fn a_late_stack_size_applies_once_the_pool_of_old_stacks_is_used_up() {
        let _config = CONFIG.lock().unwrap();
        let settings = configure_for_tests();
        let word = std::mem::size_of::<usize>();
        let old_bytes = settings.stack_words * word;
        assert_eq!(stack_bytes_of_a_new_coroutine(), old_bytes);

        may::config().set_stack_size(settings.stack_words * 2);
        let old_stacks = spawns_until_the_stack_is_not(old_bytes);
        let new_bytes = stack_bytes_of_a_new_coroutine();
        may::config().set_stack_size(settings.stack_words); // as the other tests expect
        assert!(
            (1..=may::config().get_pool_capacity()).contains(&old_stacks),
            "{old_stacks} spawns after the late call got the old stack size"
        );
        assert_eq!(new_bytes, 2 * old_bytes);
    }
}
