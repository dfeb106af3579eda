//! The time operators (`buffer`, `debounce`, `throttle`, `sample`,
//! `timeout`) and `retry`: their behaviour on scripted timelines whose gaps
//! are far apart (5 ms between keys, 100 ms and more between bursts), and
//! the rules they must keep towards a slow subscriber.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::alarm;
use may_patterns::reactive::{Demand, Error, Flux, Probe, Publisher, Signal, Subscriber};

use super::{assert_no_violations, init, QUIET, WAIT};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two bursts of keys 5 ms apart, the second 400 ms after the first: the
/// operators' times (100 ms) are far from both, so a busy machine that
/// delays a coroutine by tens of milliseconds does not change the outcome.
fn two_bursts() -> Flux<&'static str> {
    let steps = [(0, "a"), (5, "b"), (10, "c"), (400, "d"), (405, "e")];
    Flux::scripted(
        steps.iter().map(|&(at, key)| (ms(at), key)).collect(),
        Some(ms(500)),
    )
}

/// A source that counts the items taken from it, and flags when its
/// iterator was dropped (its coroutine stopped).
pub fn counted(count: u64) -> (Flux<u64>, Arc<AtomicU64>, Arc<AtomicBool>) {
    let produced = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let (p, s) = (produced.clone(), stopped.clone());
    let flux = Flux::from_iter(move || Counted {
        next: 0,
        count,
        produced: p.clone(),
        stopped: s.clone(),
    });
    (flux, produced, stopped)
}

struct Counted {
    next: u64,
    count: u64,
    produced: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl Iterator for Counted {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.count).then(|| {
            self.produced.fetch_add(1, Ordering::SeqCst);
            self.next += 1;
            self.next - 1
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// How a [`Then`] source ends after its items.
#[derive(Clone)]
pub enum End {
    Fail(Error),
    /// Never: it waits for a cancel, then sets its flag.
    Stall,
}

/// A source that sends `items` (within demand), then ends as `end` says.
pub struct Then {
    pub items: Vec<u64>,
    pub end: End,
    /// Set when the source saw its cancel.
    pub stopped: Arc<AtomicBool>,
}

impl Publisher<u64> for Then {
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<u64>>) {
        let (items, end, stopped) = (self.items.clone(), self.end.clone(), self.stopped.clone());
        may::go!(move || {
            let (subscription, demand) = Demand::new();
            subscriber.on_subscribe(subscription);
            for item in items {
                match demand.take_one() {
                    Ok(true) => subscriber.on_next(item),
                    _ => return stopped.store(true, Ordering::SeqCst),
                }
            }
            match end {
                End::Fail(error) => subscriber.on_error(error),
                End::Stall => {
                    while !demand.is_cancelled() {
                        alarm::shared().sleep(ms(2));
                    }
                    stopped.store(true, Ordering::SeqCst);
                }
            }
        });
    }
}

/// A [`Then`] source and its stopped flag.
pub fn then(items: Vec<u64>, end: End) -> (Flux<u64>, Arc<AtomicBool>) {
    let stopped = Arc::new(AtomicBool::new(false));
    let source = Then {
        items,
        end,
        stopped: stopped.clone(),
    };
    (Flux::new(source), stopped)
}

/// Wait until `flag` is set, up to WAIT.
pub fn wait_for(flag: &AtomicBool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(ms(1)); // the test thread is not a may worker
    }
    flag.load(Ordering::SeqCst)
}

/// Subscribe, request everything, wait for the end: items, signals, and
/// the probe's rule violations.
pub fn all<T: Clone + Send + 'static>(flux: &Flux<T>) -> (Vec<T>, Vec<Signal<T>>, Vec<String>) {
    let (probe, subscriber) = Probe::new();
    probe.request(u64::MAX);
    flux.subscribe(subscriber);
    let signals = probe.wait_terminal(WAIT);
    (probe.items(), signals, probe.violations())
}

