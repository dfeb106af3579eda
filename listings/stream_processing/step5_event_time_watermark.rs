//! Step 5: event time versus processing time. Readings now arrive out of
//! order (a few ms of jitter) and a few arrive far too late. A window can no
//! longer close at the first reading past its end: it closes when the
//! *watermark*, the newest event time seen minus the allowed lateness, passes
//! its end. A reading for a window that has already closed is late: it is
//! counted per window, never silently dropped. When the source goes quiet, the
//! watermark moves on with the wall clock, so the last windows still close.
//!
//! Run it: `cargo run --example step5_event_time_watermark`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use may::go;
use may_patterns::bounded::{self, Receiver, RecvTimeoutError, Sender};
use may_patterns::runtime::{configure_once, Settings};

/// The sensors the generator spreads its readings over.
const SENSORS: [&str; 4] = ["boiler", "intake", "pump", "vent"];
/// One line in this many is broken on purpose.
const MALFORMED_EVERY: u64 = 50;

// ANCHOR: generate
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
// ANCHOR_END: generate

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

// ANCHOR: windower
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
// ANCHOR_END: windower

// ANCHOR: process
/// What the processor counted besides windows.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    malformed: u64,
    late: u64,
    late_by_window: BTreeMap<u64, u64>,
}

/// Put each line in its windows and send every window the moment it closes.
/// When no line has come for `idle`, move the watermark by the quiet time.
fn process(
    lines: Receiver<String>,
    mut windower: Windower,
    idle: Duration,
    windows: Sender<ClosedWindow>,
) -> Counts {
    let mut counts = Counts::default();
    let mut last_arrival = Instant::now();
    loop {
        let closed = match lines.recv_timeout(idle) {
            Ok(line) => {
                last_arrival = Instant::now();
                match parse_event(&line) {
                    Some(event) => windower.push(&event),
                    None => {
                        counts.malformed += 1;
                        continue;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => windower.advance_idle(last_arrival.elapsed()),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for window in closed {
            windows.send(window).expect("main prints every window");
        }
    }
    for window in windower.flush() {
        windows.send(window).expect("main prints every window");
    }
    counts.late = windower.late;
    counts.late_by_window = windower.late_by_window;
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
        slide: 50,
    };
    let (lateness, idle) = (20, Duration::from_millis(100));
    let (lines_tx, lines_rx) = bounded::channel(64);
    let (windows_tx, windows_rx) = bounded::channel(16);
    go!(move || generate(count, rate, 7, lines_tx));
    let windower = Windower::new(spec, lateness);
    let processor = go!(move || process(lines_rx, windower, idle, windows_tx));
    println!(
        "{count} readings at {rate}/s, up to {JITTER_MS}ms out of order, one in {HELD_UP_EVERY} held up {HELD_UP_MS}ms;"
    );
    println!("windows of {}ms, allowed lateness {lateness}ms:", spec.size);
    for w in windows_rx {
        let counts: Vec<String> = w
            .keys
            .iter()
            .map(|(k, s)| format!("{k} {}", s.count))
            .collect();
        let how = if w.flushed {
            "flushed at the end"
        } else {
            "watermark passed"
        };
        println!(
            "  [{:>3}ms, {:>3}ms) {} ({how})",
            w.start,
            w.end,
            counts.join(", ")
        );
    }
    let counts = processor.join().unwrap();
    println!("malformed {}, late {}:", counts.malformed, counts.late);
    for (start, late) in &counts.late_by_window {
        println!("  [{start:>3}ms, {:>3}ms) missed {late}", start + spec.size);
    }
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

    const TUMBLING_1S: WindowSpec = WindowSpec {
        size: 1000,
        slide: 1000,
    };

    /// One closed window, keys given as `(key, values)`.
    fn window(start: u64, end: u64, keys: &[(&str, &[f64])], flushed: bool) -> ClosedWindow {
        ClosedWindow {
            start,
            end,
            keys: keys
                .iter()
                .map(|(k, values)| (k.to_string(), stats(values)))
                .collect(),
            flushed,
        }
    }

    #[test]
    fn in_order_readings_close_a_window_once_the_watermark_reaches_its_end() {
        let mut w = Windower::new(TUMBLING_1S, 500);
        assert!(w.push(&reading(100, "a", 1.0)).is_empty());
        assert!(w.push(&reading(900, "a", 3.0)).is_empty());
        assert!(w.push(&reading(1000, "b", 5.0)).is_empty(), "watermark 500");
        assert!(w.push(&reading(1499, "b", 6.0)).is_empty(), "watermark 999");
        let closed = w.push(&reading(1500, "a", 7.0)); // watermark 1000 = end
        assert_eq!(closed, vec![window(0, 1000, &[("a", &[1.0, 3.0])], false)]);
        assert_eq!(
            w.flush(),
            vec![window(
                1000,
                2000,
                &[("a", &[7.0]), ("b", &[5.0, 6.0])],
                true
            )]
        );
        assert_eq!(w.late, 0);
    }

    #[test]
    fn out_of_order_within_lateness_still_counts_and_beyond_it_is_late() {
        let mut w = Windower::new(TUMBLING_1S, 500);
        w.push(&reading(200, "a", 2.0));
        w.push(&reading(1200, "a", 10.0)); // watermark 700
        assert!(
            w.push(&reading(800, "b", 4.0)).is_empty(),
            "400 ms out of order: in time"
        );
        let closed = w.push(&reading(1600, "a", 5.0)); // watermark 1100
        assert_eq!(
            closed,
            vec![window(0, 1000, &[("a", &[2.0]), ("b", &[4.0])], false)]
        );
        assert!(
            w.push(&reading(950, "b", 7.0)).is_empty(),
            "its window is closed"
        );
        assert!(w.push(&reading(999, "a", 1.0)).is_empty());
        assert_eq!(
            (w.late, w.late_by_window.clone()),
            (2, BTreeMap::from([(0, 2)]))
        );
        assert_eq!(
            w.flush(),
            vec![window(1000, 2000, &[("a", &[10.0, 5.0])], true)]
        );
    }

    #[test]
    fn a_jump_in_event_time_closes_several_windows_in_order() {
        let mut w = Windower::new(TUMBLING_1S, 500);
        w.push(&reading(10, "a", 1.0));
        w.push(&reading(1010, "a", 2.0));
        w.push(&reading(1020, "b", 3.0));
        let closed = w.push(&reading(5000, "a", 4.0)); // watermark 4500
        assert_eq!(
            closed,
            vec![
                window(0, 1000, &[("a", &[1.0])], false),
                window(1000, 2000, &[("a", &[2.0]), ("b", &[3.0])], false),
            ],
            "empty windows 2000..5000 are not emitted"
        );
        // A window that closed empty still counts late readings.
        w.push(&reading(3500, "c", 9.0));
        assert_eq!(w.late_by_window, BTreeMap::from([(3000, 1)]));
    }

    #[test]
    fn sliding_windows_close_one_by_one_and_a_reading_can_be_late_for_some_of_them() {
        let spec = WindowSpec {
            size: 1000,
            slide: 500,
        };
        let mut w = Windower::new(spec, 100);
        w.push(&reading(400, "a", 1.0)); // [0, 1000)
        w.push(&reading(700, "a", 2.0)); // [0, 1000) and [500, 1500)
        let closed = w.push(&reading(1100, "a", 3.0)); // watermark 1000
        assert_eq!(closed, vec![window(0, 1000, &[("a", &[1.0, 2.0])], false)]);
        // 900 belongs to [0, 1000) (closed: late) and [500, 1500) (open).
        assert!(w.push(&reading(900, "b", 8.0)).is_empty());
        assert_eq!(
            (w.late, w.late_by_window.clone()),
            (1, BTreeMap::from([(0, 1)]))
        );
        let closed = w.push(&reading(1600, "a", 4.0)); // watermark 1500
        assert_eq!(
            closed,
            vec![window(
                500,
                1500,
                &[("a", &[2.0, 3.0]), ("b", &[8.0])],
                false
            )]
        );
        assert_eq!(
            w.flush(),
            vec![
                window(1000, 2000, &[("a", &[3.0, 4.0])], true),
                window(1500, 2500, &[("a", &[4.0])], true),
            ]
        );
    }

    #[test]
    fn a_quiet_source_moves_the_watermark_with_the_wall_clock() {
        let mut w = Windower::new(TUMBLING_1S, 500);
        assert!(
            w.advance_idle(Duration::from_secs(9)).is_empty(),
            "nothing seen yet"
        );
        w.push(&reading(1800, "a", 1.0));
        assert!(
            w.advance_idle(Duration::from_millis(699)).is_empty(),
            "watermark 1999"
        );
        assert_eq!(
            w.advance_idle(Duration::from_millis(700)),
            vec![window(1000, 2000, &[("a", &[1.0])], false)]
        );
        // The watermark stays where the quiet time moved it.
        w.push(&reading(1900, "a", 2.0));
        assert_eq!((w.late, w.watermark), (1, 2000));
    }

    #[test]
    fn the_processor_closes_windows_while_the_source_is_quiet() {
        configure_for_tests();
        let (lines_tx, lines_rx) = bounded::channel(8);
        let (windows_tx, windows_rx) = bounded::channel(8);
        let windower = Windower::new(TUMBLING_1S, 500);
        let idle = Duration::from_millis(50);
        go!(move || process(lines_rx, windower, idle, windows_tx));
        lines_tx
            .send(r#"{"ts":100,"sensor":"a","value":1}"#.into())
            .unwrap();
        // No more lines, the sender still open: after ~1.4 s of quiet the
        // watermark passes 1000 and the window closes without a flush.
        let first = windows_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first, window(0, 1000, &[("a", &[1.0])], false));
        drop(lines_tx);
        assert!(
            windows_rx.recv_timeout(Duration::from_secs(10)).is_err(),
            "nothing left"
        );
    }

    #[test]
    fn the_generated_stream_balances() {
        configure_for_tests();
        let (lines_tx, lines_rx) = bounded::channel(8);
        let (windows_tx, windows_rx) = bounded::channel(8);
        go!(move || generate(2_000, 50_000, 7, lines_tx));
        let windower = Windower::new(WindowSpec { size: 5, slide: 5 }, 2);
        let processor =
            go!(move || process(lines_rx, windower, Duration::from_secs(5), windows_tx));
        let windows: Vec<ClosedWindow> = windows_rx.iter().collect();
        let counts = processor.join().unwrap();
        let windowed: u64 = windows
            .iter()
            .flat_map(|w| w.keys.values())
            .map(|s| s.count)
            .sum();
        assert_eq!(counts.malformed, 40);
        assert!(counts.late > 0, "some held-up readings are late");
        // Tumbling: a reading is in exactly one window or late for it.
        assert_eq!(windowed + counts.late, 2_000 - 40);
        assert_eq!(counts.late_by_window.values().sum::<u64>(), counts.late);
        assert!(windows.iter().any(|w| w.flushed) && windows.iter().any(|w| !w.flushed));
    }
}
