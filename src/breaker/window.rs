//! The closed breaker's sliding window of call outcomes, count- or
//! time-based, as resilience4j keeps it: totals updated on every call, so
//! reading the rates costs O(1) (a count window) or ten additions (a time
//! window), never a walk over the calls.

use std::time::Duration;

use super::config::Window;

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    pub failed: bool,
    pub slow: bool,
}

/// Totals over a window (or over the half-open probes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        self.calls += 1;
        self.failures += u32::from(outcome.failed);
        self.slow += u32::from(outcome.slow);
    }

    fn remove(&mut self, outcome: Outcome) {
        self.calls -= 1;
        self.failures -= u32::from(outcome.failed);
        self.slow -= u32::from(outcome.slow);
    }

    fn merge(&mut self, other: Counts) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    /// failures / calls, 0.0 for no calls.
    pub fn failure_rate(&self) -> f64 {
        share(self.failures, self.calls)
    }

    /// slow / calls, 0.0 for no calls.
    pub fn slow_rate(&self) -> f64 {
        share(self.slow, self.calls)
    }
}

fn share(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// The outcomes a closed breaker decides by.
#[derive(Debug)]
pub(super) enum SlidingWindow {
    Count(CountWindow),
    Time(TimeWindow<Counts>),
}

impl SlidingWindow {
    pub fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => SlidingWindow::Count(CountWindow::new(n)),
            Window::Time(t) => SlidingWindow::Time(TimeWindow::new(t)),
        }
    }

    pub fn record(&mut self, now: Duration, outcome: Outcome) {
        match self {
            SlidingWindow::Count(w) => w.record(outcome),
            SlidingWindow::Time(w) => w.current(now).add(outcome),
        }
    }

    pub fn counts(&self, now: Duration) -> Counts {
        match self {
            SlidingWindow::Count(w) => w.totals,
            SlidingWindow::Time(w) => w.live(now).fold(Counts::default(), |mut total, b| {
                total.merge(*b);
                total
            }),
        }
    }

    /// Forget every outcome (on every state change, as resilience4j does:
    /// a closed breaker starts from an empty window).
    pub fn clear(&mut self) {
        match self {
            SlidingWindow::Count(w) => *w = CountWindow::new(w.size),
            SlidingWindow::Time(w) => w.clear(),
        }
    }
}

// ANCHOR: count_window
/// The last `size` outcomes in a ring buffer, with running totals.
#[derive(Debug)]
pub(super) struct CountWindow {
    size: u32,
    /// Grows to `size` and then wraps, so a large window costs memory only
    /// once it has seen that many calls.
    ring: Vec<Outcome>,
    next: usize,
    totals: Counts,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        CountWindow {
            size,
            ring: Vec::new(),
            next: 0,
            totals: Counts::default(),
        }
    }

    fn record(&mut self, outcome: Outcome) {
        if self.ring.len() < self.size as usize {
            self.ring.push(outcome);
        } else {
            // The oldest outcome leaves as the newest comes in.
            let oldest = std::mem::replace(&mut self.ring[self.next], outcome);
            self.totals.remove(oldest);
            self.next = (self.next + 1) % self.ring.len();
        }
        self.totals.add(outcome);
    }
}
// ANCHOR_END: count_window

