//! Step 3: sliding windows. A window is still `size` ms of event time, but a
//! new one starts every `slide` ms, so windows overlap and each reading
//! counts in `size / slide` of them: "readings in the last 50 ms, updated
//! every 25 ms". Tumbling windows are the case `slide == size`.
//!
//! Run it: `cargo run --example step3_sliding_windows`

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

// ANCHOR: spec
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
// ANCHOR_END: spec

/// A closed window: its span `[start, end)` of event time, in ms, and how
/// many readings fell in it.
#[derive(Debug, Clone, PartialEq)]
struct WindowCount {
    start: u64,
    end: u64,
    count: u64,
}

// ANCHOR: sliding
/// Sliding windows. A window closes when a reading at or past its end arrives.
#[derive(Debug)]
struct Sliding {
    spec: WindowSpec,
    /// Open windows by start, with their counts.
    open: BTreeMap<u64, u64>,
    /// Every window ending at or before this time has been emitted.
    closed_until: u64,
    /// Readings that missed at least one of their windows (already emitted).
    too_late: u64,
}

impl Sliding {
    fn new(spec: WindowSpec) -> Self {
        Sliding {
            spec,
            open: BTreeMap::new(),
            closed_until: 0,
            too_late: 0,
        }
    }

    /// Count `event` in every window that holds it; return the windows it
    /// closed, oldest first.
    fn push(&mut self, event: &Event) -> Vec<WindowCount> {
        let mut missed_one = false;
        for start in self.spec.starts_for(event.ts) {
            if start + self.spec.size <= self.closed_until {
                missed_one = true;
            } else {
                *self.open.entry(start).or_default() += 1;
            }
        }
        self.too_late += u64::from(missed_one);
        self.close_until(event.ts)
    }

    /// Emit every open window that ends at or before `time`.
    fn close_until(&mut self, time: u64) -> Vec<WindowCount> {
        self.closed_until = self.closed_until.max(time);
        let mut closed = Vec::new();
        while let Some(oldest) = self.open.first_entry() {
            if *oldest.key() + self.spec.size > self.closed_until {
                break;
            }
            let (start, count) = oldest.remove_entry();
            closed.push(WindowCount {
                start,
                end: start + self.spec.size,
                count,
            });
        }
        closed
    }

    /// The stream has ended: emit every window still open.
    fn flush(&mut self) -> Vec<WindowCount> {
        self.close_until(u64::MAX - self.spec.size)
    }
}
// ANCHOR_END: sliding

// ANCHOR: process
/// What the processor counted besides windows.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    malformed: u64,
    too_late: u64,
}

/// Put each line in its window and send every window the moment it closes.
fn process(lines: Receiver<String>, spec: WindowSpec, windows: Sender<WindowCount>) -> Counts {
    let mut sliding = Sliding::new(spec);
    let mut counts = Counts::default();
    for line in lines {
        let Some(event) = parse_event(&line) else {
            counts.malformed += 1;
            continue;
        };
        for window in sliding.push(&event) {
            windows.send(window).expect("main prints every window");
        }
    }
    for window in sliding.flush() {
        windows.send(window).expect("main prints every window");
    }
    counts.too_late = sliding.too_late;
    counts
}
// ANCHOR_END: process

// ANCHOR: main
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (count, rate) = (2_000, 10_000);
    let spec = WindowSpec {
        size: 50,
        slide: 25,
    };
    let (lines_tx, lines_rx) = bounded::channel(64);
    let (windows_tx, windows_rx) = bounded::channel(16);
    go!(move || generate(count, rate, 7, lines_tx));
    let processor = go!(move || process(lines_rx, spec, windows_tx));
    println!(
        "{count} readings at {rate}/s in windows of {}ms sliding by {}ms:",
        spec.size, spec.slide
    );
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

    const SLIDING: WindowSpec = WindowSpec {
        size: 100,
        slide: 50,
    };

    #[test]
    fn a_reading_belongs_to_size_over_slide_windows() {
        let starts = |spec: WindowSpec, ts| spec.starts_for(ts).collect::<Vec<_>>();
        assert_eq!(starts(SLIDING, 120), vec![50, 100]);
        assert_eq!(starts(SLIDING, 100), vec![50, 100]);
        assert_eq!(starts(SLIDING, 99), vec![0, 50]);
        assert_eq!(starts(SLIDING, 30), vec![0], "no window starts before 0");
        let fifths = WindowSpec {
            size: 1000,
            slide: 200,
        };
        assert_eq!(starts(fifths, 1000), vec![200, 400, 600, 800, 1000]);
        let tumbling = WindowSpec {
            size: 100,
            slide: 100,
        };
        assert_eq!(starts(tumbling, 100), vec![100]);
        assert_eq!(starts(tumbling, 99), vec![0]);
    }

    #[test]
    fn overlapping_windows_close_one_by_one_at_their_ends() {
        let mut s = Sliding::new(SLIDING);
        assert!(s.push(&at(10)).is_empty()); // [0, 100)
        assert!(s.push(&at(60)).is_empty()); // [0, 100) and [50, 150)
        assert_eq!(s.push(&at(100)), vec![window(0, 100, 2)]); // [50,150) [100,200)
        assert_eq!(s.push(&at(149)), vec![]);
        assert_eq!(s.push(&at(150)), vec![window(50, 150, 3)]);
        assert_eq!(s.flush(), vec![window(100, 200, 3), window(150, 250, 1)]);
    }

    #[test]
    fn a_reading_that_missed_one_of_its_windows_is_too_late_but_counts_in_the_other() {
        let mut s = Sliding::new(SLIDING);
        s.push(&at(10));
        assert_eq!(s.push(&at(110)), vec![window(0, 100, 1)]);
        assert!(s.push(&at(70)).is_empty()); // [0, 100) is gone, [50, 150) is open
        assert_eq!(s.too_late, 1);
        assert_eq!(s.flush(), vec![window(50, 150, 2), window(100, 200, 1)]);
    }

    #[test]
    fn every_reading_is_counted_in_two_windows() {
        configure_for_tests();
        let (lines_tx, lines_rx) = bounded::channel(8);
        let (windows_tx, windows_rx) = bounded::channel(8);
        go!(move || generate(1_000, 50_000, 3, lines_tx));
        let spec = WindowSpec { size: 10, slide: 5 };
        let processor = go!(move || process(lines_rx, spec, windows_tx));
        let windows: Vec<WindowCount> = windows_rx.iter().collect();
        let counts = processor.join().unwrap();
        // 20 ms of event time: windows start at 0, 5, 10, 15.
        let starts: Vec<u64> = windows.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![0, 5, 10, 15]);
        assert_eq!(
            counts,
            Counts {
                malformed: 20,
                too_late: 0
            }
        );
        // Every reading is in two windows, except those in [0, 5): only one.
        let first_5ms = 250 - 5; // 5 ms of readings, 5 of them malformed
        assert_eq!(
            windows.iter().map(|w| w.count).sum::<u64>(),
            2 * 980 - first_5ms
        );
    }
}
