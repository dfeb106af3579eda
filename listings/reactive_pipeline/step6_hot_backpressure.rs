//! Step 6: a hot publisher shared by subscribers that are slower than it.
//! The emitter does not wait for demand, so each subscriber chooses what
//! happens to the items it has not asked for yet: its `Backpressure`.
//!
//! The first run is scripted so its counts are the same on every machine:
//! the emitter emits 10 items, then each subscriber takes 1, and again, for
//! 1,000 items. `Buffer` cannot be scripted that way (its emitter waits for
//! the subscriber, so the script would wait for itself): the second run
//! gives it a subscriber that takes an item every millisecond on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::reactive::{
    Backpressure, Error, Hot, HotStats, Probe, Signal, Subscriber, Subscription,
};
use may_patterns::runtime::{configure_once, Settings};

const WAIT: Duration = Duration::from_secs(10);

// ANCHOR: scripted
/// One row of the scripted run: what one subscriber's strategy did.
#[derive(Debug, PartialEq)]
struct Row {
    strategy: Backpressure,
    peak: usize,
    dropped: u64,
    overflowed: u64,
    delivered: u64,
    ended: Option<Signal<u32>>,
}

/// `n` items, 10 at a time; after each 10, every subscriber still running
/// takes one. Then the stream completes and each takes what is left.
fn scripted(n: u32, strategies: &[Backpressure]) -> Vec<Row> {
    let hot = Hot::new();
    let probes: Vec<Probe<u32>> = strategies
        .iter()
        .map(|&strategy| {
            let (probe, subscriber) = Probe::new();
            hot.flux(strategy).subscribe(subscriber);
            probe
        })
        .collect();
    for round in 1..=u64::from(n / 10) {
        for i in 0..10 {
            hot.emit((round as u32 - 1) * 10 + i);
        }
        for probe in &probes {
            probe.request(1);
            probe.wait(round, WAIT); // its item, or its end
        }
    }
    hot.complete();
    let ends: Vec<Option<Signal<u32>>> = probes
        .iter()
        .map(|probe| {
            probe.request(u64::MAX);
            probe.wait_terminal(WAIT).last().cloned()
        })
        .collect();
    let stats = hot.stats();
    strategies
        .iter()
        .zip(ends)
        .map(|(&strategy, end)| row(strategy, &stats, end))
        .collect()
}
// ANCHOR_END: scripted

fn row(strategy: Backpressure, stats: &HotStats, ended: Option<Signal<u32>>) -> Row {
    let s = stats.of(strategy).expect("a subscriber chose it");
    Row {
        strategy,
        peak: s.high_water,
        dropped: s.dropped,
        overflowed: s.overflowed,
        delivered: s.delivered,
        ended,
    }
}

// ANCHOR: paced
/// A subscriber that takes one item, works on it for `pause`, then asks
/// for the next; it starts when `start` is called on its handle.
struct Paced {
    pause: Duration,
    taken: Arc<AtomicU64>,
    subscription: Arc<Mutex<Option<Subscription>>>,
    done: may::sync::mpsc::Sender<Instant>,
}

impl Subscriber<u32> for Paced {
    fn on_subscribe(&mut self, subscription: Subscription) {
        *self.subscription.lock().unwrap() = Some(subscription);
    }
    fn on_next(&mut self, _item: u32) {
        self.taken.fetch_add(1, Ordering::SeqCst);
        alarm::shared().sleep(self.pause); // the slow work, on the alarm
        if let Some(subscription) = &*self.subscription.lock().unwrap() {
            subscription.request(1);
        }
    }
    fn on_error(&mut self, _error: Error) {}
    fn on_complete(&mut self) {
        let _ = self.done.send(Instant::now());
    }
}
// ANCHOR_END: paced

/// What the `Buffer` run measured.
struct BufferRun {
    stats: HotStats,
    emitter_took: Duration,
    slow_took: Duration,
    fast_took: Duration,
    /// Items the slow subscriber had taken when the fast one got its last.
    slow_had: u64,
}

