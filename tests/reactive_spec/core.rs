//! The core: sources, `Demand`, the synchronous operators and the pull
//! bridge. Each `rule_` test checks one Reactive Streams rule; the
//! `checker_` tests show that the probe's checks can fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use may_patterns::reactive::{
    Error, Flux, Probe, Publisher, SerialCheck, Signal, Subscriber, Subscription,
};

use crate::{init, QUIET, WAIT};

/// A probe subscribed to `flux`.
fn probe<T: Send + 'static>(flux: &Flux<T>) -> Probe<T> {
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe
}

fn assert_clean<T: Send + 'static>(probe: &Probe<T>) {
    assert_eq!(probe.violations(), Vec::<String>::new());
}

/// A source that never ends by itself.
fn endless() -> Flux<u64> {
    Flux::from_iter(|| 0u64..)
}

#[test]
fn rule_1_1_never_more_on_next_than_requested() {
    init();
    let numbers = probe(&Flux::range(0, 100));
    numbers.request(3);
    assert_eq!(numbers.wait(3, WAIT).len(), 3);
    // A fourth would be a breach: watch for it a while.
    assert_eq!(numbers.wait(4, QUIET).len(), 3);
    numbers.request(2);
    numbers.wait(5, WAIT);
    assert_eq!(numbers.wait(6, QUIET).len(), 5);
    assert_eq!(numbers.items(), vec![0, 1, 2, 3, 4]);
    assert_clean(&numbers);

    // Through operators: filter re-requests what it drops, so the subscriber
    // still gets exactly what it asked for.
    let odd = probe(&Flux::range(0, 100).filter(|n| n % 2 == 1).map(|n| n * 10));
    odd.request(4);
    odd.wait(4, WAIT);
    assert_eq!(odd.wait(5, QUIET).len(), 4);
    assert_eq!(odd.items(), vec![10, 30, 50, 70]);
    assert_clean(&odd);
}

#[test]
fn rule_1_2_fewer_items_than_requested_then_complete() {
    init();
    let three = probe(&Flux::range(0, 3));
    three.request(10);
    let signals = three.wait_terminal(WAIT);
    assert_eq!(
        signals,
        vec![
            Signal::Next(0),
            Signal::Next(1),
            Signal::Next(2),
            Signal::Complete
        ]
    );
    assert_clean(&three);
}

/// Spins in every callback, so that two callbacks running at once overlap.
struct Busy {
    check: SerialCheck,
    done: mpsc::Sender<()>,
}

fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

impl Subscriber<u64> for Busy {
    fn on_subscribe(&mut self, subscription: Subscription) {
        let _running = self.check.enter();
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, _: u64) {
        let _running = self.check.enter();
        spin(Duration::from_micros(20));
    }
    fn on_error(&mut self, _: Error) {
        let _running = self.check.enter();
        let _ = self.done.send(());
    }
    fn on_complete(&mut self) {
        let _running = self.check.enter();
        let _ = self.done.send(());
    }
}

#[test]
fn checker_the_serial_check_sees_overlapping_callbacks() {
    init();
    // Two independent streams run on two coroutines; checked as one
    // subscriber, their callbacks overlap. If they never did, the check
    // could not catch a publisher that breaks rule 1.3.
    let check = SerialCheck::new();
    let deadline = Instant::now() + WAIT;
    while check.overlaps() == 0 && Instant::now() < deadline {
        let (done, finished) = mpsc::channel();
        for _ in 0..2 {
            Flux::range(0, 2000).subscribe(Busy {
                check: check.clone(),
                done: done.clone(),
            });
        }
        for _ in 0..2 {
            finished.recv_timeout(WAIT).expect("both streams end");
        }
    }
    assert!(
        check.overlaps() > 0,
        "two streams on two workers overlapped"
    );
}

#[test]
fn rule_1_3_signals_are_serial() {
    init();
    // Demand arrives from the test's thread, one unit at a time, while the
    // source's coroutine emits: the signals must still come one at a time,
    // in order.
    let count = 20_000;
    let numbers = probe(&Flux::range(0, count).map(|n| n + 1));
    for _ in 0..count {
        numbers.request(1);
    }
    let signals = numbers.wait_terminal(WAIT);
    assert_eq!(signals.len() as u64, count + 1);
    assert_eq!(numbers.items(), (1..=count).collect::<Vec<_>>());
    assert_clean(&numbers);
}

