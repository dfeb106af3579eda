//! Step 6: a hot stream with several subscribers. The readings are parsed
//! once and handed to a broadcaster coroutine, which copies every event into
//! one bounded channel per subscriber; each subscriber runs its own windows.
//! The stream is *hot*: it flows whether anyone listens or not, and a
//! subscriber that joins late sees only the events after it joined.
//!
//! Run it: `cargo run --example step6_hot_stream`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver, RecvTimeoutError, Sender};
use may_patterns::runtime::{configure_once, Settings};

/// The sensors the generator spreads its readings over.
const SENSORS: [&str; 4] = ["boiler", "intake", "pump", "vent"];
/// One line in this many is broken on purpose.
const MALFORMED_EVERY: u64 = 50;

/// Readings reach us up to this many ms out of order (network paths differ).
const JITTER_MS: u64 = 10;
/// One reading in this many is held up for `HELD_UP_MS` (a sensor that
/// reconnects and sends its backlog).
const HELD_UP_EVERY: u64 = 97;
const HELD_UP_MS: u64 = 100;

/// Reading number `n` of a stream of `rate` readings per second, as the line
/// of JSON a sensor sends. Its event time `ts` is when it was measured, which
/// is a little (or, for one in `HELD_UP_EVERY`, a lot) before it is sent.
fn reading(n: u64, rate: u64, rng: &mut fastrand::Rng) -> String {
    if (n + 1).is_multiple_of(MALFORMED_EVERY) {
        return format!(r#"{{"ts": {n}, "sensor": "#); // cut off mid-line
    }
    let delay = match (n + 1).is_multiple_of(HELD_UP_EVERY) {
        true => HELD_UP_MS,
        false => rng.u64(0..=JITTER_MS),
    };
    let ts = (n * 1000 / rate).saturating_sub(delay);
    let sensor = SENSORS[rng.usize(..SENSORS.len())];
    let value = f64::from(rng.u32(0..1000)) / 10.0;
    format!(r#"{{"ts":{ts},"sensor":"{sensor}","value":{value}}}"#)
}

/// Park until reading `n` is due, `n / rate` seconds after `started`. Sleeps
/// are whole milliseconds or more (may 0.3.51 mishandles shorter ones): a
/// reading due sooner than that goes out at once, so readings leave in
/// per-millisecond bursts and the average rate is exact.
fn wait_until_due(started: Instant, n: u64, rate: u64) {
    let due = started + Duration::from_micros(n * 1_000_000 / rate);
    let now = Instant::now();
    if due > now + Duration::from_millis(1) {
        may::coroutine::sleep(due - now);
    }
}

/// Send `count` readings at `rate` per second, then return (which drops
/// `out` and ends the processor's loop).
fn generate(count: u64, rate: u64, seed: u64, out: Sender<String>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    for n in 0..count {
        wait_until_due(started, n, rate);
        if out.send(reading(n, rate, &mut rng)).is_err() {
            return; // the processor is gone
        }
    }
}

/// One reading after parsing.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    ts: u64,
    key: String,
    value: f64,
}

/// Parse one line; `None` if it is not JSON or lacks a field.
fn parse_event(line: &str) -> Option<Event> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Event {
        ts: json["ts"].as_u64()?,
        key: json["sensor"].as_str()?.to_owned(),
        value: json["value"].as_f64()?,
    })
}

/// Windows of `size` ms of event time, one starting every `slide` ms from
/// ts 0: `[0, size)`, `[slide, slide + size)`, ... Tumbling if they are equal.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WindowSpec {
    size: u64,
    slide: u64,
}

impl WindowSpec {
    /// The start of every window that holds `ts`, oldest first: those with
    /// `start <= ts < start + size`.
    fn starts_for(self, ts: u64) -> impl Iterator<Item = u64> {
        let newest = ts / self.slide * self.slide;
        let oldest = (ts + 1).saturating_sub(self.size).div_ceil(self.slide) * self.slide;
        (oldest..=newest).step_by(self.slide as usize)
    }
}

/// What one key gets in one window.
#[derive(Debug, Clone, PartialEq)]
struct KeyStats {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

impl KeyStats {
    /// From every value the key had in the window (at least one). The
    /// percentiles are exact, by nearest rank: `p90` is the smallest value
    /// that at least 90% of the values do not exceed.
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |p: usize| values[(p * n).div_ceil(100) - 1];
        KeyStats {
            count: n as u64,
            sum: values.iter().sum(),
            min: values[0],
            max: values[n - 1],
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
        }
    }
}

/// A closed window: its span `[start, end)` of event time, in ms, and the
/// numbers of every key that had a reading in it.
#[derive(Debug, Clone, PartialEq)]
struct ClosedWindow {
    start: u64,
    end: u64,
    keys: BTreeMap<String, KeyStats>,
    /// Emitted because the stream ended, not because the watermark passed.
    flushed: bool,
}

