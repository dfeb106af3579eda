//! Hot publishers and their backpressure strategies (H7): the rules for
//! every strategy, what each does with items a slow subscriber has not
//! asked for, and that late subscribers see only later items.

use std::time::Duration;

use may_patterns::reactive::{
    Backpressure, Error, Flux, Hot, Probe, Signal, Subscriber, Subscription,
};

use crate::{assert_no_violations, init, QUIET, WAIT};

const EVERY_STRATEGY: [Backpressure; 5] = [
    Backpressure::Buffer(64),
    Backpressure::Drop(64),
    Backpressure::Latest,
    Backpressure::Error(64),
    Backpressure::Unbounded,
];

fn items<T: Clone>(signals: &[Signal<T>]) -> Vec<T> {
    signals
        .iter()
        .filter_map(|s| match s {
            Signal::Next(item) => Some(item.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn rule_1_1_hot_never_more_on_next_than_requested_for_every_strategy() {
    init();
    for strategy in EVERY_STRATEGY {
        let hot = Hot::new();
        let (probe, subscriber) = Probe::new();
        hot.flux(strategy).subscribe(subscriber);
        probe.request(3);
        for i in 0..10u32 {
            hot.emit(i);
        }
        probe.wait(4, QUIET);
        let got = probe.next_count();
        if strategy == Backpressure::Latest {
            // Overwritten items may leave fewer than 3 to deliver.
            assert!((1..=3).contains(&got), "{strategy}: {got} items");
        } else {
            assert_eq!(got, 3, "{strategy}");
        }
        assert_no_violations(&probe, &strategy.to_string());
    }
}

#[test]
fn rule_1_7_hot_no_signal_after_complete_for_every_strategy() {
    init();
    for strategy in EVERY_STRATEGY {
        let hot = Hot::new();
        let (probe, subscriber) = Probe::new();
        hot.flux(strategy).subscribe(subscriber);
        probe.request(u64::MAX);
        hot.emit(1u32);
        hot.complete();
        hot.emit(2);
        hot.error(Error::failed("after the end"));
        let signals = probe.wait_terminal(WAIT);
        probe.wait(10, QUIET);
        assert_eq!(
            signals,
            vec![Signal::Next(1), Signal::Complete],
            "{strategy}"
        );
        assert_eq!(
            probe.signals(),
            signals,
            "{strategy}: a signal after complete"
        );
        assert_no_violations(&probe, &strategy.to_string());
    }
}

#[test]
fn rule_1_7_an_overflow_ends_that_subscriber_only() {
    init();
    let hot = Hot::new();
    let (strict, strict_sub) = Probe::new();
    let (patient, patient_sub) = Probe::new();
    hot.flux(Backpressure::Error(2)).subscribe(strict_sub);
    hot.flux(Backpressure::Unbounded).subscribe(patient_sub);
    patient.request(u64::MAX);
    for i in 0..5u32 {
        hot.emit(i); // the strict one asked for nothing: 2 fit, the 3rd fails it
    }
    let signals = strict.wait_terminal(WAIT);
    assert_eq!(
        signals,
        vec![Signal::Error(Error::Overflow { capacity: 2 })]
    );
    strict.request(10); // too late: nothing more comes
    hot.emit(5);
    hot.complete();
    assert_eq!(items(&patient.wait_terminal(WAIT)), vec![0, 1, 2, 3, 4, 5]);
    strict.wait(1, QUIET);
    assert_eq!(strict.signals(), signals, "a signal after the overflow");
    let stats = hot.stats();
    assert_eq!(stats.of(Backpressure::Error(2)).unwrap().overflowed, 1);
    assert_no_violations(&strict, "a rule broken");
}

#[test]
fn rule_3_6_hot_no_signal_after_cancel_for_every_strategy() {
    init();
    for strategy in EVERY_STRATEGY {
        let hot = Hot::new();
        let (probe, subscriber) = Probe::new();
        hot.flux(strategy).subscribe(subscriber);
        probe.request(u64::MAX);
        hot.emit(1u32);
        probe.wait(1, WAIT);
        probe.cancel();
        hot.emit(2);
        hot.complete();
        probe.wait(2, QUIET);
        assert_eq!(probe.signals(), vec![Signal::Next(1)], "{strategy}");
    }
}

#[test]
fn rule_3_9_hot_request_zero_is_an_error() {
    init();
    let hot = Hot::<u32>::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Buffer(4)).subscribe(subscriber);
    probe.request(0);
    assert_eq!(
        probe.wait_terminal(WAIT),
        vec![Signal::Error(Error::NonPositiveRequest)]
    );
}

#[test]
fn late_subscribers_see_only_later_items() {
    init();
    let hot = Hot::new();
    hot.emit(1u32);
    hot.emit(2);
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Unbounded).subscribe(subscriber);
    probe.request(u64::MAX);
    hot.emit(3);
    hot.complete();
    assert_eq!(
        probe.wait_terminal(WAIT),
        vec![Signal::Next(3), Signal::Complete]
    );
    // After the end, a subscriber gets the end at once.
    let (late, late_sub) = Probe::<u32>::new();
    hot.flux(Backpressure::Latest).subscribe(late_sub);
    assert_eq!(late.wait_terminal(WAIT), vec![Signal::Complete]);
}

#[test]
fn an_operator_subscribes_from_its_own_coroutine_and_can_be_waited_for() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Buffer(4))
        .flat_map(1, |n: u32| Flux::range(u64::from(n), 1))
        .subscribe(subscriber);
    probe.request(u64::MAX);
    assert!(
        hot.wait_for_subscribers(1, WAIT),
        "flat_map never subscribed"
    );
    assert_eq!(hot.subscribers(), 1);
    hot.emit(7);
    hot.complete();
    assert_eq!(
        probe.wait_terminal(WAIT),
        vec![Signal::Next(7), Signal::Complete]
    );
    assert!(
        !Hot::<u32>::new().wait_for_subscribers(1, QUIET),
        "nobody subscribed"
    );
}

