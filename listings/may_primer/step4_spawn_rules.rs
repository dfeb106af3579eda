//! Step 4: what `go!` checks (`Send + 'static`) and the `unsafe` spawn it
//! wraps. The chapter shows the two programs the compiler rejects; this
//! listing is their fixed versions.
//!
//! Run it: `cargo run --example step4_spawn_rules`

use std::sync::Arc;

use may::coroutine;
use may::go;

fn main() {
    may::config().set_workers(2);
    println!("a moved Vec summed in a coroutine: {}", moved_total());
    println!("an Arc read in a coroutine: {}", shared_plus_one());

    // ANCHOR: unsafe_spawn
    // What `go!(f)` expands to, minus a check that `f` is Send + 'static:
    // SAFETY: the closure touches no thread-local storage and needs far less
    // than the default stack.
    let raw = unsafe { coroutine::spawn(|| "spawned without the macro") };
    println!("{}", raw.join().unwrap());
    // ANCHOR_END: unsafe_spawn
}

// ANCHOR: moved
/// `move` hands the Vec to the coroutine, which now owns it: no borrow of
/// the caller's stack can outlive the caller.
fn moved_total() -> i32 {
    #[allow(clippy::useless_vec)] // the same Vec as the rejected version
    let orders = vec![1, 2, 3];
    let total = go!(move || orders.iter().sum::<i32>());
    total.join().unwrap()
}
// ANCHOR_END: moved

// ANCHOR: arc
/// `Arc` counts its references atomically, so it is `Send` where `Rc` is not.
fn shared_plus_one() -> i32 {
    let shared = Arc::new(5);
    let h = go!(move || *shared + 1);
    h.join().unwrap()
}
// ANCHOR_END: arc

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_fixed_versions_compute_what_the_rejected_ones_meant() {
        configure_for_tests();
        assert_eq!(moved_total(), 6);
        assert_eq!(shared_plus_one(), 6);
    }

    #[test]
    fn the_raw_spawn_returns_a_join_handle_like_go() {
        configure_for_tests();
        // SAFETY: no thread-locals, a tiny stack frame.
        let h = unsafe { coroutine::spawn(|| 40 + 2) };
        assert_eq!(h.join().unwrap(), 42);
    }
}
