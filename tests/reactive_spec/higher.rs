//! flat_map, switch_map and from_call (H7): the rules, the concurrency limit
//! and the cancel of a stale inner call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may_patterns::alarm;
use may_patterns::reactive::{Backpressure, Cancelled, Error, Flux, Hot, Probe, Signal};

use crate::{assert_no_violations, init, QUIET, WAIT};

fn items<T: Clone>(signals: &[Signal<T>]) -> Vec<T> {
    signals
        .iter()
        .filter_map(|s| match s {
            Signal::Next(item) => Some(item.clone()),
            _ => None,
        })
        .collect()
}

/// A call that counts itself in `active` while it runs (keeping the most
/// seen in `most`), waits 20 ms on the alarm, and answers `n`.
fn counted_call(n: u64, active: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Flux<u64> {
    Flux::from_call(move |_: &Cancelled| {
        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        alarm::shared().sleep(Duration::from_millis(20));
        active.fetch_sub(1, Ordering::SeqCst);
        Ok(n)
    })
}

#[test]
fn rule_1_1_flat_map_never_more_on_next_than_requested() {
    init();
    let flux = Flux::range(0, 10).flat_map(3, |i| Flux::range(i * 100, 5));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(7);
    assert_eq!(items(&probe.wait(7, WAIT)).len(), 7);
    probe.wait(8, QUIET);
    assert_eq!(probe.next_count(), 7, "more than requested");
    probe.request(u64::MAX);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    let mut got = items(&signals);
    got.sort_unstable();
    let want: Vec<u64> = (0..10).flat_map(|i| i * 100..i * 100 + 5).collect();
    assert_eq!(got, want);
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn flat_map_runs_at_most_limit_inner_streams_at_once() {
    init();
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (a, m) = (active.clone(), most.clone());
    let flux = Flux::range(0, 20).flat_map(3, move |n| counted_call(n, a.clone(), m.clone()));
    let mut got = flux.collect_vec().expect("every call answers");
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<u64>>());
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 3, "{most} calls ran at once with a limit of 3");
    assert!(
        most >= 2,
        "the calls never overlapped: flat_map ran them one by one"
    );
}

#[test]
fn flat_map_holds_nothing_beyond_one_item_per_inner_without_demand() {
    init();
    // Each inner stream could give 1000 items; with no demand downstream
    // the operator asks each of its 2 inners for one item only.
    let asked = Arc::new(AtomicU64::new(0));
    let counter = asked.clone();
    let flux = Flux::range(0, 5).flat_map(2, move |_| {
        let counter = counter.clone();
        Flux::from_iter(move || {
            let counter = counter.clone();
            (0..1000u64).inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
        })
    });
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(1);
    probe.wait(1, WAIT);
    probe.wait(2, QUIET);
    // A source fetches its next item before it waits for demand, so each
    // inner has drawn at most the items it emitted plus one.
    let drawn = asked.load(Ordering::SeqCst);
    assert!(drawn <= 6, "{drawn} items drawn for 1 requested");
    probe.cancel();
}

#[test]
fn rule_1_7_flat_map_an_inner_error_ends_the_stream_once() {
    init();
    let flux = Flux::range(0, 10).flat_map(2, |i| {
        if i == 3 {
            Flux::error(Error::failed("inner 3 failed"))
        } else {
            Flux::range(i, 1)
        }
    });
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(u64::MAX);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(
        signals.last(),
        Some(&Signal::Error(Error::failed("inner 3 failed")))
    );
    probe.wait(100, QUIET);
    assert_eq!(
        probe.signals().len(),
        signals.len(),
        "a signal after the error"
    );
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn rule_3_9_flat_map_request_zero_is_an_error() {
    init();
    let flux = Flux::range(0, 3).flat_map(2, |i| Flux::range(i, 2));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(0);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Error(Error::NonPositiveRequest)]);
}

#[test]
fn flat_map_with_a_zero_limit_is_an_error_not_a_hang() {
    init();
    let flux = Flux::range(0, 3).flat_map(0, |i| Flux::range(i, 2));
    let error = flux.collect_vec().expect_err("a zero limit");
    assert_eq!(error, Error::failed("flat_map needs a limit of at least 1"));
}

/// A call that works in 1 ms steps until cancelled or `steps` are done,
/// counting each step in `work`; it says on `said` when it has done 3 steps
/// ("working") and how it ended.
fn slow_call(
    answer: &'static str,
    steps: u64,
    work: Arc<AtomicU64>,
    said: may::sync::mpsc::Sender<&'static str>,
) -> Flux<&'static str> {
    Flux::from_call(move |cancelled: &Cancelled| {
        for step in 0..steps {
            if step == 3 {
                let _ = said.send("working");
            }
            if cancelled.is_cancelled() {
                let _ = said.send("cancelled");
                return Err(Error::failed("cancelled"));
            }
            work.fetch_add(1, Ordering::SeqCst);
            alarm::shared().sleep(Duration::from_millis(1));
        }
        let _ = said.send("finished");
        Ok(answer)
    })
}

