//! Step 2: tumbling windows. The processor no longer counts forever: it cuts
//! the stream into fixed, non-overlapping windows of event time (0-50 ms,
//! 50-100 ms, ...) and emits each window's count as soon as the window is
//! over. Readings still arrive in `ts` order, so the first reading at or past
//! a window's end closes it.
//!
//! Run it: `cargo run --example step2_tumbling_windows`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::runtime::{configure_once, Settings};

// ANCHOR: generate
/// The sensors the generator spreads its readings over.
const SENSORS: [&str; 4] = ["boiler", "intake", "pump", "vent"];
/// One line in this many is broken on purpose.
const MALFORMED_EVERY: u64 = 50;

/// Reading number `n` of a stream of `rate` readings per second, as the line
/// of JSON a sensor would send: its event time `ts` in milliseconds, the
/// sensor's name and a measured value.
fn reading(n: u64, rate: u64, rng: &mut fastrand::Rng) -> String {
    if (n + 1).is_multiple_of(MALFORMED_EVERY) {
        return format!(r#"{{"ts": {n}, "sensor": "#); // cut off mid-line
    }
    let ts = n * 1000 / rate;
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

// ANCHOR: tumbling
/// A closed window: its span `[start, end)` of event time, in ms, and how
/// many readings fell in it.
#[derive(Debug, Clone, PartialEq)]
struct WindowCount {
    start: u64,
    end: u64,
    count: u64,
}

/// Tumbling windows of `size` ms, aligned to multiples of `size` from ts 0.
/// A window closes when a reading at or past its end arrives.
#[derive(Debug)]
struct Tumbling {
    size: u64,
    /// Open windows by start, with their counts.
    open: BTreeMap<u64, u64>,
    /// Every window ending at or before this time has been emitted.
    closed_until: u64,
    /// Readings whose window had already been emitted.
    too_late: u64,
}

impl Tumbling {
    fn new(size: u64) -> Self {
        Tumbling {
            size,
            open: BTreeMap::new(),
            closed_until: 0,
            too_late: 0,
        }
    }

    /// Count `event` in its window; return the windows it closed, oldest first.
    fn push(&mut self, event: &Event) -> Vec<WindowCount> {
        let start = event.ts / self.size * self.size;
        if start + self.size <= self.closed_until {
            self.too_late += 1; // counted, not silently lost (step 5 copes)
            return Vec::new();
        }
        *self.open.entry(start).or_default() += 1;
        self.close_until(event.ts)
    }

    /// Emit every open window that ends at or before `time`.
    fn close_until(&mut self, time: u64) -> Vec<WindowCount> {
        self.closed_until = self.closed_until.max(time);
        let mut closed = Vec::new();
        while let Some(oldest) = self.open.first_entry() {
            if *oldest.key() + self.size > self.closed_until {
                break;
            }
            let (start, count) = oldest.remove_entry();
            closed.push(WindowCount {
                start,
                end: start + self.size,
                count,
            });
        }
        closed
    }

    /// The stream has ended: emit every window still open.
    fn flush(&mut self) -> Vec<WindowCount> {
        self.close_until(u64::MAX - self.size)
    }
}
// ANCHOR_END: tumbling

// ANCHOR: process
/// What the processor counted besides windows.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    malformed: u64,
    too_late: u64,
}

/// Put each line in its window and send every window the moment it closes.
fn process(lines: Receiver<String>, size: u64, windows: Sender<WindowCount>) -> Counts {
    let mut tumbling = Tumbling::new(size);
    let mut counts = Counts::default();
    for line in lines {
        let Some(event) = parse_event(&line) else {
            counts.malformed += 1;
            continue;
        };
        for window in tumbling.push(&event) {
            windows.send(window).expect("main prints every window");
        }
    }
    for window in tumbling.flush() {
        windows.send(window).expect("main prints every window");
    }
    counts.too_late = tumbling.too_late;
    counts
}
// ANCHOR_END: process

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (count, rate, size) = (2_000, 10_000, 50);
    let (lines_tx, lines_rx) = bounded::channel(64);
    let (windows_tx, windows_rx) = bounded::channel(16);
    go!(move || generate(count, rate, 7, lines_tx));
    let processor = go!(move || process(lines_rx, size, windows_tx));
    println!("{count} readings at {rate}/s in tumbling windows of {size}ms of event time:");
    // Ends when the processor returns and drops its sender.
    for w in windows_rx {
        println!("  [{:>3}ms, {:>3}ms) {} readings", w.start, w.end, w.count);
    }
    let counts = processor.join().unwrap();
    println!(
        "malformed {}, too late for their window {}",
        counts.malformed, counts.too_late
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn at(ts: u64) -> Event {
        Event {
            ts,
            key: "a".into(),
            value: 1.0,
        }
    }

    fn window(start: u64, end: u64, count: u64) -> WindowCount {
        WindowCount { start, end, count }
    }

    #[test]
    fn a_reading_exactly_at_a_windows_end_closes_it_and_opens_the_next() {
        let mut t = Tumbling::new(100);
        assert!(t.push(&at(0)).is_empty());
        assert!(t.push(&at(99)).is_empty());
        assert_eq!(t.push(&at(100)), vec![window(0, 100, 2)]);
        assert_eq!(t.flush(), vec![window(100, 200, 1)]);
    }

    #[test]
    fn a_jump_in_time_emits_no_empty_windows() {
        let mut t = Tumbling::new(100);
        t.push(&at(10));
        t.push(&at(30));
        assert_eq!(t.push(&at(420)), vec![window(0, 100, 2)]);
        assert_eq!(t.flush(), vec![window(400, 500, 1)]);
    }

    #[test]
    fn a_reading_for_an_emitted_window_is_counted_as_too_late() {
        let mut t = Tumbling::new(100);
        t.push(&at(10));
        t.push(&at(120)); // closes [0, 100)
        assert!(t.push(&at(50)).is_empty());
        assert!(t.push(&at(110)).is_empty()); // [100, 200) is still open
        assert_eq!(t.too_late, 1);
        assert_eq!(t.flush(), vec![window(100, 200, 2)]);
    }

    #[test]
    fn the_stream_is_cut_into_windows_that_add_up() {
        configure_for_tests();
        let (lines_tx, lines_rx) = bounded::channel(8);
        let (windows_tx, windows_rx) = bounded::channel(8);
        go!(move || generate(1_000, 50_000, 3, lines_tx));
        let processor = go!(move || process(lines_rx, 5, windows_tx));
        let windows: Vec<WindowCount> = windows_rx.iter().collect();
        let counts = processor.join().unwrap();
        // 1000 readings, 20 ms of event time, 5 ms windows.
        let starts: Vec<u64> = windows.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![0, 5, 10, 15]);
        assert_eq!(
            counts,
            Counts {
                malformed: 20,
                too_late: 0
            }
        );
        assert_eq!(windows.iter().map(|w| w.count).sum::<u64>(), 980);
    }
}
