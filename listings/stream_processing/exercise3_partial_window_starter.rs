//! Exercise 3 (starter): mark the windows a late subscriber saw only part of.
//! A subscriber that joins a hot stream late counts the windows it saw as if
//! they were whole. Give it the event time at which it joined, and mark every
//! window that may have lost events to the cut.
//!
//! Run it: `cargo run --example exercise3_partial_window_starter`
//! (it panics at the `todo!()` until you write it).

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

// ANCHOR: starter
/// What a subscriber receives. Today only events; a subscriber cannot tell
/// which windows it saw only part of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Joined {
    // TODO: a first message carrying the event time at which it joined.
    Event(u64),
}

/// Step 6's broadcaster.
fn broadcast(input: Receiver<HubMsg>) {
    let mut subscribers: Vec<Sender<Joined>> = Vec::new();
    for msg in input {
        match msg {
            // TODO: tell the new subscriber the newest timestamp published so far.
            HubMsg::Subscribe(tx) => subscribers.push(tx),
            HubMsg::Event(ts) => subscribers.retain(|s| s.send(Joined::Event(ts)).is_ok()),
        }
    }
}

/// Count events in tumbling windows of `size` ms.
fn count_windows(events: Receiver<Joined>, size: u64) -> Vec<Window> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for msg in events {
        match msg {
            Joined::Event(ts) => *counts.entry(ts / size * size).or_default() += 1,
        }
    }
    counts
        .into_iter()
        .map(|(start, events)| Window {
            start,
            events,
            partial: may_have_lost_events(start),
        })
        .collect()
}

/// Whether the window that starts at `start` may have lost events to the
/// cut: what does this need to know?
fn may_have_lost_events(start: u64) -> bool {
    todo!("was the window starting at {start} cut by the join?")
}
// ANCHOR_END: starter

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
