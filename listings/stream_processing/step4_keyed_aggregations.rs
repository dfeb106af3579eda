//! Step 4: keyed aggregations. Each window now keeps its readings per key
//! (here, per sensor) and, when it closes, reports for every key the count,
//! sum, minimum, maximum and the 50th, 90th and 99th percentiles.
//!
//! Run it: `cargo run --example step4_keyed_aggregations`

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

// ANCHOR: stats
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
}
// ANCHOR_END: stats

/// Sliding windows. A window closes when a reading at or past its end arrives.
#[derive(Debug)]
struct Sliding {
    spec: WindowSpec,
    /// Open windows by start, each with every value it holds, per key.
    open: BTreeMap<u64, BTreeMap<String, Vec<f64>>>,
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

    // ANCHOR: push
    /// Add `event` to every window that holds it; return the windows it
    /// closed, oldest first.
    fn push(&mut self, event: &Event) -> Vec<ClosedWindow> {
        let mut missed_one = false;
        for start in self.spec.starts_for(event.ts) {
            if start + self.spec.size <= self.closed_until {
                missed_one = true;
            } else {
                let window = self.open.entry(start).or_default();
                let values = window.entry(event.key.clone()).or_default();
                values.push(event.value);
            }
        }
        self.too_late += u64::from(missed_one);
        self.close_until(event.ts)
    }
    // ANCHOR_END: push

    /// Emit every open window that ends at or before `time`.
    fn close_until(&mut self, time: u64) -> Vec<ClosedWindow> {
        self.closed_until = self.closed_until.max(time);
        let mut closed = Vec::new();
        while let Some(oldest) = self.open.first_entry() {
            if *oldest.key() + self.spec.size > self.closed_until {
                break;
            }
            let (start, keys) = oldest.remove_entry();
            closed.push(ClosedWindow {
                start,
                end: start + self.spec.size,
                keys: keys
                    .into_iter()
                    .map(|(key, values)| (key, KeyStats::of(values)))
                    .collect(),
            });
        }
        closed
    }

    /// The stream has ended: emit every window still open.
    fn flush(&mut self) -> Vec<ClosedWindow> {
        self.close_until(u64::MAX - self.spec.size)
    }
}

// ANCHOR: process
/// What the processor counted besides windows.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    malformed: u64,
    too_late: u64,
}

/// Put each line in its window and send every window the moment it closes.
fn process(lines: Receiver<String>, spec: WindowSpec, windows: Sender<ClosedWindow>) -> Counts {
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
        size: 100,
        slide: 50,
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
        println!("  [{:>3}ms, {:>3}ms)", w.start, w.end);
        for (key, s) in &w.keys {
            println!(
                "    {key:<6} count {:>3} sum {:>7.1} min {:>4.1} max {:>4.1} p50 {:>4.1} p90 {:>4.1} p99 {:>4.1}",
                s.count, s.sum, s.min, s.max, s.p50, s.p90, s.p99
            );
        }
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

    fn reading(ts: u64, key: &str, value: f64) -> Event {
        Event {
            ts,
            key: key.into(),
            value,
        }
    }

    fn stats(values: &[f64]) -> KeyStats {
        KeyStats::of(values.to_vec())
    }

    #[test]
    fn percentiles_are_nearest_rank_on_the_sorted_values() {
        let one_to_hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = KeyStats::of(one_to_hundred);
        assert_eq!((s.count, s.sum, s.min, s.max), (100, 5050.0, 1.0, 100.0));
        assert_eq!((s.p50, s.p90, s.p99), (50.0, 90.0, 99.0));
        let ten = stats(&[7.0, 1.0, 3.0, 9.0, 5.0, 2.0, 8.0, 4.0, 10.0, 6.0]);
        assert_eq!((ten.p50, ten.p90, ten.p99), (5.0, 9.0, 10.0));
        let single = stats(&[4.5]);
        assert_eq!(
            (single.min, single.max, single.p50, single.p99),
            (4.5, 4.5, 4.5, 4.5)
        );
    }

    #[test]
    fn each_key_gets_its_own_numbers_in_each_overlapping_window() {
        let spec = WindowSpec {
            size: 100,
            slide: 50,
        };
        let mut s = Sliding::new(spec);
        s.push(&reading(10, "a", 1.0)); // [0, 100)
        s.push(&reading(20, "b", 10.0)); // [0, 100)
        s.push(&reading(60, "a", 3.0)); // [0, 100) and [50, 150)
        let closed = s.push(&reading(100, "b", 20.0)); // [50, 150), [100, 200)
        let first = ClosedWindow {
            start: 0,
            end: 100,
            keys: BTreeMap::from([
                ("a".to_owned(), stats(&[1.0, 3.0])),
                ("b".to_owned(), stats(&[10.0])),
            ]),
        };
        assert_eq!(closed, vec![first]);
        let rest = s.flush();
        assert_eq!(rest[0].start, 50);
        assert_eq!(rest[0].keys["a"], stats(&[3.0]));
        assert_eq!(rest[0].keys["b"], stats(&[20.0]));
        assert_eq!(rest[1].start, 100);
        assert_eq!(rest[1].keys.len(), 1, "only b has a reading in [100, 200)");
        assert_eq!((rest[0].keys["a"].sum, rest[0].keys["a"].p90), (3.0, 3.0));
    }

    #[test]
    fn the_keyed_counts_add_up_to_every_parsed_reading() {
        configure_for_tests();
        let (lines_tx, lines_rx) = bounded::channel(8);
        let (windows_tx, windows_rx) = bounded::channel(8);
        go!(move || generate(1_000, 50_000, 3, lines_tx));
        let spec = WindowSpec { size: 5, slide: 5 };
        let processor = go!(move || process(lines_rx, spec, windows_tx));
        let windows: Vec<ClosedWindow> = windows_rx.iter().collect();
        let counts = processor.join().unwrap();
        assert_eq!(
            counts,
            Counts {
                malformed: 20,
                too_late: 0
            }
        );
        let per_key = windows.iter().flat_map(|w| w.keys.values());
        assert_eq!(per_key.map(|s| s.count).sum::<u64>(), 980);
        for s in windows.iter().flat_map(|w| w.keys.values()) {
            assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
        }
    }
}