#[test]
fn rule_1_4_a_failing_source_signals_on_error() {
    init();
    // No request needed for an error (the subscriber side of it: rule 2.10).
    let failing = probe(&Flux::<u64>::error(Error::failed("disk on fire")));
    assert_eq!(
        failing.wait_terminal(WAIT),
        vec![Signal::Error(Error::failed("disk on fire"))]
    );
    assert_clean(&failing);
}

#[test]
fn rule_1_5_a_finite_source_signals_on_complete() {
    init();
    // No request needed to complete (rule 2.9).
    let nothing = probe(&Flux::<u64>::empty());
    assert_eq!(nothing.wait_terminal(WAIT), vec![Signal::Complete]);
    // The last item is followed by on_complete without asking for more.
    let two = probe(&Flux::range(7, 2));
    two.request(2);
    assert_eq!(two.wait_terminal(WAIT).last(), Some(&Signal::Complete));
    assert_clean(&nothing);
    assert_clean(&two);
}

#[test]
fn rule_1_6_a_finished_stream_ignores_requests() {
    init();
    // After on_complete the subscription counts as cancelled: more demand,
    // even an invalid one, changes nothing.
    let two = probe(&Flux::range(0, 2));
    two.request(5);
    two.wait_terminal(WAIT);
    two.request(5);
    two.request(0);
    assert!(two.wait_dropped(WAIT), "the source ended");
    assert_eq!(
        two.signals(),
        vec![Signal::Next(0), Signal::Next(1), Signal::Complete]
    );
    assert_clean(&two);
}

#[test]
fn rule_1_7_nothing_after_a_terminal_signal() {
    init();
    // take completes early and cancels its upstream; nothing may follow.
    let first = probe(&Flux::range(0, 1000).take(3));
    first.request(u64::MAX);
    first.wait_terminal(WAIT);
    assert!(first.wait_dropped(WAIT), "the source let go of the chain");
    assert_eq!(
        first.signals(),
        vec![
            Signal::Next(0),
            Signal::Next(1),
            Signal::Next(2),
            Signal::Complete
        ]
    );
    assert_clean(&first);
}

#[test]
fn rule_1_8_and_3_12_a_cancelled_stream_stops() {
    init();
    let numbers = probe(&endless());
    numbers.request(u64::MAX);
    numbers.wait(1000, WAIT);
    numbers.cancel();
    // Items already on their way may arrive (rule 2.8), then none.
    assert!(numbers.wait_dropped(WAIT), "the source stopped");
    let seen = numbers.next_count();
    assert_eq!(numbers.wait(seen + 1, QUIET).len() as u64, seen);
    assert!(!numbers.is_terminated(), "cancel is not a completion");
    assert_clean(&numbers);
}

#[test]
fn rule_1_9_on_subscribe_comes_first_and_once() {
    init();
    // The probe flags any signal before on_subscribe and a second
    // on_subscribe; each kind of source must pass.
    let sources = [
        Flux::range(0, 3),
        Flux::empty(),
        Flux::error(Error::failed("no")),
        Flux::range(0, 3).map(|n| n * 2).take(2),
    ];
    for source in &sources {
        let stream = probe(source);
        stream.request(5);
        stream.wait_terminal(WAIT);
        assert!(stream.is_terminated());
        assert_clean(&stream);
    }
}

#[test]
fn rule_1_10_each_subscribe_starts_a_stream_of_its_own() {
    init();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let flux = Flux::from_iter(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        0..3u64
    });
    let (a, b) = (probe(&flux), probe(&flux));
    a.request(1);
    b.request(3);
    a.wait(1, WAIT);
    b.wait_terminal(WAIT);
    assert_eq!(a.items(), vec![0]);
    assert_eq!(b.items(), vec![0, 1, 2]);
    assert_eq!(calls.load(Ordering::Relaxed), 2, "the recipe ran once each");
}

/// Requests one more from inside every on_next and records where on the
/// stack each on_next ran.
struct Deep {
    subscription: Option<Subscription>,
    frames: Arc<Mutex<Vec<usize>>>,
    done: mpsc::Sender<u64>,
    seen: u64,
}

impl Subscriber<u64> for Deep {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(1);
        self.subscription = Some(subscription);
    }
    fn on_next(&mut self, _: u64) {
        let marker = 0u8;
        let frame = std::hint::black_box(&marker) as *const u8 as usize;
        self.frames.lock().unwrap().push(frame);
        self.seen += 1;
        self.subscription.as_ref().unwrap().request(1);
    }
    fn on_error(&mut self, _: Error) {}
    fn on_complete(&mut self) {
        let _ = self.done.send(self.seen);
    }
}