#[test]
fn switch_map_cancels_the_stale_inner_call() {
    init();
    let queries = Hot::new();
    let slow_work = Arc::new(AtomicU64::new(0));
    let fast_work = Arc::new(AtomicU64::new(0));
    let (said_tx, said) = may::sync::mpsc::channel();
    let (slow, fast) = (slow_work.clone(), fast_work.clone());
    let flux = queries
        .flux(Backpressure::Buffer(4))
        .switch_map(move |query: u32| match query {
            1 => slow_call("slow", 10_000, slow.clone(), said_tx.clone()),
            _ => slow_call("fast", 1, fast.clone(), said_tx.clone()),
        });
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(u64::MAX);
    // switch_map subscribes to the hot queries from its own coroutine.
    assert!(queries.wait_for_subscribers(1, WAIT));
    queries.emit(1);
    // Let the slow call do some work, then switch.
    assert_eq!(said.recv(), Ok("working"));
    queries.emit(2);
    let mut endings = vec![said.recv().unwrap(), said.recv().unwrap()];
    endings.sort_unstable();
    assert_eq!(endings, ["cancelled", "finished"]);
    let stopped_at = slow_work.load(Ordering::SeqCst);
    assert!(stopped_at < 10_000, "the slow call ran to the end");
    queries.complete();
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Next("fast"), Signal::Complete]);
    // The stale call really stopped: its work counter no longer moves.
    alarm::shared().sleep(QUIET);
    assert_eq!(slow_work.load(Ordering::SeqCst), stopped_at);
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn switch_map_completes_after_the_outer_and_the_last_inner() {
    init();
    let flux = Flux::range(0, 3).switch_map(|i| Flux::range(i * 10, 2));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(u64::MAX);
    let signals = probe.wait_terminal(WAIT);
    // Earlier inners may be switched away before they emit; the last one
    // runs to its end.
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert!(items(&signals).ends_with(&[20, 21]), "{signals:?}");
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn rule_1_1_switch_map_never_more_on_next_than_requested() {
    init();
    let queries = Hot::new();
    let flux = queries
        .flux(Backpressure::Buffer(4))
        .switch_map(|q: u64| Flux::range(q * 100, 10));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(3);
    assert!(queries.wait_for_subscribers(1, WAIT));
    queries.emit(1);
    assert_eq!(items(&probe.wait(3, WAIT)), vec![100, 101, 102]);
    probe.wait(4, QUIET);
    assert_eq!(probe.next_count(), 3, "more than requested");
    probe.cancel();
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn rule_3_6_switch_map_no_signal_after_cancel() {
    init();
    let queries = Hot::new();
    let work = Arc::new(AtomicU64::new(0));
    let (said_tx, said) = may::sync::mpsc::channel();
    let counter = work.clone();
    let flux = queries
        .flux(Backpressure::Buffer(4))
        .switch_map(move |_: u32| slow_call("late", 10_000, counter.clone(), said_tx.clone()));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(u64::MAX);
    // switch_map subscribes to the hot queries from its own coroutine.
    assert!(queries.wait_for_subscribers(1, WAIT));
    queries.emit(1);
    assert_eq!(said.recv(), Ok("working"));
    probe.cancel();
    // Cancelling downstream cancels the inner call in flight.
    assert_eq!(said.recv(), Ok("cancelled"));
    queries.emit(2);
    probe.wait(1, QUIET);
    assert!(probe.signals().is_empty(), "{:?}", probe.signals());
}

#[test]
fn from_call_calls_once_and_only_when_demand_arrives() {
    init();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let flux = Flux::from_call(move |_: &Cancelled| Ok(counter.fetch_add(1, Ordering::SeqCst)));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.wait(1, QUIET);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "called before any demand");
    probe.request(5);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Next(0), Signal::Complete]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn from_call_an_error_is_the_streams_error() {
    init();
    let flux: Flux<u8> = Flux::from_call(|_: &Cancelled| Err(Error::failed("backend down")));
    assert_eq!(flux.collect_vec(), Err(Error::failed("backend down")));
}

#[test]
fn rule_3_9_from_call_request_zero_is_an_error_and_nothing_is_called() {
    init();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let flux = Flux::from_call(move |_: &Cancelled| Ok(counter.fetch_add(1, Ordering::SeqCst)));
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(0);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Error(Error::NonPositiveRequest)]);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn from_call_cancel_fires_the_token_and_its_callbacks() {
    init();
    let (started_tx, started) = may::sync::mpsc::channel();
    let (hooked_tx, hooked) = may::sync::mpsc::channel();
    let flux = Flux::from_call(move |cancelled: &Cancelled| {
        let hooked_tx = hooked_tx.clone();
        // What a real call does with its socket: shut it from the hook.
        cancelled.on_cancel(move || {
            let _ = hooked_tx.send("socket shut");
        });
        let _ = started_tx.send(());
        while !cancelled.is_cancelled() {
            alarm::shared().sleep(Duration::from_millis(1));
        }
        Ok("too late")
    });
    let (probe, subscriber) = Probe::new();
    flux.subscribe(subscriber);
    probe.request(1);
    started.recv().unwrap();
    probe.cancel();
    assert_eq!(hooked.recv(), Ok("socket shut"));
    probe.wait(1, QUIET);
    assert!(
        probe.signals().is_empty(),
        "a signal after cancel: {:?}",
        probe.signals()
    );
}

#[test]
fn a_callback_registered_after_the_cancel_runs_at_once() {
    let token = Cancelled::new();
    token.cancel();
    token.cancel(); // idempotent
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    token.on_cancel(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    assert!(token.is_cancelled());
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
