//! Step 7: backpressure. One subscriber is slower than the source. Every
//! buffer is bounded, so something has to give, and the user chooses what:
//! `block` makes the broadcaster wait for the slow subscriber, which fills
//! the buffers upstream until the source itself slows to the subscriber's
//! pace; `drop` never waits, and counts the events each subscriber missed.
//!
//! Run it: `cargo run --example step7_backpressure`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver, RecvTimeoutError, Sender, TrySendError};
use may_patterns::pace::Pacer;
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

// ANCHOR: generate
/// How the source fared: what it sent and how long it was held up.
#[derive(Debug)]
struct SourceStats {
    sent: u64,
    elapsed: Duration,
    /// Parked in `send` because the buffer in front of it was full.
    blocked: Duration,
}

/// Send `count` readings at `rate` per second, timing every wait for room.
/// A reading that could not go out on time goes out as soon as it can, so a
/// blocked source falls behind its schedule: its achieved rate drops.
fn generate(count: u64, rate: u64, seed: u64, out: Sender<String>) -> SourceStats {
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut stats = SourceStats {
        sent: 0,
        elapsed: Duration::ZERO,
        blocked: Duration::ZERO,
    };
    for n in 0..count {
        wait_until_due(started, n, rate);
        let line = reading(n, rate, &mut rng);
        let before_send = Instant::now();
        let sent = out.send(line);
        stats.blocked += before_send.elapsed();
        if sent.is_err() {
            break; // the publisher is gone
        }
        stats.sent += 1;
    }
    stats.elapsed = started.elapsed();
    stats
}
// ANCHOR_END: generate

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
/// What the broadcaster does when a subscriber's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    /// Wait for room: nothing is lost, and everyone goes at the slowest
    /// subscriber's pace.
    Block,
    /// Do not wait: this subscriber misses the event, and it is counted.
    Drop,
}

