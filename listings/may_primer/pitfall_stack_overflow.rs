//! Pitfall: each coroutine has a small, fixed stack (32 KiB by default).
//! Deep recursion or big locals overflow it; size the stack per coroutine.
//!
//! Run it: `cargo run --example pitfall_stack_overflow`

use std::hint::black_box;

use may::coroutine::Builder;
use may::go;

fn main() {
    may::config().set_workers(2);

    // ANCHOR: compare
    // 64 frames of a function with a 1 KiB local need more than 64 KiB.
    let small = recurse_in_coroutine(0x1000, 64); // 0x1000 words = 32 KiB
    let large = recurse_in_coroutine(0x8000, 64); // 0x8000 words = 256 KiB
    println!("32 KiB stack:  {small:?}");
    println!("256 KiB stack: {large:?}");
    // ANCHOR_END: compare
}

// ANCHOR: recurse
/// Recurse `depth` times, each frame holding a 1 KiB buffer.
fn recurse(depth: u32) -> u64 {
    let buffer = black_box([depth as u8; 1024]);
    if depth == 0 {
        return buffer[0] as u64;
    }
    buffer[1023] as u64 + recurse(depth - 1)
}

/// Run `recurse(depth)` in a coroutine with a stack of `stack_words` words.
fn recurse_in_coroutine(stack_words: usize, depth: u32) -> Result<u64, String> {
    let handle = go!(Builder::new().stack_size(stack_words), move || recurse(
        depth
    ))
    .map_err(|e| format!("spawn failed: {e}"))?;
    // An overflow is caught by a guard page: may prints a message to stderr,
    // ends the coroutine, and join() returns an error. Destructors of values
    // on the overflowed stack do not run.
    handle
        .join()
        .map_err(|_| "the coroutine overflowed its stack".to_owned())
}
// ANCHOR_END: recurse

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_deep_recursion_overflows_the_default_stack_but_fits_a_larger_one() {
        configure_for_tests();
        assert!(recurse_in_coroutine(0x1000, 64).is_err());
        let expected: u64 = (1..=64u64).map(|d| d % 256).sum();
        assert_eq!(recurse_in_coroutine(0x8000, 64), Ok(expected));
    }
}
