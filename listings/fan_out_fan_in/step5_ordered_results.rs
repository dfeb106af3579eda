//! Step 5: results in input order, through a reorder buffer with a bounded
//! window.
//!
//! Results come back in completion order. To emit them in input order, the
//! collector holds early results until the ones before them arrive. One slow
//! task would let that buffer grow with everything finished behind it, so
//! the distributor takes a permit per task from a semaphore of `window`
//! permits, and the collector gives one back per result it emits: at most
//! `window` tasks are ever past the oldest unfinished one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::sync::Semphore;
use may_patterns::bounded;
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};

/// Task `index` costs 1 ms, except every `slow_every`-th, which costs 30 ms.
fn cost(index: usize, slow_every: usize) -> Duration {
    if index % slow_every == slow_every - 1 {
        Duration::from_millis(30)
    } else {
        Duration::from_millis(1)
    }
}

// ANCHOR: reorder
/// Holds results that arrived before their turn.
struct Reorder<T> {
    next: usize,
    early: BTreeMap<usize, T>,
    high_water: usize,
}

impl<T> Reorder<T> {
    fn new() -> Self {
        Reorder {
            next: 0,
            early: BTreeMap::new(),
            high_water: 0,
        }
    }

    /// Take result `index`; hand every result now in order to `emit`.
    fn push(&mut self, index: usize, value: T, mut emit: impl FnMut(usize, T)) {
        self.early.insert(index, value);
        self.high_water = self.high_water.max(self.early.len());
        while let Some(value) = self.early.remove(&self.next) {
            emit(self.next, value);
            self.next += 1;
        }
    }
}
// ANCHOR_END: reorder

// ANCHOR: run
/// Run `tasks` tasks on `workers` coroutines and return the indices in the
/// order they were emitted, and the most results the buffer held.
fn run_ordered(
    tasks: usize,
    workers: usize,
    window: usize,
    slow_every: usize,
) -> (Vec<usize>, usize) {
    let permits = Arc::new(Semphore::new(window));
    let (queue_tx, queue_rx) = bounded::channel::<usize>(window);
    let (done_tx, done_rx) = bounded::channel::<usize>(window);
    let distributor = {
        let permits = permits.clone();
        go!(move || {
            for index in 0..tasks {
                permits.wait(); // at most `window` tasks ahead of the oldest unfinished
                queue_tx.send(index).expect("workers run");
            }
        })
    };
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (queue, done) = (queue_rx.clone(), done_tx.clone());
            go!(move || {
                let mut pacer = Pacer::new();
                for index in queue.iter() {
                    pacer.wait(cost(index, slow_every));
                    done.send(index).expect("the collector is reading");
                }
            })
        })
        .collect();
    drop(done_tx);

    let mut reorder = Reorder::new();
    let mut emitted = Vec::with_capacity(tasks);
    for index in done_rx.iter() {
        reorder.push(index, (), |i, ()| {
            emitted.push(i);
            permits.post(); // one result out: one more task may go
        });
    }
    distributor.join().unwrap();
    handles.into_iter().for_each(|h| h.join().unwrap());
    (emitted, reorder.high_water)
}
// ANCHOR_END: run

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    for window in [8, 64] {
        let started = Instant::now();
        let (emitted, high_water) = run_ordered(400, 16, window, 50);
        let in_order = emitted.iter().enumerate().all(|(i, &index)| i == index);
        println!(
            "window {window:>2}: {} results in input order: {in_order}, \
             buffer held at most ~{high_water}, took {:.1?}",
            emitted.len(),
            started.elapsed()
        );
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn results_come_out_in_input_order_and_the_buffer_stays_within_the_window() {
        configure_for_tests();
        let (emitted, high_water) = run_ordered(300, 16, 10, 25);
        assert_eq!(emitted, (0..300).collect::<Vec<_>>());
        assert!(high_water <= 10, "held {high_water}");
        assert!(high_water > 1, "slow tasks make others wait: {high_water}");
    }

    #[test]
    fn the_reorder_buffer_emits_each_result_once_when_its_turn_comes() {
        let mut r = Reorder::new();
        let mut out = Vec::new();
        for i in [2, 0, 3, 1, 4] {
            r.push(i, i * 10, |i, v| out.push((i, v)));
        }
        assert_eq!(out, vec![(0, 0), (1, 10), (2, 20), (3, 30), (4, 40)]);
        assert_eq!(r.high_water, 3, "2 and 3 wait until 1 arrives");
    }
}
