//! Step 1: spawning coroutines with `go!`, and what the macro hides.
//!
//! Run it: `cargo run --example step1_spawn`

use std::time::{Duration, Instant};

use may::coroutine::{self, Builder};
use may::go;

fn main() {
    // Configure may before anything starts it (step 6 shows why).
    may::config().set_workers(2);

    // ANCHOR: spawn
    // `go!` starts a coroutine and returns a JoinHandle, like thread::spawn.
    let handles: Vec<_> = (1..=5u64).map(|n| go!(move || n * n)).collect();
    let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("squares computed by 5 coroutines: {squares:?}");
    // ANCHOR_END: spawn

    // ANCHOR: many
    let started = Instant::now();
    let sleepers = sleep_in_coroutines(10_000, Duration::from_millis(50));
    println!(
        "{sleepers} coroutines each slept 50ms; all done after {:?}",
        started.elapsed()
    );
    // ANCHOR_END: many

    // ANCHOR: builder
    let named = go!(
        Builder::new().name("resizer".to_owned()).stack_size(0x2000),
        || coroutine::current().name().map(str::to_owned)
    )
    .expect("spawning with a builder can fail, e.g. out of memory");
    println!(
        "a named coroutine says its name is {:?}",
        named.join().unwrap()
    );
    // ANCHOR_END: builder

    // ANCHOR: unsafe_spawn
    // What `go!(f)` expands to, minus a check that `f` is Send + 'static:
    // SAFETY: the closure touches no thread-local storage and needs far less
    // than the default stack.
    let raw = unsafe { coroutine::spawn(|| "spawned without the macro") };
    println!("{}", raw.join().unwrap());
    // ANCHOR_END: unsafe_spawn
}

// ANCHOR: sleep_in_coroutines
/// Start `count` coroutines that each sleep for `nap`, wait for all of them,
/// and return how many finished.
fn sleep_in_coroutines(count: usize, nap: Duration) -> usize {
    let handles: Vec<_> = (0..count)
        // may's sleep parks the coroutine; the worker thread runs others.
        .map(|_| go!(move || coroutine::sleep(nap)))
        .collect();
    handles.into_iter().filter_map(|h| h.join().ok()).count()
}
// ANCHOR_END: sleep_in_coroutines

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn join_returns_each_coroutines_value() {
        configure_for_tests();
        let handles: Vec<_> = (0..100u64).map(|n| go!(move || n * 2)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 2 * (0..100).sum::<u64>());
    }

    #[test]
    fn sleeping_coroutines_overlap_instead_of_queueing() {
        configure_for_tests();
        let started = Instant::now();
        assert_eq!(sleep_in_coroutines(2_000, Duration::from_millis(50)), 2_000);
        // One after another they would take 100 s; together about 50 ms. The
        // bound leaves a wide margin for a slow, busy CI machine.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_builder_names_the_coroutine() {
        configure_for_tests();
        let h = go!(Builder::new().name("n1".to_owned()), || {
            coroutine::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(h.join().unwrap().as_deref(), Some("n1"));
    }
}