#[test]
fn rule_3_3_request_inside_on_next_does_not_recurse() {
    init();
    // If request called on_next from inside itself, each on_next would run
    // deeper on the stack than the one before (and 10,000 of them would
    // overflow a 32 KiB coroutine stack).
    let frames = Arc::new(Mutex::new(Vec::new()));
    let (done, finished) = mpsc::channel();
    Flux::range(0, 10_000).filter(|_| true).subscribe(Deep {
        subscription: None,
        frames: frames.clone(),
        done,
        seen: 0,
    });
    assert_eq!(finished.recv_timeout(WAIT), Ok(10_000));
    let frames = frames.lock().unwrap();
    let (low, high) = (frames.iter().min().unwrap(), frames.iter().max().unwrap());
    assert!(high - low < 256, "on_next ran {} bytes deeper", high - low);
}

#[test]
fn rule_3_5_and_3_7_cancel_is_idempotent_and_thread_safe() {
    init();
    let numbers = probe(&endless());
    numbers.request(10);
    numbers.wait(10, WAIT);
    let subscription = numbers.subscription().expect("subscribed");
    let started = Instant::now();
    // Four threads and the probe cancel, again and again, at once.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let subscription = subscription.clone();
            thread::spawn(move || (0..100).for_each(|_| subscription.cancel()))
        })
        .collect();
    numbers.cancel();
    numbers.cancel();
    for thread in threads {
        thread.join().expect("cancel returns normally (3.15)");
    }
    assert!(
        started.elapsed() < WAIT,
        "cancel returned in good time (3.5)"
    );
    assert!(numbers.wait_dropped(WAIT));
    assert_eq!(numbers.next_count(), 10);
    assert!(!numbers.is_terminated());
    assert_clean(&numbers);
}

#[test]
fn rule_3_6_request_after_cancel_is_a_no_op() {
    init();
    let numbers = probe(&Flux::range(0, 100));
    numbers.request(2);
    numbers.wait(2, WAIT);
    numbers.cancel();
    numbers.request(5);
    numbers.request(0); // not even the invalid request is reported
    assert!(numbers.wait_dropped(WAIT), "the source ended");
    assert_eq!(numbers.signals(), vec![Signal::Next(0), Signal::Next(1)]);
    assert_clean(&numbers);
}

#[test]
fn rule_3_9_request_zero_is_an_error() {
    init();
    let at_once = probe(&Flux::range(0, 10));
    at_once.request(0);
    assert_eq!(
        at_once.wait_terminal(WAIT),
        vec![Signal::Error(Error::NonPositiveRequest)]
    );
    // After some items, and through operators: the error ends the stream
    // where it stands.
    let later = probe(&Flux::range(0, 10).map(|n| n + 1).take(5));
    later.request(2);
    later.wait(2, WAIT);
    later.request(0);
    assert_eq!(
        later.wait_terminal(WAIT),
        vec![
            Signal::Next(1),
            Signal::Next(2),
            Signal::Error(Error::NonPositiveRequest)
        ]
    );
    assert!(later.wait_dropped(WAIT));
    assert_clean(&at_once);
    assert_clean(&later);
}

#[test]
fn rule_3_13_cancel_drops_the_subscriber() {
    init();
    // The source is parked, waiting for demand that will not come: cancel
    // must wake it so it lets go of the subscriber (and its operators).
    let numbers = probe(&endless().map(|n| n * 2).filter(|n| n % 3 == 0));
    numbers.request(3);
    numbers.wait(3, WAIT);
    assert!(!numbers.wait_dropped(QUIET), "still subscribed");
    numbers.cancel();
    assert!(numbers.wait_dropped(WAIT), "the source dropped the chain");
    assert_clean(&numbers);
}

#[test]
fn rule_3_17_demand_up_to_u64_max() {
    init();
    // Two unbounded requests saturate instead of overflowing.
    let all = probe(&Flux::range(0, 5000));
    all.request(u64::MAX);
    all.request(u64::MAX);
    all.request(1);
    let signals = all.wait_terminal(WAIT);
    assert_eq!(signals.len(), 5001);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    // Demand just below the limit counts down like any other.
    let big = probe(&Flux::range(0, 3));
    big.request(u64::MAX - 1);
    assert_eq!(big.wait_terminal(WAIT).len(), 4);
    assert_clean(&all);
    assert_clean(&big);
}