// ANCHOR: buffer
/// `n` items from an emitter coroutine to two `Buffer(capacity)`
/// subscribers: one slow (an item per millisecond), one fast (everything).
/// The slow one starts taking once its buffer is full.
fn buffered(n: u32, capacity: usize) -> BufferRun {
    let hot = Hot::new();
    let strategy = Backpressure::Buffer(capacity);
    let taken = Arc::new(AtomicU64::new(0));
    let slow_subscription = Arc::new(Mutex::new(None));
    let (done_tx, done) = may::sync::mpsc::channel();
    hot.flux(strategy).subscribe(Paced {
        pause: Duration::from_millis(1),
        taken: taken.clone(),
        subscription: slow_subscription.clone(),
        done: done_tx,
    });
    let slow_had = Arc::new(AtomicU64::new(0));
    let (seen, last) = (taken.clone(), slow_had.clone());
    let (fast, subscriber) = Probe::new();
    hot.flux(strategy)
        .map(move |item| {
            if item == n - 1 {
                last.store(seen.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            item
        })
        .subscribe(subscriber);
    fast.request(u64::MAX);

    let (offering_tx, offering) = may::sync::mpsc::channel();
    let emitter = hot.clone();
    let started = Instant::now();
    let emitting = may::go!(move || {
        for i in 0..n {
            let _ = offering_tx.send(i); // before the emit that may wait
            emitter.emit(i);
        }
        emitter.complete();
        started.elapsed()
    });
    // Items 0..capacity are held; the next emit finds the buffer full.
    while let Ok(i) = offering.recv() {
        if i == capacity as u32 {
            break;
        }
    }
    // The slow subscriber's `on_subscribe` runs on its delivery coroutine,
    // a moment after `subscribe` returned: on a busy machine it may not
    // have run yet. Wait for it, within a bound.
    let deadline = Instant::now() + WAIT;
    while slow_subscription
        .lock()
        .unwrap()
        .as_ref()
        .map(|subscription| subscription.request(1))
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the slow subscriber never subscribed"
        );
        alarm::shared().sleep(Duration::from_millis(1));
    }
    let emitter_took = emitting.join().expect("the emitter ends");
    let fast_took = {
        fast.wait_terminal(WAIT);
        started.elapsed()
    };
    let slow_took = done.recv().expect("the slow subscriber completes") - started;
    BufferRun {
        stats: hot.stats(),
        emitter_took,
        slow_took,
        fast_took,
        slow_had: slow_had.load(Ordering::SeqCst),
    }
}
// ANCHOR_END: buffer

fn ended(signal: &Option<Signal<u32>>) -> String {
    match signal {
        Some(Signal::Complete) => "complete".into(),
        Some(Signal::Error(error)) => format!("error: {error}"),
        other => format!("{other:?}"),
    }
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let strategies = [
        Backpressure::Drop(16),
        Backpressure::Latest,
        Backpressure::Error(16),
        Backpressure::Unbounded,
    ];
    println!("1000 items, 10 at a time; each subscriber takes 1 after every 10, then the rest:");
    println!("strategy   peak held  dropped  overflowed  delivered  ended with");
    for row in scripted(1000, &strategies) {
        println!(
            "{:<10} {:>9} {:>8} {:>11} {:>10}  {}",
            row.strategy.to_string(),
            row.peak,
            row.dropped,
            row.overflowed,
            row.delivered,
            ended(&row.ended)
        );
    }

    let run = buffered(200, 16);
    let s = run
        .stats
        .of(Backpressure::Buffer(16))
        .expect("two subscribers");
    println!("Buffer(16), 200 items, a slow subscriber (1 item per ms) and a fast one:");
    println!(
        "  peak held {}, dropped {}, delivered {} ({} to each)",
        s.high_water,
        s.dropped,
        s.delivered,
        s.delivered / 2
    );
    println!(
        "  the emitter took {:.1?}: the slow subscriber's pace",
        run.emitter_took
    );
    println!(
        "  the fast subscriber had its last item after {:.1?}, the slow one after {:.1?}",
        run.fast_took, run.slow_took
    );
    println!(
        "  when the fast one had all 200, the slow one had taken ~{}",
        run.slow_had
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripted_counts_are_exact() {
        may_patterns::runtime::configure_for_tests();
        let rows = scripted(
            100,
            &[
                Backpressure::Drop(16),
                Backpressure::Latest,
                Backpressure::Error(16),
                Backpressure::Unbounded,
            ],
        );
        let got: Vec<(usize, u64, u64, u64)> = rows
            .iter()
            .map(|r| (r.peak, r.dropped, r.overflowed, r.delivered))
            .collect();
        // 10 rounds of "10 in, 1 out". Drop(16): 9, 16 (+3 dropped), then
        // 16 again each round (9 dropped); 10 taken in the run, 15 after.
        assert_eq!(got[0], (16, 3 + 8 * 9, 0, 25));
        // Latest: 9 of every 10 overwritten, each round's last one taken.
        assert_eq!(got[1], (1, 90, 0, 10));
        // Error(16): round 2 overflows at its 8th item: 1 item delivered.
        assert_eq!(got[2], (16, 0, 1, 1));
        assert_eq!(
            rows[2].ended,
            Some(Signal::Error(Error::Overflow { capacity: 16 }))
        );
        // Unbounded: 9 more each round, all delivered in the end.
        assert_eq!(got[3], (91, 0, 0, 100));
    }

    #[test]
    fn buffer_loses_nothing_and_the_fast_subscriber_waits_for_the_slow_one() {
        may_patterns::runtime::configure_for_tests();
        let run = buffered(60, 8);
        let s = run.stats.of(Backpressure::Buffer(8)).unwrap().clone();
        assert_eq!((s.high_water, s.dropped, s.delivered), (8, 0, 120));
        // The emitter could not pass item 59 to the fast subscriber before
        // the slow one had taken 59 - 8 of them.
        assert!(run.slow_had >= 51, "slow had {}", run.slow_had);
        assert!(run.emitter_took >= Duration::from_millis(51));
    }
}