#[test]
fn buffer_closes_a_batch_by_count_or_by_time() {
    init();
    let (items, signals, violations) = all(&two_bursts().buffer(2, ms(100)));
    assert_eq!(items, vec![vec!["a", "b"], vec!["c"], vec!["d", "e"]]);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn rule_1_1_buffer_sends_no_batch_beyond_demand_and_holds_a_bounded_backlog() {
    init();
    let (source, produced, _) = counted(1000);
    let (probe, subscriber) = Probe::new();
    probe.request(2);
    source
        .buffer(10, Duration::from_secs(5))
        .subscribe(subscriber);
    let signals = probe.wait(2, WAIT);
    std::thread::sleep(QUIET);
    assert_eq!(probe.next_count(), 2, "{signals:?}");
    // Sent: 2 batches; held: 1 finished and 1 filling; from_iter takes one
    // more item from its iterator while it waits for demand.
    let taken = produced.load(Ordering::SeqCst);
    assert!(taken <= 41, "{taken} items taken for 2 batches of 10");
    probe.request(u64::MAX);
    probe.wait_terminal(WAIT);
    let items = probe.items();
    assert_eq!(items.len(), 100);
    assert!(items.iter().flatten().copied().eq(0..1000));
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn debounce_emits_the_last_item_of_each_burst() {
    init();
    let (items, signals, violations) = all(&two_bursts().debounce(ms(100)));
    assert_eq!(items, vec!["c", "e"]);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn rule_1_1_debounce_keeps_one_latest_item_for_a_subscriber_without_demand() {
    init();
    let (probe, subscriber) = Probe::new();
    two_bursts().debounce(ms(20)).subscribe(subscriber);
    // Both bursts go quiet while nothing is requested: only the latest waits.
    std::thread::sleep(ms(600));
    assert_eq!(probe.next_count(), 0);
    probe.request(5);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Next("e"), Signal::Complete]);
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn throttle_emits_the_first_item_of_each_window() {
    init();
    let (items, _, violations) = all(&two_bursts().throttle(ms(100)));
    assert_eq!(items, vec!["a", "d"]);
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn sample_emits_the_latest_item_each_period() {
    init();
    // Ticks at 200, 400, 600 ms: the first finds "c", the second nothing
    // new, the third "e" (were it late, completion at 650 ms would send it).
    let steps = [(0, "a"), (5, "b"), (10, "c"), (490, "d"), (495, "e")];
    let script = Flux::scripted(
        steps.iter().map(|&(at, k)| (ms(at), k)).collect(),
        Some(ms(650)),
    );
    let (items, signals, violations) = all(&script.sample(ms(200)));
    assert_eq!(items, vec!["c", "e"]);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn rule_3_9_request_zero_on_a_time_operator_is_an_error() {
    init();
    let (probe, subscriber) = Probe::new();
    Flux::range(0, 10).debounce(ms(10)).subscribe(subscriber);
    probe.request(0);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Error(Error::NonPositiveRequest)]);
}

#[test]
fn rule_1_7_timeout_fails_once_and_stops_the_stalled_source() {
    init();
    let (stalled, stopped) = then(vec![0], End::Stall);
    let (probe, subscriber) = Probe::new();
    probe.request(5);
    let started = Instant::now();
    stalled.timeout(ms(50)).subscribe(subscriber);
    let signals = probe.wait_terminal(WAIT);
    assert!(started.elapsed() >= ms(50));
    assert_eq!(
        signals,
        vec![Signal::Next(0), Signal::Error(Error::Timeout(ms(50)))]
    );
    assert!(wait_for(&stopped));
    assert!(probe.wait_dropped(WAIT), "the subscriber is let go (3.13)");
    std::thread::sleep(QUIET);
    assert_eq!(probe.signals().len(), 2);
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn timeout_counts_only_while_the_subscriber_waits() {
    init();
    let (probe, subscriber) = Probe::new();
    Flux::range(0, 3).timeout(ms(20)).subscribe(subscriber);
    std::thread::sleep(ms(100)); // no demand: no timeout
    assert!(!probe.is_terminated());
    probe.request(3);
    let signals = probe.wait_terminal(WAIT);
    let expected = vec![
        Signal::Next(0),
        Signal::Next(1),
        Signal::Next(2),
        Signal::Complete,
    ];
    assert_eq!(signals, expected);
}

/// A source whose first `fails` subscriptions fail before sending
/// anything (as a refused connection does), and the count of tries.
fn flaky(fails: u64) -> (Flux<u64>, Arc<AtomicU64>) {
    struct Flaky {
        fails: u64,
        tries: Arc<AtomicU64>,
    }
    impl Publisher<u64> for Flaky {
        fn subscribe(&self, subscriber: Box<dyn Subscriber<u64>>) {
            if self.tries.fetch_add(1, Ordering::SeqCst) < self.fails {
                Flux::error(Error::failed("refused")).subscribe(subscriber)
            } else {
                Flux::range(1, 3).subscribe(subscriber)
            }
        }
    }
    let tries = Arc::new(AtomicU64::new(0));
    let flux = Flux::new(Flaky {
        fails,
        tries: tries.clone(),
    });
    (flux, tries)
}

#[test]
fn retry_subscribes_again_after_an_error() {
    init();
    let (source, tries) = flaky(2);
    let (items, signals, violations) = all(&source.retry(2));
    assert_eq!(items, vec![1, 2, 3]);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn retry_gives_up_with_the_last_error() {
    init();
    let (source, tries) = flaky(5);
    let (_, signals, _) = all(&source.retry(2));
    assert_eq!(signals, vec![Signal::Error(Error::failed("refused"))]);
    assert_eq!(tries.load(Ordering::SeqCst), 3);
}

#[test]
fn rule_1_1_retry_asks_the_next_try_only_for_unmet_demand() {
    init();
    // Each try sends 0 and 1, then fails: items before an error come again.
    let (source, _) = then(vec![0, 1], End::Fail(Error::failed("reset")));
    let (probe, subscriber) = Probe::new();
    probe.request(3);
    source.retry(5).subscribe(subscriber);
    probe.wait(3, WAIT);
    std::thread::sleep(QUIET);
    assert_eq!(
        probe.items(),
        vec![0, 1, 0],
        "the third came from the second try"
    );
    assert_no_violations(&probe, "a rule broken");
    probe.request(1);
    let signals = probe.wait(4, WAIT);
    assert_eq!(signals.last(), Some(&Signal::Next(1)));
    probe.cancel();
}

#[test]
fn rule_3_6_a_cancelled_time_operator_sends_nothing_more_and_stops_its_source() {
    init();
    let (source, stopped) = then(vec![1, 2, 3, 4], End::Stall);
    let (probe, subscriber) = Probe::new();
    probe.request(1);
    source.buffer(2, ms(50)).subscribe(subscriber);
    probe.wait(1, WAIT);
    probe.cancel();
    probe.request(5); // after a cancel: changes nothing
    assert!(wait_for(&stopped), "the source saw the cancel");
    std::thread::sleep(QUIET);
    assert_eq!(probe.signals(), vec![Signal::Next(vec![1, 2])]);
    assert_no_violations(&probe, "a rule broken");
}
