//! Pitfall: an unbounded buffer for a slow subscriber. Nothing is dropped
//! and nothing waits, so nothing looks wrong, but what the subscriber has
//! not taken yet is held in memory, and that grows with every item the
//! emitter is ahead: with the length of the run, not with any bound.
//!
//! First the same script as step 6 (10 items in, 1 taken), for longer and
//! longer runs: the unbounded buffer's peak grows with the run, `Drop(16)`
//! beside it stays at 16. Then a free-running emitter (an OS thread, as a
//! feed would be) and two subscribers that take an item per millisecond,
//! stopped by a deadline: without one, this run would end only when memory
//! does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::reactive::{Backpressure, Error, Hot, Probe, Subscriber, Subscription};
use may_patterns::runtime::{configure_once, Settings};

const WAIT: Duration = Duration::from_secs(10);

// ANCHOR: grows
/// `n` items, 10 at a time, each subscriber taking 1 after every 10: the
/// peak held for an unbounded subscriber and for a `Drop(16)` one.
fn peaks(n: u32) -> (usize, usize) {
    let hot = Hot::new();
    let (unbounded, sub) = Probe::new();
    hot.flux(Backpressure::Unbounded).subscribe(sub);
    let (dropping, sub) = Probe::new();
    hot.flux(Backpressure::Drop(16)).subscribe(sub);
    for round in 1..=u64::from(n / 10) {
        for i in 0..10 {
            hot.emit((round as u32 - 1) * 10 + i);
        }
        for probe in [&unbounded, &dropping] {
            probe.request(1);
            probe.wait(round, WAIT);
        }
    }
    let stats = hot.stats();
    let peak = |s| stats.of(s).expect("subscribed").high_water;
    (peak(Backpressure::Unbounded), peak(Backpressure::Drop(16)))
}
// ANCHOR_END: grows

/// A subscriber that takes an item per millisecond until it is cancelled;
/// it leaves a clone of its subscription in `handles`, for the cancel.
struct Slow {
    subscription: Option<Subscription>,
    handles: Arc<Mutex<Vec<Subscription>>>,
}

impl Slow {
    fn new(handles: &Arc<Mutex<Vec<Subscription>>>) -> Slow {
        Slow {
            subscription: None,
            handles: handles.clone(),
        }
    }
}

impl Subscriber<u64> for Slow {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.handles.lock().unwrap().push(subscription.clone());
        subscription.request(1);
        self.subscription = Some(subscription);
    }
    fn on_next(&mut self, _item: u64) {
        alarm::shared().sleep(Duration::from_millis(1));
        if let Some(subscription) = &self.subscription {
            subscription.request(1);
        }
    }
    fn on_error(&mut self, _error: Error) {}
    fn on_complete(&mut self) {}
}

/// What the free run measured.
struct FreeRun {
    emitted: u64,
    unbounded_peak: usize,
    drop_peak: usize,
    /// Growth of the process's peak resident memory during the run, KiB.
    grew_kib: u64,
}

// ANCHOR: free_run
/// Emit as fast as one OS thread can for `deadline` to a slow unbounded
/// subscriber and a slow `Drop(16)` one; then stop, however far ahead.
fn free_run(deadline: Duration) -> FreeRun {
    let hot = Hot::new();
    let handles = Arc::new(Mutex::new(Vec::new()));
    hot.flux(Backpressure::Unbounded)
        .subscribe(Slow::new(&handles));
    hot.flux(Backpressure::Drop(16))
        .subscribe(Slow::new(&handles));
    let before = peak_rss_kib();
    let feed = hot.clone();
    let emitter = std::thread::spawn(move || {
        let started = Instant::now();
        let mut i = 0u64;
        while started.elapsed() < deadline {
            feed.emit(i);
            i += 1;
        }
        feed.complete();
    });
    emitter.join().expect("the emitter thread ends");
    let stats = hot.stats();
    // Cancelling lets go of what is held (the unbounded lane's backlog).
    handles
        .lock()
        .unwrap()
        .iter()
        .for_each(Subscription::cancel);
    let peak = |s| stats.of(s).expect("subscribed").high_water;
    FreeRun {
        emitted: stats.emitted,
        unbounded_peak: peak(Backpressure::Unbounded),
        drop_peak: peak(Backpressure::Drop(16)),
        grew_kib: peak_rss_kib().saturating_sub(before),
    }
}
// ANCHOR_END: free_run

/// The process's peak resident memory (`VmHWM`), in KiB; 0 where there is
/// no `/proc`.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!("10 items in, 1 taken, for longer runs: the peak held per subscriber");
    println!("    items  Unbounded  Drop(16)");
    for n in [1_000, 10_000, 100_000] {
        let (unbounded, dropping) = peaks(n);
        println!("{n:>9} {unbounded:>10} {dropping:>9}");
    }
    let run = free_run(Duration::from_millis(100));
    println!("a free-running emitter, stopped after 100 ms; subscribers take 1 item per ms:");
    println!("  emitted ~{}", run.emitted);
    println!("  Unbounded held ~{} at its peak", run.unbounded_peak);
    println!("  Drop(16) held {} at its peak", run.drop_peak);
    println!("  peak resident memory grew by ~{} KiB", run.grew_kib);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unbounded_peak_grows_with_the_run_and_the_bounded_one_does_not() {
        may_patterns::runtime::configure_for_tests();
        assert_eq!(peaks(100), (91, 16));
        assert_eq!(peaks(1_000), (901, 16));
    }

    #[test]
    fn the_free_run_stops_at_its_deadline_far_ahead_of_the_subscribers() {
        may_patterns::runtime::configure_for_tests();
        let started = Instant::now();
        let run = free_run(Duration::from_millis(50));
        assert!(started.elapsed() < WAIT, "the deadline did not stop it");
        assert_eq!(run.drop_peak, 16);
        // A subscriber taking 1 item per ms took at most ~50 of them.
        assert!(run.unbounded_peak as u64 + 100 >= run.emitted);
        assert!(run.unbounded_peak > 1_000, "peak {}", run.unbounded_peak);
    }
}
