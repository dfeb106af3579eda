//! The combining operators (`merge`, `zip`, `combine_latest`): nothing lost,
//! nothing twice, one end, and no more than requested.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use may_patterns::reactive::{Error, Flux, Probe, Signal, PER_SOURCE};

use super::time::{all, counted, ms, then, wait_for, End};
use super::{assert_no_violations, init, QUIET, WAIT};

#[test]
fn merge_delivers_every_item_of_every_source_once() {
    init();
    const SOURCES: u64 = 4;
    const ITEMS: u64 = 500;
    let sources = (0..SOURCES)
        .map(|s| Flux::range(s * ITEMS, ITEMS))
        .collect();
    let (items, signals, violations) = all(&Flux::merge(sources));
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert_eq!(items.len() as u64, SOURCES * ITEMS, "none lost, none twice");
    let distinct: BTreeSet<u64> = items.iter().copied().collect();
    assert_eq!(distinct, (0..SOURCES * ITEMS).collect());
    for s in 0..SOURCES {
        let own: Vec<u64> = items.iter().copied().filter(|i| i / ITEMS == s).collect();
        assert!(
            own.windows(2).all(|w| w[0] < w[1]),
            "source {s} kept its order"
        );
    }
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn rule_1_1_merge_sends_no_more_than_requested_and_holds_a_bounded_backlog() {
    init();
    let (a, taken_a, _) = counted(10_000);
    let (b, taken_b, _) = counted(10_000);
    let (probe, subscriber) = Probe::new();
    probe.request(5);
    Flux::merge(vec![a, b]).subscribe(subscriber);
    probe.wait(5, WAIT);
    std::thread::sleep(QUIET);
    assert_eq!(probe.next_count(), 5);
    for taken in [&taken_a, &taken_b] {
        // Its credit, plus the one from_iter takes while it waits.
        let taken = taken.load(Ordering::SeqCst);
        assert!(taken <= 5 + PER_SOURCE as u64 + 1, "{taken} taken");
    }
    assert_no_violations(&probe, "a rule broken");
    probe.cancel();
}

#[test]
fn rule_1_7_merge_ends_once_when_two_sources_fail() {
    init();
    let (probe, subscriber) = Probe::new();
    probe.request(u64::MAX);
    let failing = |why: &str| Flux::<u64>::error(Error::failed(why.to_owned()));
    Flux::merge(vec![failing("one"), failing("two"), Flux::range(0, 3)]).subscribe(subscriber);
    probe.wait_terminal(WAIT);
    std::thread::sleep(QUIET);
    let signals = probe.signals();
    let ends = signals.iter().filter(|s| s.is_terminal()).count();
    assert_eq!(ends, 1, "{signals:?}");
    assert!(
        matches!(signals.last(), Some(Signal::Error(_))),
        "{signals:?}"
    );
    assert_no_violations(&probe, "a rule broken");
}

#[test]
fn rule_3_13_cancelling_a_merge_stops_every_source_and_lets_go_of_the_subscriber() {
    init();
    let (a, stopped_a) = then(vec![1, 2], End::Stall);
    let (b, stopped_b) = then(vec![3], End::Stall);
    let (probe, subscriber) = Probe::new();
    probe.request(3);
    Flux::merge(vec![a, b]).subscribe(subscriber);
    probe.wait(3, WAIT);
    probe.cancel();
    assert!(
        wait_for(&stopped_a) && wait_for(&stopped_b),
        "both sources saw the cancel"
    );
    assert!(probe.wait_dropped(WAIT));
    assert!(
        !probe.is_terminated(),
        "a cancelled stream gets no end (3.6)"
    );
}

#[test]
fn zip_pairs_in_order_and_completes_with_the_shorter_side() {
    init();
    let (long, taken, stopped) = counted(1_000_000);
    let (items, signals, violations) = all(&Flux::range(0, 5).zip(long));
    assert_eq!(items, (0..5).map(|i| (i, i)).collect::<Vec<_>>());
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert!(wait_for(&stopped), "the longer side was cancelled");
    let taken = taken.load(Ordering::SeqCst);
    assert!(
        taken <= 5 + 2 * PER_SOURCE as u64,
        "{taken} taken from the longer side"
    );
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn zip_waits_for_a_late_partner_of_a_side_that_completed() {
    init();
    let late = Flux::scripted(
        vec![(ms(0), 'a'), (ms(30), 'b'), (ms(60), 'c')],
        Some(ms(60)),
    );
    let (items, signals, _) = all(&Flux::range(0, 3).zip(late));
    assert_eq!(items, vec![(0, 'a'), (1, 'b'), (2, 'c')]);
    assert_eq!(signals.last(), Some(&Signal::Complete));
}

#[test]
fn rule_3_9_request_zero_on_zip_is_an_error() {
    init();
    let (probe, subscriber) = Probe::new();
    Flux::range(0, 3)
        .zip(Flux::range(0, 3))
        .subscribe(subscriber);
    probe.request(0);
    let signals = probe.wait_terminal(WAIT);
    assert_eq!(signals, vec![Signal::Error(Error::NonPositiveRequest)]);
}

#[test]
fn combine_latest_starts_once_both_sides_have_sent() {
    init();
    // 100 ms between any two events: a busy machine's delays do not reorder them.
    let prices = Flux::scripted(vec![(ms(0), 10), (ms(200), 12)], Some(ms(300)));
    let units = Flux::scripted(vec![(ms(100), "EUR"), (ms(300), "USD")], Some(ms(300)));
    let (items, signals, violations) = all(&prices.combine_latest(units));
    assert_eq!(items, vec![(10, "EUR"), (12, "EUR"), (12, "USD")]);
    assert_eq!(signals.last(), Some(&Signal::Complete));
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn combine_latest_completes_at_once_when_a_side_never_sent() {
    init();
    let (stalled, stopped) = then(vec![1], End::Stall);
    let (_, signals, _) = all(&Flux::<u64>::empty().combine_latest(stalled));
    assert_eq!(signals, vec![Signal::Complete]);
    assert!(wait_for(&stopped), "the other side was cancelled");
}

#[test]
fn rule_1_1_combine_latest_holds_pairs_for_a_slow_subscriber_and_then_stops_taking() {
    init();
    // Until both sides have sent, a side's items only replace its latest,
    // so it may run ahead; once pairs form, each waits for demand within
    // its side's credit, and the sides stop.
    let (a, taken_a, _) = counted(u64::MAX);
    let (b, taken_b, _) = counted(u64::MAX);
    let (probe, subscriber) = Probe::new();
    probe.request(3);
    a.combine_latest(b).subscribe(subscriber);
    probe.wait(3, WAIT);
    std::thread::sleep(QUIET);
    let taken = || taken_a.load(Ordering::SeqCst) + taken_b.load(Ordering::SeqCst);
    let before = taken();
    std::thread::sleep(QUIET);
    assert_eq!(taken(), before, "the sides kept running without demand");
    assert_eq!(probe.next_count(), 3);
    assert_no_violations(&probe, "a rule broken");
    probe.cancel();
}