/// A publisher that breaks one rule on purpose, to show the probe notices.
#[derive(Clone, Copy)]
enum Rogue {
    IgnoresDemand,
    CompletesTwice,
    SignalsBeforeSubscribe,
}

impl Publisher<u64> for Rogue {
    fn subscribe(&self, mut subscriber: Box<dyn Subscriber<u64>>) {
        let (subscription, _demand) = may_patterns::reactive::Demand::new();
        match self {
            Rogue::IgnoresDemand => {
                subscriber.on_subscribe(subscription);
                (0..3).for_each(|n| subscriber.on_next(n));
            }
            Rogue::CompletesTwice => {
                subscriber.on_subscribe(subscription);
                subscriber.on_complete();
                subscriber.on_complete();
            }
            Rogue::SignalsBeforeSubscribe => {
                subscriber.on_next(1);
                subscriber.on_subscribe(subscription);
            }
        }
    }
}

#[test]
fn checker_the_probe_flags_broken_publishers() {
    init();
    let cases = [
        (Rogue::IgnoresDemand, "1.1"),
        (Rogue::CompletesTwice, "1.7"),
        (Rogue::SignalsBeforeSubscribe, "1.9"),
    ];
    for (rogue, rule) in cases {
        let seen = probe(&Flux::new(rogue));
        let violations = seen.violations();
        assert!(
            violations.iter().any(|v| v.starts_with(rule)),
            "{rule} not flagged: {violations:?}"
        );
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
may::coroutine_local!(static TOKEN: u64 = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed));

/// Where a callback ran: on a coroutine or not, and which one.
fn here() -> (bool, u64) {
    (may::coroutine::is_coroutine(), TOKEN.with(|token| *token))
}

/// Records [`here`] in every callback.
struct Where {
    places: mpsc::Sender<(bool, u64)>,
}

impl Subscriber<u64> for Where {
    fn on_subscribe(&mut self, subscription: Subscription) {
        self.places.send(here()).unwrap();
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, _: u64) {
        self.places.send(here()).unwrap();
    }
    fn on_error(&mut self, _: Error) {
        self.places.send(here()).unwrap();
    }
    fn on_complete(&mut self) {
        self.places.send(here()).unwrap();
    }
}

#[test]
fn signals_run_on_the_sources_coroutine() {
    init();
    // Every callback of one subscription, and the operators' functions, run
    // on one coroutine: the source's. A second subscription gets its own.
    let run = |places: &mpsc::Sender<(bool, u64)>| {
        let from_map = places.clone();
        Flux::range(0, 5)
            .map(move |n| {
                from_map.send(here()).unwrap();
                n
            })
            .subscribe(Where {
                places: places.clone(),
            });
    };
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (places, seen) = mpsc::channel();
        run(&places);
        drop(places);
        let seen: Vec<_> = (0..12)
            .map(|_| seen.recv_timeout(WAIT).expect("a callback ran"))
            .collect();
        assert!(
            seen.iter().all(|(on_coroutine, _)| *on_coroutine),
            "{seen:?}"
        );
        assert!(
            seen.iter().all(|(_, token)| *token == seen[0].1),
            "{seen:?}"
        );
        tokens.push(seen[0].1);
    }
    assert_ne!(tokens[0], tokens[1], "one coroutine per subscription");
    assert!(!here().0, "the test's thread is not a coroutine");
}

/// An operator that records every request passing upstream through it.
fn record<T: Send + 'static>(flux: Flux<T>, log: Arc<Mutex<Vec<u64>>>) -> Flux<T> {
    struct Logged {
        upstream: Subscription,
        log: Arc<Mutex<Vec<u64>>>,
    }
    impl may_patterns::reactive::Control for Logged {
        fn request(&self, n: u64) {
            self.log.lock().unwrap().push(n);
            self.upstream.request(n)
        }
        fn cancel(&self) {
            self.upstream.cancel()
        }
    }
    struct Tap<T> {
        down: Box<dyn Subscriber<T>>,
        log: Arc<Mutex<Vec<u64>>>,
    }
    impl<T: Send + 'static> Subscriber<T> for Tap<T> {
        fn on_subscribe(&mut self, upstream: Subscription) {
            let log = self.log.clone();
            self.down
                .on_subscribe(Subscription::new(Logged { upstream, log }))
        }
        fn on_next(&mut self, item: T) {
            self.down.on_next(item)
        }
        fn on_error(&mut self, error: Error) {
            self.down.on_error(error)
        }
        fn on_complete(&mut self) {
            self.down.on_complete()
        }
    }
    flux.lift(move |down| {
        Box::new(Tap {
            down,
            log: log.clone(),
        })
    })
}

