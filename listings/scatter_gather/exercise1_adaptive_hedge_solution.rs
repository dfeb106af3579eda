//! Exercise 1 (solution): choose the hedge delay from measured latencies.
//!
//! A fixed `--hedge-after` is wrong as soon as the backends speed up or slow
//! down. Hedge at the 95th percentile of recent latencies instead: then about
//! 5% of requests get a second copy, whatever the backends' speed.
//! `hedge_after` returns the 95th percentile of the recent latencies.

use std::collections::VecDeque;
use std::time::Duration;

// ANCHOR: window
/// The last `capacity` latencies seen.
struct LatencyWindow {
    recent: VecDeque<Duration>,
    capacity: usize,
}

impl LatencyWindow {
    /// Until this many latencies are known, use `FALLBACK`.
    const MIN_SAMPLES: usize = 20;
    const FALLBACK: Duration = Duration::from_millis(50);

    fn new(capacity: usize) -> Self {
        LatencyWindow {
            recent: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    fn record(&mut self, latency: Duration) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(latency);
    }

    /// When to send the second copy.
    fn hedge_after(&self) -> Duration {
        if self.recent.len() < Self::MIN_SAMPLES {
            return Self::FALLBACK;
        }
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        // Never below 1 ms: may 0.3.51 times a coroutine's waits in whole
        // milliseconds, so a shorter hedge delay could not be kept anyway.
        sorted[sorted.len() * 95 / 100].max(Duration::from_millis(1))
    }
}
// ANCHOR_END: window

fn main() {
    let mut window = LatencyWindow::new(200);
    println!("before any sample: hedge after {:?}", window.hedge_after());
    // 24 in 25 answers take 5 ms, 1 in 25 takes 100 ms; then the backend slows
    // down to 12 ms.
    for i in 0..200u64 {
        window.record(Duration::from_millis(if i % 25 == 24 { 100 } else { 5 }));
    }
    println!(
        "5 ms backend, 4% at 100 ms: hedge after {:?}",
        window.hedge_after()
    );
    for _ in 0..200 {
        window.record(Duration::from_millis(12));
    }
    println!(
        "after it slows to 12 ms: hedge after {:?}",
        window.hedge_after()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hedge_follows_the_95th_percentile_of_the_window() {
        let mut w = LatencyWindow::new(100);
        assert_eq!(w.hedge_after(), LatencyWindow::FALLBACK);
        for ms in 1..=100 {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(w.hedge_after(), Duration::from_millis(96));
        // The window forgets: after 100 fast answers the delay is fast too.
        for _ in 0..100 {
            w.record(Duration::from_micros(300));
        }
        assert_eq!(w.hedge_after(), Duration::from_millis(1), "floored at 1 ms");
    }
}