/// Event-time windows that close when the watermark passes their end.
#[derive(Debug)]
struct Windower {
    spec: WindowSpec,
    /// How far the watermark trails the newest event time, in ms: a reading
    /// up to this much out of order still makes its window.
    lateness: u64,
    /// Open windows by start, each with every value it holds, per key.
    open: BTreeMap<u64, BTreeMap<String, Vec<f64>>>,
    /// The newest event time seen (none before the first reading).
    newest: Option<u64>,
    /// Every window with `end <= watermark` is closed. It never goes back.
    watermark: u64,
    /// Readings that arrived after their window had closed, by window start.
    late_by_window: BTreeMap<u64, u64>,
    /// Readings that missed at least one of their windows.
    late: u64,
}

impl Windower {
    fn new(spec: WindowSpec, lateness: u64) -> Self {
        Windower {
            spec,
            lateness,
            open: BTreeMap::new(),
            newest: None,
            watermark: 0,
            late_by_window: BTreeMap::new(),
            late: 0,
        }
    }

    /// Add `event` to its open windows (or count it late for the closed
    /// ones), move the watermark, and return the windows that closed.
    fn push(&mut self, event: &Event) -> Vec<ClosedWindow> {
        let mut missed_one = false;
        for start in self.spec.starts_for(event.ts) {
            if start + self.spec.size <= self.watermark {
                *self.late_by_window.entry(start).or_default() += 1;
                missed_one = true;
            } else {
                let window = self.open.entry(start).or_default();
                let values = window.entry(event.key.clone()).or_default();
                values.push(event.value);
            }
        }
        self.late += u64::from(missed_one);
        let newest = self.newest.map_or(event.ts, |n| n.max(event.ts));
        self.newest = Some(newest);
        self.advance_to(newest.saturating_sub(self.lateness))
    }

    /// Nothing has arrived for `quiet`: assume event time went on like the
    /// wall clock, and move the watermark as if a reading stamped
    /// `newest + quiet` had come.
    fn advance_idle(&mut self, quiet: Duration) -> Vec<ClosedWindow> {
        let Some(newest) = self.newest else {
            return Vec::new(); // nothing seen, nothing open
        };
        let now = newest + quiet.as_millis() as u64;
        self.advance_to(now.saturating_sub(self.lateness))
    }

    /// The stream has ended: emit every open window, marked as flushed.
    fn flush(&mut self) -> Vec<ClosedWindow> {
        let open = std::mem::take(&mut self.open);
        let size = self.spec.size;
        open.into_iter()
            .map(|(start, keys)| close(start, size, keys, true))
            .collect()
    }

    fn advance_to(&mut self, watermark: u64) -> Vec<ClosedWindow> {
        self.watermark = self.watermark.max(watermark);
        let mut closed = Vec::new();
        while let Some(oldest) = self.open.first_entry() {
            if *oldest.key() + self.spec.size > self.watermark {
                break;
            }
            let (start, keys) = oldest.remove_entry();
            closed.push(close(start, self.spec.size, keys, false));
        }
        closed
    }
}

fn close(start: u64, size: u64, keys: BTreeMap<String, Vec<f64>>, flushed: bool) -> ClosedWindow {
    ClosedWindow {
        start,
        end: start + size,
        keys: keys
            .into_iter()
            .map(|(key, values)| (key, KeyStats::of(values)))
            .collect(),
        flushed,
    }
}

// ANCHOR: hub
/// The broadcaster's one input: events and new subscribers travel in the
/// same channel, so a subscriber's place in the stream is exact (and no
/// `select!` over two channels can lose a message).
enum HubMsg {
    Event(Event),
    Subscribe(Sender<Event>),
}

/// Copy every event to every subscriber that has joined so far, in order.
/// A subscriber that has gone (its receiver dropped) is forgotten. Returns
/// when every publisher has gone; dropping the subscribers' senders then ends
/// their loops.
fn broadcast(input: Receiver<HubMsg>) {
    let mut subscribers: Vec<Sender<Event>> = Vec::new();
    for msg in input {
        match msg {
            HubMsg::Subscribe(events) => subscribers.push(events),
            HubMsg::Event(event) => subscribers.retain(|s| s.send(event.clone()).is_ok()),
        }
    }
}

/// Join the stream from now on, with a buffer of `capacity` events.
fn subscribe(hub: &Sender<HubMsg>, capacity: usize) -> Receiver<Event> {
    let (tx, rx) = bounded::channel(capacity);
    hub.send(HubMsg::Subscribe(tx))
        .expect("the broadcaster runs");
    rx
}

/// Parse each line once and publish it; return how many were malformed.
fn publish(lines: Receiver<String>, hub: Sender<HubMsg>) -> u64 {
    let mut malformed = 0;
    for line in lines {
        match parse_event(&line) {
            Some(event) => hub
                .send(HubMsg::Event(event))
                .expect("the broadcaster runs"),
            None => malformed += 1,
        }
    }
    malformed
}
// ANCHOR_END: hub

// ANCHOR: subscriber
/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    events: u64,
    first_ts: Option<u64>,
    windows: Vec<ClosedWindow>,
    late: u64,
}