// ANCHOR: time_window
/// Ten buckets of T/10 each, holding a `T` (a breaker's [`Counts`], a retry
/// budget's calls and retries). A bucket is named by its number since the
/// clock's origin (`now / bucket`), so a stale bucket is recognised and
/// reset when time comes back round to its slot, with no timer.
#[derive(Debug)]
pub(super) struct TimeWindow<T> {
    bucket_nanos: u64,
    buckets: [Bucket<T>; BUCKETS],
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket<T> {
    number: u64,
    totals: T,
}

impl<T: Copy + Default> TimeWindow<T> {
    /// A window over the last `span`; `span` must be at least 10 ns (the
    /// config checks), so a bucket is at least 1 ns.
    pub fn new(span: Duration) -> Self {
        let bucket = span.as_nanos() / BUCKETS as u128;
        TimeWindow {
            bucket_nanos: u64::try_from(bucket).unwrap_or(u64::MAX),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    pub fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn number(&self, now: Duration) -> u64 {
        u64::try_from(now.as_nanos() / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX)
    }

    /// The bucket `now` falls in, emptied first if it last held an older one.
    pub fn current(&mut self, now: Duration) -> &mut T {
        let number = self.number(now);
        let bucket = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if bucket.number != number {
            *bucket = Bucket {
                number,
                totals: T::default(),
            };
        }
        &mut bucket.totals
    }

    /// The buckets still in the window at `now`: the current one and the
    /// nine before it.
    pub fn live(&self, now: Duration) -> impl Iterator<Item = &T> {
        let current = self.number(now);
        self.buckets
            .iter()
            .filter(move |b| b.number <= current && current - b.number < BUCKETS as u64)
            .map(|b| &b.totals)
    }
}
// ANCHOR_END: time_window

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome {
        failed: false,
        slow: false,
    };
    const FAILED: Outcome = Outcome {
        failed: true,
        slow: false,
    };
    const SLOW_FAILED: Outcome = Outcome {
        failed: true,
        slow: true,
    };

    fn counts(calls: u32, failures: u32, slow: u32) -> Counts {
        Counts {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn a_count_window_keeps_exactly_the_last_n_outcomes() {
        let mut window = SlidingWindow::new(Window::Count(3));
        let now = Duration::ZERO;
        window.record(now, FAILED);
        window.record(now, SLOW_FAILED);
        assert_eq!(window.counts(now), counts(2, 2, 1));
        window.record(now, OK);
        window.record(now, OK); // the first failure leaves
        assert_eq!(window.counts(now), counts(3, 1, 1));
        window.record(now, OK); // the slow failure leaves
        assert_eq!(window.counts(now), counts(3, 0, 0));
        window.record(now, FAILED);
        assert_eq!(window.counts(now), counts(3, 1, 0));
        window.clear();
        assert_eq!(window.counts(now), counts(0, 0, 0));
        assert_eq!(window.counts(now).failure_rate(), 0.0);
    }

    #[test]
    fn a_time_window_drops_a_bucket_once_it_is_ten_buckets_old() {
        let ms = Duration::from_millis;
        let mut window = SlidingWindow::new(Window::Time(Duration::from_secs(1)));
        window.record(ms(0), FAILED); // bucket 0: [0, 100 ms)
        window.record(ms(99), OK); // bucket 0
        window.record(ms(100), SLOW_FAILED); // bucket 1
        assert_eq!(window.counts(ms(999)), counts(3, 2, 1));
        assert_eq!(window.counts(ms(999)).failure_rate(), 2.0 / 3.0);
        // At 1 s bucket 10 is current: bucket 0 has left, bucket 1 not yet.
        assert_eq!(window.counts(ms(1_000)), counts(1, 1, 1));
        assert_eq!(window.counts(ms(1_100)), counts(0, 0, 0));
        // Bucket 10 reuses bucket 0's slot and starts from zero.
        window.record(ms(1_050), OK);
        assert_eq!(window.counts(ms(1_050)), counts(2, 1, 1));
        // Long idle: everything is gone.
        assert_eq!(window.counts(ms(60_000)), counts(0, 0, 0));
    }

    /// Random outcomes at random times, against a recount from the full
    /// history each time (the last N calls; the calls whose bucket is one
    /// of the last ten).
    #[test]
    fn running_totals_match_a_recount_from_the_history() {
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let size = rng.u32(1..30);
            let span = Duration::from_millis(rng.u64(10..2_000));
            let bucket = span.as_nanos() / 10;
            let mut by_count = SlidingWindow::new(Window::Count(size));
            let mut by_time = SlidingWindow::new(Window::Time(span));
            let mut history = Vec::new();
            let mut now = Duration::ZERO;
            for _ in 0..500 {
                now += Duration::from_micros(rng.u64(0..span.as_micros() as u64 / 3));
                let outcome = Outcome {
                    failed: rng.bool(),
                    slow: rng.u8(0..4) == 0,
                };
                by_count.record(now, outcome);
                by_time.record(now, outcome);
                history.push((now, outcome));
                let recount = |calls: &mut dyn Iterator<Item = &(Duration, Outcome)>| {
                    calls.fold(Counts::default(), |mut c, (_, o)| {
                        c.add(*o);
                        c
                    })
                };
                let last_n = history.iter().rev().take(size as usize);
                assert_eq!(
                    by_count.counts(now),
                    recount(&mut last_n.into_iter()),
                    "seed {seed}"
                );
                // Read now, and at a later moment with no call in between.
                let later = now + Duration::from_micros(rng.u64(0..span.as_micros() as u64));
                for at in [now, later] {
                    let current = at.as_nanos() / bucket;
                    let recent = history
                        .iter()
                        .filter(|(t, _)| current - t.as_nanos() / bucket < 10);
                    assert_eq!(
                        by_time.counts(at),
                        recount(&mut recent.into_iter()),
                        "seed {seed}"
                    );
                }
            }
        }
    }
}
