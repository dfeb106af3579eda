//! Exercise 1 (solution): session windows. A session is a run of one key's
//! events with no gap of `gap` ms or more between two in a row: a user's
//! visit to a site, a machine's burst of activity. It closes once event time
//! has moved `gap` past its last event.
//!
//! Run it: `cargo run --example exercise1_session_windows_solution`

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

// ANCHOR: solution
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
        let gap = self.gap;
        // Event time is now `event.ts`: every session quiet since `ts - gap`
        // is over, this event's own key included.
        let over: Vec<String> = (self.open.iter())
            .filter(|(_, s)| s.last + gap <= event.ts)
            .map(|(key, _)| key.clone())
            .collect();
        let mut closed: Vec<Session> = over.iter().filter_map(|k| self.open.remove(k)).collect();
        closed.sort_by(|a, b| (a.last, &a.key).cmp(&(b.last, &b.key)));

        let session = self.open.entry(event.key.clone()).or_insert(Session {
            key: event.key.clone(),
            first: event.ts,
            last: event.ts,
            count: 0,
            sum: 0.0,
        });
        session.last = event.ts;
        session.count += 1;
        session.sum += event.value;
        closed
    }

    /// The stream has ended: every open session, in the order they ended.
    fn flush(&mut self) -> Vec<Session> {
        let mut rest: Vec<Session> = std::mem::take(&mut self.open).into_values().collect();
        rest.sort_by(|a, b| (a.last, &a.key).cmp(&(b.last, &b.key)));
        rest
    }
}
// ANCHOR_END: solution

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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: u64, key: &str) -> Event {
        Event {
            ts,
            key: key.into(),
            value: ts as f64,
        }
    }

    fn session(key: &str, first: u64, last: u64, count: u64, sum: f64) -> Session {
        Session {
            key: key.into(),
            first,
            last,
            count,
            sum,
        }
    }

    #[test]
    fn a_gap_shorter_than_the_limit_keeps_the_session_open() {
        let mut s = Sessions::new(100);
        assert!(s.push(&event(0, "a")).is_empty());
        assert!(s.push(&event(99, "a")).is_empty());
        assert!(s.push(&event(198, "a")).is_empty());
        assert_eq!(s.flush(), vec![session("a", 0, 198, 3, 297.0)]);
    }

    #[test]
    fn a_gap_of_exactly_the_limit_closes_the_session_and_starts_a_new_one() {
        let mut s = Sessions::new(100);
        s.push(&event(0, "a"));
        assert_eq!(s.push(&event(100, "a")), vec![session("a", 0, 0, 1, 0.0)]);
        assert_eq!(s.flush(), vec![session("a", 100, 100, 1, 100.0)]);
    }

    #[test]
    fn another_keys_event_moves_time_on_and_closes_quiet_sessions_in_order() {
        let mut s = Sessions::new(100);
        s.push(&event(0, "b"));
        s.push(&event(10, "a"));
        s.push(&event(50, "c"));
        let closed = s.push(&event(120, "c"));
        assert_eq!(
            closed,
            vec![session("b", 0, 0, 1, 0.0), session("a", 10, 10, 1, 10.0)]
        );
        assert_eq!(s.flush(), vec![session("c", 50, 120, 2, 170.0)]);
    }

    #[test]
    fn the_coroutine_version_emits_every_session() {
        may_patterns::runtime::configure_for_tests();
        let (events_tx, events_rx) = bounded::channel(2);
        let (sessions_tx, sessions_rx) = bounded::channel(2);
        go!(move || sessions_of(events_rx, 10, sessions_tx));
        go!(move || {
            for ts in [0, 5, 30, 31, 60] {
                events_tx.send(event(ts, "k")).unwrap();
            }
        });
        let got: Vec<(u64, u64)> = sessions_rx.iter().map(|s| (s.first, s.last)).collect();
        assert_eq!(got, vec![(0, 5), (30, 31), (60, 60)]);
    }
}
