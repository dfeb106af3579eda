//! Exercise 3 (solution): mark the windows a late subscriber saw only part of.
//!
//! The broadcaster knows the newest event time it has published when a
//! subscriber joins, and hands it over with the subscription. Every event
//! published before the join has a timestamp at or below that mark, so a
//! window that starts at or before it may have lost events to the cut, and
//! a window that starts after it cannot have.
//!
//! Run it: `cargo run --example exercise3_partial_window_solution`

use std::collections::BTreeMap;

use may::go;
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::runtime::{configure_once, Settings};

/// The broadcaster's one input, as in step 6: events and subscriptions in
/// one channel, so the cut between them is exact.
enum HubMsg {
    Event(u64),
    Subscribe(Sender<Joined>),
}

// ANCHOR: solution
/// What a subscriber receives: first the event time at which it joined,
/// then every event published after that.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Joined {
    /// The newest timestamp published before the join (`None`: nothing was).
    At(Option<u64>),
    Event(u64),
}

/// Step 6's broadcaster, which now remembers the newest timestamp it has
/// published and tells each new subscriber.
fn broadcast(input: Receiver<HubMsg>) {
    let mut subscribers: Vec<Sender<Joined>> = Vec::new();
    let mut newest: Option<u64> = None;
    for msg in input {
        match msg {
            HubMsg::Subscribe(tx) => {
                if tx.send(Joined::At(newest)).is_ok() {
                    subscribers.push(tx);
                }
            }
            HubMsg::Event(ts) => {
                newest = Some(newest.map_or(ts, |n| n.max(ts)));
                subscribers.retain(|s| s.send(Joined::Event(ts)).is_ok());
            }
        }
    }
}

/// Count events in tumbling windows of `size` ms, and mark every window
/// that starts at or before the join mark: events in it may have been
/// published before this subscriber joined.
fn count_windows(events: Receiver<Joined>, size: u64) -> Vec<Window> {
    let mut joined_at = None;
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for msg in events {
        match msg {
            Joined::At(mark) => joined_at = mark,
            Joined::Event(ts) => *counts.entry(ts / size * size).or_default() += 1,
        }
    }
    counts
        .into_iter()
        .map(|(start, events)| Window {
            start,
            events,
            partial: joined_at.is_some_and(|mark| start <= mark),
        })
        .collect()
}
// ANCHOR_END: solution

/// One tumbling window as a subscriber counted it.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    start: u64,
    events: u64,
    partial: bool,
}

fn subscribe(hub: &Sender<HubMsg>) -> Receiver<Joined> {
    let (tx, rx) = bounded::channel(64);
    hub.send(HubMsg::Subscribe(tx))
        .expect("the broadcaster runs");
    rx
}

/// Publish `timestamps`, subscribing a second subscriber after the first
/// `join_after` of them; both subscribers' windows of `size` ms.
fn run(timestamps: &[u64], join_after: usize, size: u64) -> (Vec<Window>, Vec<Window>) {
    let (hub, hub_rx) = bounded::channel(4);
    go!(move || broadcast(hub_rx));
    let early = subscribe(&hub);
    let early = go!(move || count_windows(early, size));
    let (before, after) = timestamps.split_at(join_after);
    before
        .iter()
        .for_each(|&ts| hub.send(HubMsg::Event(ts)).unwrap());
    let late = subscribe(&hub);
    let late = go!(move || count_windows(late, size));
    after
        .iter()
        .for_each(|&ts| hub.send(HubMsg::Event(ts)).unwrap());
    drop(hub);
    (early.join().unwrap(), late.join().unwrap())
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    // Events 0..15 one per ms, except that ts 8 arrives after ts 11 (out
    // of order, within any lateness); the late subscriber joins after 10.
    let timestamps = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 8, 12, 13, 14];
    let (early, late) = run(&timestamps, 10, 5);
    for (who, windows) in [("early", early), ("late", late)] {
        for w in windows {
            let mark = if w.partial { " (partial)" } else { "" };
            println!(
                "{who:>5}: [{:>2}, {:>2}) {} events{mark}",
                w.start,
                w.start + 5,
                w.events
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn window(start: u64, events: u64, partial: bool) -> Window {
        Window {
            start,
            events,
            partial,
        }
    }

    #[test]
    fn a_subscriber_from_the_start_marks_nothing() {
        configure_for_tests();
        let (early, _) = run(&(0..15).collect::<Vec<_>>(), 10, 5);
        assert_eq!(
            early,
            vec![
                window(0, 5, false),
                window(5, 5, false),
                window(10, 5, false)
            ]
        );
    }

    #[test]
    fn joining_after_event_10_marks_the_windows_it_cut() {
        configure_for_tests();
        // ts 0..9 were published before the join: the mark is 9, so
        // [0, 5) and [5, 10) are partial (the late one saw none of the
        // first and none of [5, 10) either), [10, 15) is whole.
        let (_, late) = run(&(0..15).collect::<Vec<_>>(), 10, 5);
        assert_eq!(late, vec![window(10, 5, false)]);
    }

    #[test]
    fn an_event_out_of_order_after_the_join_lands_in_a_marked_window() {
        configure_for_tests();
        let timestamps = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 8, 12, 13, 14];
        let (_, late) = run(&timestamps, 10, 5);
        // ts 10 was published before the join, so the mark is 10 and
        // [10, 15) is partial too; the late ts 8 makes a partial [5, 10).
        assert_eq!(late, vec![window(5, 1, true), window(10, 4, true)]);
    }

    #[test]
    fn a_subscriber_that_joins_before_any_event_marks_nothing() {
        configure_for_tests();
        let (_, late) = run(&[0, 1, 7], 0, 5);
        assert_eq!(late, vec![window(0, 2, false), window(5, 1, false)]);
    }
}
