//! Step 1: spawning coroutines with `go!` and joining them.
//!
//! Run it: `cargo run --example step1_spawn`

use may::go;

fn main() {
    // Configure may before anything starts it (step 9 shows why).
    may::config().set_workers(2);

    // ANCHOR: spawn
    // `go!` starts a coroutine and returns a JoinHandle, like thread::spawn.
    let handles: Vec<_> = (1..=5u64).map(|n| go!(move || n * n)).collect();
    let squares: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("squares computed by 5 coroutines: {squares:?}");
    // ANCHOR_END: spawn
}

#[cfg(test)]
mod tests {
    use may::go;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn join_returns_each_coroutines_value() {
        configure_for_tests();
        let handles: Vec<_> = (0..100u64).map(|n| go!(move || n * 2)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 2 * (0..100).sum::<u64>());
    }
}
