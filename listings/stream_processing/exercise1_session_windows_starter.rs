//! Exercise 1 (starter): session windows. A session is a run of one key's
//! events with no gap of `gap` ms or more between two in a row: a user's
//! visit to a site, a machine's burst of activity. It closes once event time
//! has moved `gap` past its last event. Write `push` and `flush`.
//!
//! Run it: `cargo run --example exercise1_session_windows_starter`
//! (it panics at the first `todo!()` until you write them).

// ANCHOR: starter
use std::collections::BTreeMap;

use may::go;
use may_patterns::bounded::{self, Receiver, Sender};

/// One event, already parsed. Events arrive in `ts` order.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    ts: u64,
    key: String,
    value: f64,
}

/// One key's session: its first and last event time, how many events, and
/// the sum of their values.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    key: String,
    first: u64,
    last: u64,
    count: u64,
    sum: f64,
}

/// The open session of every key.
struct Sessions {
    gap: u64,
    open: BTreeMap<String, Session>,
}

impl Sessions {
    fn new(gap: u64) -> Self {
        Sessions {
            gap,
            open: BTreeMap::new(),
        }
    }

    /// Add `event` to its key's session, or start one. Return the sessions
    /// of any key that `event.ts` has closed (their last event is `gap` or
    /// more before it), in the order they ended.
    fn push(&mut self, event: &Event) -> Vec<Session> {
        // Hint: event time is now `event.ts`, for every key, not only for
        // `event.key`: a quiet key's session is over too.
        let _ = (event, self.gap, &mut self.open);
        todo!("close the sessions that are over, then add the event")
    }

    /// The stream has ended: every open session, in the order they ended.
    fn flush(&mut self) -> Vec<Session> {
        todo!("hand back every open session")
    }
}

/// Cut the events from `input` into sessions; send each as it closes.
fn sessions_of(input: Receiver<Event>, gap: u64, output: Sender<Session>) {
    let mut sessions = Sessions::new(gap);
    for event in input {
        for session in sessions.push(&event) {
            output.send(session).unwrap();
        }
    }
    for session in sessions.flush() {
        output.send(session).unwrap();
    }
}

fn main() {
    may::config().set_workers(2);
    // Two users clicking: ann in two bursts, bob in one long one.
    let clicks = [
        (0, "ann"),
        (20, "bob"),
        (40, "ann"),
        (90, "ann"),
        (110, "bob"),
        (200, "bob"),
        (400, "ann"),
        (420, "ann"),
    ];
    let (events_tx, events_rx) = bounded::channel(4);
    let (sessions_tx, sessions_rx) = bounded::channel(4);
    go!(move || {
        for (ts, key) in clicks {
            let event = Event {
                ts,
                key: key.into(),
                value: 1.0,
            };
            events_tx.send(event).unwrap();
        }
    });
    go!(move || sessions_of(events_rx, 100, sessions_tx));
    println!("sessions with a gap of 100ms:");
    for s in sessions_rx {
        println!(
            "  {:<4} [{:>3}ms, {:>3}ms] {} clicks",
            s.key, s.first, s.last, s.count
        );
    }
}
// ANCHOR_END: starter