/// The broadcaster's one input: events and new subscribers travel in the
/// same channel, so a subscriber's place in the stream is exact.
enum HubMsg {
    Event(Event),
    Subscribe(&'static str, Sender<Event>),
}

/// One subscriber, as the broadcaster sees it.
struct Subscriber {
    name: &'static str,
    events: Sender<Event>,
    dropped: u64,
}

impl Subscriber {
    /// Hand over one event under `policy`; `false` once the subscriber has gone.
    fn offer(&mut self, event: Event, policy: Policy) -> bool {
        match policy {
            Policy::Block => self.events.send(event).is_ok(),
            Policy::Drop => match self.events.try_send(event) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.dropped += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
        }
    }
}

/// Copy every event to every subscriber under `policy`. Returns, when every
/// publisher has gone, how many events each subscriber missed.
fn broadcast(input: Receiver<HubMsg>, policy: Policy) -> Vec<(&'static str, u64)> {
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let mut gone = Vec::new();
    for msg in input {
        match msg {
            HubMsg::Subscribe(name, events) => subscribers.push(Subscriber {
                name,
                events,
                dropped: 0,
            }),
            HubMsg::Event(event) => subscribers.retain_mut(|s| {
                let stays = s.offer(event.clone(), policy);
                if !stays {
                    gone.push((s.name, s.dropped));
                }
                stays
            }),
        }
    }
    gone.extend(subscribers.iter().map(|s| (s.name, s.dropped)));
    gone
}
// ANCHOR_END: hub

/// Join the stream from now on, with a buffer of `capacity` events.
fn subscribe(hub: &Sender<HubMsg>, name: &'static str, capacity: usize) -> Receiver<Event> {
    let (tx, rx) = bounded::channel(capacity);
    hub.send(HubMsg::Subscribe(name, tx))
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

/// A subscriber that spends `cost` on every event (0 for none): a sink that
/// writes to a slow database, say. `Pacer` sleeps whole milliseconds only.
fn windows_of(
    events: Receiver<Event>,
    mut windower: Windower,
    idle: Duration,
    cost: Duration,
) -> Seen {
    let mut seen = Seen::default();
    let mut pacer = Pacer::new();
    let mut last_arrival = Instant::now();
    loop {
        let closed = match events.recv_timeout(idle) {
            Ok(event) => {
                last_arrival = Instant::now();
                seen.events += 1;
                seen.first_ts.get_or_insert(event.ts);
                pacer.wait(cost);
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
/// The numbers of one run.
struct Outcome {
    source: SourceStats,
    /// `(name, events received, events dropped)` per subscriber.
    subscribers: Vec<(&'static str, u64, u64)>,
}

/// A source at `rate`, a fast subscriber and one that spends `slow_cost`
/// per event, buffers of `capacity`, the broadcaster under `policy`.
fn run(policy: Policy, count: u64, rate: u64, slow_cost: Duration, capacity: usize) -> Outcome {
    let spec = WindowSpec {
        size: 50,
        slide: 50,
    };
    let idle = Duration::from_millis(100);
    let (hub_tx, hub_rx) = bounded::channel(capacity);
    let broadcaster = go!(move || broadcast(hub_rx, policy));
    let subscribers: Vec<_> = [("fast", Duration::ZERO), ("slow", slow_cost)]
        .into_iter()
        .map(|(name, cost)| {
            let rx = subscribe(&hub_tx, name, capacity);
            let windower = Windower::new(spec, 20);
            go!(move || windows_of(rx, windower, idle, cost))
        })
        .collect();
    let (lines_tx, lines_rx) = bounded::channel(capacity);
    let source = go!(move || generate(count, rate, 7, lines_tx));
    go!(move || publish(lines_rx, hub_tx));
    let source = source.join().unwrap();
    let received: Vec<u64> = subscribers
        .into_iter()
        .map(|s| s.join().unwrap().events)
        .collect();
    let dropped = broadcaster.join().unwrap();
    Outcome {
        source,
        subscribers: dropped
            .into_iter()
            .zip(received)
            .map(|((name, dropped), got)| (name, got, dropped))
            .collect(),
    }
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (count, rate, slow_cost, capacity) = (1_500, 5_000, Duration::from_micros(500), 64);
    println!(
        "{count} readings asked at {rate}/s; the slow subscriber spends {slow_cost:?} per event; buffers of {capacity}"
    );
    for policy in [Policy::Block, Policy::Drop] {
        let o = run(policy, count, rate, slow_cost, capacity);
        // Under `block` every count is exact; under `drop` it depends on timing.
        let tilde = if policy == Policy::Block { "" } else { "~" };
        let s = &o.source;
        println!(
            "{policy:?}: the source sent {} in {:.1?}, ~{:.0} readings/s, blocked in send {:.1}% of the time",
            s.sent,
            s.elapsed,
            s.sent as f64 / s.elapsed.as_secs_f64(),
            100.0 * s.blocked.as_secs_f64() / s.elapsed.as_secs_f64(),
        );
        for (name, got, dropped) in &o.subscribers {
            println!("  {name} subscriber: received {tilde}{got}, dropped {tilde}{dropped}");
        }
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    const SLOW: Duration = Duration::from_millis(1);

    #[test]
    fn block_loses_nothing_and_slows_the_source_to_the_slow_subscribers_pace() {
        configure_for_tests();
        // 300 events asked at 20,000/s (15 ms); the slow subscriber needs
        // 1 ms each, so about 300 ms.
        let o = run(Policy::Block, 300, 20_000, SLOW, 8);
        assert_eq!(o.source.sent, 300);
        for (name, got, dropped) in &o.subscribers {
            assert_eq!((*got, *dropped), (294, 0), "{name}: 6 of 300 are malformed");
        }
        assert!(
            o.source.elapsed >= Duration::from_millis(250),
            "{:?}",
            o.source
        );
        assert!(
            o.source.blocked >= Duration::from_millis(150),
            "{:?}",
            o.source
        );
    }

    #[test]
    fn drop_keeps_the_source_on_time_and_counts_what_the_slow_subscriber_missed() {
        configure_for_tests();
        let o = run(Policy::Drop, 300, 20_000, SLOW, 8);
        assert_eq!(o.source.sent, 300);
        assert!(
            o.source.elapsed < Duration::from_millis(250),
            "{:?}",
            o.source
        );
        let slow = o.subscribers.iter().find(|s| s.0 == "slow").unwrap();
        assert!(slow.2 > 0, "the slow subscriber dropped some: {slow:?}");
        for (name, got, dropped) in &o.subscribers {
            assert_eq!(
                got + dropped,
                294,
                "{name}: every event received or counted"
            );
        }
    }

    #[test]
    fn a_full_subscriber_under_drop_does_not_hold_up_the_broadcaster() {
        configure_for_tests();
        let (hub, hub_rx) = bounded::channel(4);
        let broadcaster = go!(move || broadcast(hub_rx, Policy::Drop));
        let stuck = subscribe(&hub, "stuck", 2); // never read until the end
        let event = |ts| Event {
            ts,
            key: "a".into(),
            value: 1.0,
        };
        (0..10).for_each(|ts| hub.send(HubMsg::Event(event(ts))).unwrap());
        drop(hub);
        assert_eq!(broadcaster.join().unwrap(), vec![("stuck", 8)]);
        assert_eq!(stuck.iter().map(|e| e.ts).collect::<Vec<_>>(), vec![0, 1]);
    }
}