/// A subscriber: step 5's processor, fed with events instead of lines.
fn windows_of(events: Receiver<Event>, mut windower: Windower, idle: Duration) -> Seen {
    let mut seen = Seen::default();
    let mut last_arrival = Instant::now();
    loop {
        let closed = match events.recv_timeout(idle) {
            Ok(event) => {
                last_arrival = Instant::now();
                seen.events += 1;
                seen.first_ts.get_or_insert(event.ts);
                windower.push(&event)
            }
            Err(RecvTimeoutError::Timeout) => windower.advance_idle(last_arrival.elapsed()),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        seen.windows.extend(closed);
    }
    seen.windows.extend(windower.flush());
    seen.late = windower.late;
    seen
}
// ANCHOR_END: subscriber

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (count, rate) = (2_000, 10_000);
    let spec = WindowSpec {
        size: 50,
        slide: 50,
    };
    let (lateness, idle) = (20, Duration::from_millis(100));
    let (hub_tx, hub_rx) = bounded::channel(64);
    go!(move || broadcast(hub_rx));
    let early = subscribe(&hub_tx, 64);
    let early = go!(move || windows_of(early, Windower::new(spec, lateness), idle));

    let (lines_tx, lines_rx) = bounded::channel(64);
    let started = Instant::now();
    go!(move || generate(count, rate, 7, lines_tx));
    let publisher = {
        let hub_tx = hub_tx.clone();
        go!(move || publish(lines_rx, hub_tx))
    };
    // main is a plain thread, not a may worker: it may sleep.
    std::thread::sleep(Duration::from_millis(100));
    let late = subscribe(&hub_tx, 64);
    let joined_after = started.elapsed();
    drop(hub_tx); // the publisher's clone is now the broadcaster's only input
    let late = go!(move || windows_of(late, Windower::new(spec, lateness), idle));

    let malformed = publisher.join().unwrap();
    println!("{count} readings at {rate}/s, {malformed} malformed, one broadcaster:");
    let early = early.join().unwrap();
    report("early subscriber", &early, "");
    let late = late.join().unwrap();
    report("late subscriber", &late, "~");
    println!("the late subscriber joined after {joined_after:.1?} and missed what came before");
}

/// One line per subscriber; `tilde` marks counts that depend on timing.
fn report(who: &str, seen: &Seen, tilde: &str) {
    let first = &seen.windows[0];
    let in_first: u64 = first.keys.values().map(|s| s.count).sum();
    println!(
        "  {who}: {tilde}{} events from ts {tilde}{}, {tilde}{} windows, the first [{tilde}{}, {tilde}{}) holding {tilde}{in_first}",
        seen.events,
        seen.first_ts.unwrap(),
        seen.windows.len(),
        first.start,
        first.end,
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn event(ts: u64) -> Event {
        Event {
            ts,
            key: "a".into(),
            value: 1.0,
        }
    }

    fn timestamps(rx: Receiver<Event>) -> Vec<u64> {
        rx.iter().map(|e| e.ts).collect()
    }

    #[test]
    fn a_late_subscriber_sees_exactly_the_events_after_it_joined() {
        configure_for_tests();
        let (hub, hub_rx) = bounded::channel(4);
        go!(move || broadcast(hub_rx));
        let first = subscribe(&hub, 100);
        (0..10).for_each(|ts| hub.send(HubMsg::Event(event(ts))).unwrap());
        let second = subscribe(&hub, 100);
        (10..15).for_each(|ts| hub.send(HubMsg::Event(event(ts))).unwrap());
        drop(hub);
        assert_eq!(timestamps(first), (0..15).collect::<Vec<_>>());
        assert_eq!(timestamps(second), (10..15).collect::<Vec<_>>());
    }

    #[test]
    fn a_subscriber_that_leaves_does_not_stop_the_others() {
        configure_for_tests();
        let (hub, hub_rx) = bounded::channel(4);
        let broadcaster = go!(move || broadcast(hub_rx));
        let stays = subscribe(&hub, 100);
        drop(subscribe(&hub, 1)); // joins and leaves at once
        (0..20).for_each(|ts| hub.send(HubMsg::Event(event(ts))).unwrap());
        drop(hub);
        broadcaster.join().unwrap();
        assert_eq!(timestamps(stays).len(), 20);
    }

    #[test]
    fn every_subscriber_from_the_start_gets_the_same_windows() {
        configure_for_tests();
        let (hub, hub_rx) = bounded::channel(16);
        go!(move || broadcast(hub_rx));
        let spec = WindowSpec { size: 5, slide: 5 };
        let idle = Duration::from_secs(5);
        let subscribers: Vec<_> = (0..3)
            .map(|_| {
                let rx = subscribe(&hub, 16);
                go!(move || windows_of(rx, Windower::new(spec, 2), idle))
            })
            .collect();
        let (lines_tx, lines_rx) = bounded::channel(16);
        go!(move || generate(1_000, 50_000, 7, lines_tx));
        assert_eq!(publish(lines_rx, hub), 20);
        let seen: Vec<Seen> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();
        for s in &seen {
            assert_eq!(s.events, 980);
            assert_eq!(s.windows, seen[0].windows);
            assert_eq!(s.late, seen[0].late);
        }
    }
}
