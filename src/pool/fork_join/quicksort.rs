//! The recursive job the chapter measures, a parallel quicksort. It is in
//! the library, not in a listing, so that the bench runs the very same code
//! on this pool, on rayon and sequentially.

use super::worker::Worker;

/// A way to run two closures, perhaps at the same time: this pool's
/// [`Worker`], [`Sequential`], or (in the chapter's bench) `rayon::join`.
/// Each closure gets the runtime back, to fork further from.
pub trait Fork {
    /// Run `a` and `b`, both finished on return.
    fn fork<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce(&Self) -> RA + Send,
        B: FnOnce(&Self) -> RB + Send,
        RA: Send,
        RB: Send;
}

impl Fork for Worker {
    fn fork<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce(&Self) -> RA + Send,
        B: FnOnce(&Self) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        self.join(a, b)
    }
}

/// Runs `a`, then `b`, on the caller's thread: the baseline.
pub struct Sequential;

impl Fork for Sequential {
    fn fork<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce(&Self) -> RA + Send,
        B: FnOnce(&Self) -> RB + Send,
        RA: Send,
        RB: Send,
    {
        (a(self), b(self))
    }
}

// ANCHOR: quicksort
/// Sort `items`: partition, then fork both sides, down to slices of
/// `cutoff` items (or fewer), which `sort_unstable` sorts where they are.
///
/// The input cannot decide how deep the recursion goes: after `2 log2 n`
/// levels (bad pivots) a slice is handed to `sort_unstable` whatever its
/// length, so a worker's stack holds at most that many levels of this job.
pub fn quicksort<T: Ord + Send, F: Fork>(runtime: &F, items: &mut [T], cutoff: usize) {
    let levels = 2 * (usize::BITS - items.len().leading_zeros());
    sort(runtime, items, cutoff.max(1), levels);
}

fn sort<T: Ord + Send, F: Fork>(runtime: &F, items: &mut [T], cutoff: usize, levels: u32) {
    if items.len() <= cutoff || levels == 0 {
        items.sort_unstable();
        return;
    }
    let pivot = partition(items);
    let (low, high) = items.split_at_mut(pivot);
    let high = &mut high[1..]; // high[0] is the pivot, already in place
    runtime.fork(
        |runtime| sort(runtime, low, cutoff, levels - 1),
        |runtime| sort(runtime, high, cutoff, levels - 1),
    );
}
// ANCHOR_END: quicksort

/// Move the median of the first, middle and last items to its sorted place
/// (smaller items before it, the others after) and return that place.
fn partition<T: Ord>(items: &mut [T]) -> usize {
    let last = items.len() - 1;
    let middle = last / 2;
    if items[middle] < items[0] {
        items.swap(middle, 0);
    }
    if items[last] < items[0] {
        items.swap(last, 0);
    }
    if items[last] < items[middle] {
        items.swap(last, middle);
    }
    items.swap(middle, last); // the median is the pivot, kept at the end
    let mut smaller = 0;
    for i in 0..last {
        if items[i] < items[last] {
            items.swap(i, smaller);
            smaller += 1;
        }
    }
    items.swap(smaller, last);
    smaller
}
