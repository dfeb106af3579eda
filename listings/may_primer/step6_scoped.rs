//! Step 6: scoped coroutines may borrow from the stack that spawned them.
//!
//! Run it: `cargo run --example step6_scoped`

use may::coroutine;
use may::go;

fn main() {
    may::config().set_workers(2);

    let readings: Vec<u64> = (1..=1_000).collect();
    println!(
        "sum of 1..=1000 in 4 scoped coroutines: {}",
        parallel_sum(&readings, 4)
    );

    // ANCHOR: mutate
    let mut counters = [0u32; 4];
    coroutine::scope(|s| {
        for (i, slot) in counters.iter_mut().enumerate() {
            // Each coroutine gets exclusive access to one element.
            go!(s, move || *slot = (i as u32 + 1) * 10);
        }
    }); // every scoped coroutine has finished here
    println!("counters written in place: {counters:?}");
    // ANCHOR_END: mutate
}

// ANCHOR: parallel_sum
/// Sum `data` in `parts` coroutines that borrow slices of it: no copy, no Arc.
fn parallel_sum(data: &[u64], parts: usize) -> u64 {
    let chunk = data.len().div_ceil(parts.max(1)).max(1);
    coroutine::scope(|s| {
        let handles: Vec<_> = data
            .chunks(chunk)
            .map(|part| go!(s, move || part.iter().sum::<u64>()))
            .collect();
        // A scoped handle's join returns the value itself (it panics if the
        // coroutine panicked).
        handles.into_iter().map(|h| h.join()).sum()
    })
}
// ANCHOR_END: parallel_sum

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn parallel_sum_matches_the_sequential_sum_for_any_split() {
        configure_for_tests();
        let data: Vec<u64> = (0..10_007).map(|x| x * 3 + 1).collect();
        let expected: u64 = data.iter().sum();
        for parts in [1, 2, 3, 7, 64, 20_000] {
            assert_eq!(parallel_sum(&data, parts), expected, "parts = {parts}");
        }
        assert_eq!(parallel_sum(&[], 4), 0);
    }
}
