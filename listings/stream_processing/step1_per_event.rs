//! Step 1: per-event processing. A generator coroutine produces readings as
//! lines of JSON at a fixed rate; a processor coroutine parses each line, finds
//! its key and keeps a running count per key. A line it cannot parse is
//! counted as malformed, never silently dropped.
//!
//! Run it: `cargo run --example step1_per_event`

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

// ANCHOR: process
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

/// What the processor has seen so far.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    per_key: BTreeMap<String, u64>,
    malformed: u64,
}

/// Handle each line as it arrives: parse it and count it under its key.
fn process(lines: Receiver<String>) -> Counts {
    let mut counts = Counts::default();
    for line in lines {
        match parse_event(&line) {
            Some(event) => *counts.per_key.entry(event.key).or_default() += 1,
            None => counts.malformed += 1,
        }
    }
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
    let (tx, rx) = bounded::channel(64);
    let started = Instant::now();
    let generator = go!(move || generate(count, rate, 7, tx));
    let processor = go!(move || process(rx));
    generator.join().unwrap();
    let counts = processor.join().unwrap();
    let elapsed = started.elapsed();
    println!("{count} lines at {rate}/s, processed one by one in {elapsed:.1?}:");
    for (key, n) in &counts.per_key {
        println!("  {key:<7} {n}");
    }
    println!("  malformed {}", counts.malformed);
    println!(
        "achieved ~{:.0} lines/s",
        count as f64 / elapsed.as_secs_f64()
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_reading_parses_back_and_every_fiftieth_is_malformed() {
        let mut rng = fastrand::Rng::with_seed(1);
        let line = reading(3, 1000, &mut rng);
        let event = parse_event(&line).unwrap();
        assert_eq!(event.ts, 3);
        assert!(SENSORS.contains(&event.key.as_str()));
        assert!(parse_event(&reading(49, 1000, &mut rng)).is_none());
    }

    #[test]
    fn lines_without_a_field_or_not_json_are_malformed() {
        assert_eq!(parse_event(r#"{"ts":1,"sensor":"a"}"#), None);
        assert_eq!(parse_event(r#"{"ts":-1,"sensor":"a","value":1}"#), None);
        assert_eq!(parse_event("hello"), None);
        assert_eq!(
            parse_event(r#"{"ts":5,"sensor":"a","value":2.5}"#),
            Some(Event {
                ts: 5,
                key: "a".into(),
                value: 2.5
            })
        );
    }

    #[test]
    fn every_line_is_counted_once_as_a_key_or_as_malformed() {
        configure_for_tests();
        let (tx, rx) = bounded::channel(8);
        let generator = go!(move || generate(500, 50_000, 3, tx));
        let counts = go!(move || process(rx)).join().unwrap();
        generator.join().unwrap();
        assert_eq!(counts.malformed, 10);
        assert_eq!(counts.per_key.values().sum::<u64>(), 490);
        assert_eq!(counts.per_key.len(), SENSORS.len());
    }

    #[test]
    fn the_generator_keeps_its_rate() {
        configure_for_tests();
        let (tx, rx) = bounded::channel(8);
        let started = Instant::now();
        go!(move || generate(100, 1_000, 3, tx));
        let counts = go!(move || process(rx)).join().unwrap();
        // 100 readings at 1000/s: the last is due after 99 ms.
        assert!(started.elapsed() >= Duration::from_millis(98));
        assert_eq!(counts.per_key.values().sum::<u64>() + counts.malformed, 100);
    }
}