#[test]
fn buffer_makes_the_emitter_wait_for_the_slow_subscriber() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Buffer(2)).subscribe(subscriber);
    let (done_tx, done) = may::sync::mpsc::channel();
    let emitter = hot.clone();
    let handle = may::go!(move || {
        for i in 0..5u32 {
            emitter.emit(i);
            let _ = done_tx.send(i);
        }
    });
    // Two fit; the third emit waits for room.
    assert_eq!(done.recv(), Ok(0));
    assert_eq!(done.recv(), Ok(1));
    alarm_wait(QUIET);
    assert!(done.try_recv().is_err(), "an emit did not wait for room");
    probe.request(u64::MAX);
    handle.join().unwrap();
    hot.complete();
    assert_eq!(items(&probe.wait_terminal(WAIT)), vec![0, 1, 2, 3, 4]);
    let stats = hot.stats();
    let buffer = stats.of(Backpressure::Buffer(2)).unwrap();
    assert_eq!((buffer.high_water, buffer.dropped), (2, 0));
}

#[test]
fn a_cancelled_buffer_subscriber_does_not_hold_the_emitter() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Buffer(1)).subscribe(subscriber);
    let (done_tx, done) = may::sync::mpsc::channel();
    let emitter = hot.clone();
    may::go!(move || {
        for i in 0..3u32 {
            emitter.emit(i);
        }
        let _ = done_tx.send(());
    });
    alarm_wait(QUIET);
    assert!(
        done.try_recv().is_err(),
        "the full buffer did not hold the emitter"
    );
    probe.cancel();
    assert_eq!(
        done.recv(),
        Ok(()),
        "the emitter stayed parked after the cancel"
    );
}

/// A subscriber whose `on_next` panics.
struct Panics;