#[test]
fn filter_asks_for_one_more_per_dropped_item() {
    init();
    let log = Arc::new(Mutex::new(Vec::new()));
    let even = probe(&record(Flux::range(0, 10), log.clone()).filter(|n| n % 2 == 0));
    even.request(2);
    even.wait(2, WAIT);
    assert_eq!(even.wait(3, QUIET).len(), 2);
    assert_eq!(even.items(), vec![0, 2]);
    assert_eq!(
        *log.lock().unwrap(),
        vec![2, 1],
        "one more for the dropped 1"
    );
}

#[test]
fn take_never_asks_upstream_for_more_than_n() {
    init();
    let log = Arc::new(Mutex::new(Vec::new()));
    let three = probe(&record(Flux::range(0, 100), log.clone()).take(3));
    three.request(2);
    three.request(u64::MAX);
    assert_eq!(three.wait_terminal(WAIT).len(), 4);
    assert_eq!(*log.lock().unwrap(), vec![2, 1]);
    // take(0) completes at once and cancels the source.
    let none = probe(&endless().take(0));
    assert_eq!(none.wait_terminal(WAIT), vec![Signal::Complete]);
    assert!(none.wait_dropped(WAIT));
}

#[test]
fn scan_and_distinct_until_changed() {
    init();
    let sums = Flux::range(1, 4).scan(0, |total, n| total + n);
    assert_eq!(sums.collect_vec(), Ok(vec![1, 3, 6, 10]));
    let words = Flux::from_iter(|| ["a", "a", "b", "b", "b", "a", "c", "c"]);
    assert_eq!(
        words.distinct_until_changed().collect_vec(),
        Ok(vec!["a", "b", "a", "c"])
    );
}

#[test]
fn iter_keeps_at_most_prefetch_requested_and_refills_at_half() {
    init();
    let log = Arc::new(Mutex::new(Vec::new()));
    let numbers = record(Flux::range(0, 10), log.clone());
    let mut iter = numbers.iter(4);
    assert_eq!(iter.next(), Some(Ok(0)));
    assert_eq!(iter.next(), Some(Ok(1)));
    let all: Result<Vec<_>, _> = iter.collect();
    assert_eq!(all, Ok((2..10).collect::<Vec<_>>()));
    // 4 at first, then 2 each time 2 were consumed: never more than 4 ahead.
    assert_eq!(*log.lock().unwrap(), vec![4, 2, 2, 2, 2, 2]);
}

#[test]
fn iter_zero_prefetch_is_the_request_zero_error() {
    init();
    let mut iter = Flux::range(0, 10).iter(0);
    assert_eq!(iter.next(), Some(Err(Error::NonPositiveRequest)));
    assert_eq!(iter.next(), None);
}

/// Counts up for ever; says so when the source drops it.
struct Guarded {
    next: u64,
    dropped: mpsc::Sender<()>,
}

impl Iterator for Guarded {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.next += 1;
        Some(self.next - 1)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.dropped.send(());
    }
}

#[test]
fn dropping_the_iterator_cancels_the_stream() {
    init();
    let (dropped, source_ended) = mpsc::channel();
    let dropped = Mutex::new(dropped);
    let endless = Flux::from_iter(move || Guarded {
        next: 0,
        dropped: dropped.lock().unwrap().clone(),
    });
    // After the subscription reached the iterator: Drop cancels it.
    let mut iter = endless.iter(8);
    assert_eq!(iter.next(), Some(Ok(0)));
    drop(iter);
    source_ended.recv_timeout(WAIT).expect("the source stopped");
    // Before it did: the feeding side finds the channel closed and cancels.
    drop(endless.iter(8));
    source_ended.recv_timeout(WAIT).expect("the source stopped");
}

#[test]
fn a_panicking_callback_ends_the_iterator_with_an_error() {
    init();
    // A panic is not a signal: it unwinds the source's coroutine and drops
    // the chain. The pull bridge reports it instead of waiting for ever.
    let broken = Flux::range(0, 10).map(|n| {
        assert!(n < 3, "the map function fails on {n}");
        n
    });
    let mut iter = broken.iter(16);
    assert_eq!(iter.next(), Some(Ok(0)));
    assert_eq!(iter.next(), Some(Ok(1)));
    assert_eq!(iter.next(), Some(Ok(2)));
    assert!(matches!(iter.next(), Some(Err(Error::Failed(_)))));
    assert_eq!(iter.next(), None);
}