impl Subscriber<u32> for Panics {
    fn on_subscribe(&mut self, subscription: Subscription) {
        subscription.request(u64::MAX);
    }
    fn on_next(&mut self, _item: u32) {
        panic!("a subscriber's bug");
    }
    fn on_error(&mut self, _error: Error) {}
    fn on_complete(&mut self) {}
}

#[test]
fn a_subscriber_that_panics_does_not_hold_the_emitter() {
    init();
    let hot = Hot::new();
    hot.flux(Backpressure::Buffer(1)).subscribe(Panics);
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Buffer(1)).subscribe(subscriber);
    probe.request(u64::MAX);
    let (done_tx, done) = may::sync::mpsc::channel();
    let emitter = hot.clone();
    may::go!(move || {
        for i in 0..5u32 {
            emitter.emit(i);
        }
        let _ = done_tx.send(());
    });
    assert_eq!(
        done.recv(),
        Ok(()),
        "the emitter stayed parked on a dead lane"
    );
    hot.complete();
    assert_eq!(items(&probe.wait_terminal(WAIT)), vec![0, 1, 2, 3, 4]);
}

#[test]
fn drop_keeps_the_oldest_and_counts_the_rest() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Drop(3)).subscribe(subscriber);
    for i in 0..10u32 {
        hot.emit(i);
    }
    probe.request(u64::MAX);
    hot.complete();
    assert_eq!(items(&probe.wait_terminal(WAIT)), vec![0, 1, 2]);
    let stats = hot.stats();
    let drop = stats.of(Backpressure::Drop(3)).unwrap();
    assert_eq!((drop.dropped, drop.high_water, drop.delivered), (7, 3, 3));
}

#[test]
fn latest_keeps_the_newest_and_counts_the_overwritten() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Latest).subscribe(subscriber);
    for i in 0..10u32 {
        hot.emit(i);
    }
    probe.request(u64::MAX);
    hot.complete();
    assert_eq!(items(&probe.wait_terminal(WAIT)), vec![9]);
    let stats = hot.stats();
    let latest = stats.of(Backpressure::Latest).unwrap();
    assert_eq!((latest.dropped, latest.high_water), (9, 1));
}

#[test]
fn unbounded_holds_everything_a_slow_subscriber_has_not_taken() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Unbounded).subscribe(subscriber);
    for i in 0..1000u32 {
        hot.emit(i);
    }
    assert_eq!(
        hot.stats().of(Backpressure::Unbounded).unwrap().high_water,
        1000
    );
    probe.cancel();
}

#[test]
fn a_zero_capacity_is_an_error_not_a_hang() {
    init();
    for strategy in [
        Backpressure::Buffer(0),
        Backpressure::Drop(0),
        Backpressure::Error(0),
    ] {
        let hot = Hot::<u32>::new();
        let (probe, subscriber) = Probe::new();
        hot.flux(strategy).subscribe(subscriber);
        let signals = probe.wait_terminal(WAIT);
        let expected = format!("{strategy}: a subscriber's buffer needs room for at least 1 item");
        assert_eq!(signals, vec![Signal::Error(Error::failed(expected))]);
    }
}

#[test]
fn emitters_on_os_threads_and_coroutines_reach_every_subscriber() {
    init();
    let hot = Hot::new();
    let (probe, subscriber) = Probe::new();
    hot.flux(Backpressure::Buffer(8)).subscribe(subscriber);
    probe.request(u64::MAX);
    let on_thread = hot.clone();
    let thread = std::thread::spawn(move || (0..100u32).for_each(|i| on_thread.emit(i)));
    let on_coroutine = hot.clone();
    let coroutine = may::go!(move || (100..200u32).for_each(|i| on_coroutine.emit(i)));
    thread.join().unwrap();
    coroutine.join().unwrap();
    hot.complete();
    let mut got = items(&probe.wait_terminal(WAIT));
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<u32>>());
    assert_no_violations(&probe, "a rule broken");
}

/// Watch for `d` without a may timer (a quiet period, not a sync point).
fn alarm_wait(d: Duration) {
    may_patterns::alarm::shared().sleep(d);
}
