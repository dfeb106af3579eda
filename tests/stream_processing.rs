//! End to end: run the finished `stream_processing` program as a user would.
//! A TCP client sends a scripted stream (in order, out of order within the
//! lateness, late, malformed, an over-long line), Ctrl-C stops the program,
//! and every window it printed is checked to the exact number; a quiet
//! source still gets its window closed; a generator run with `--duration`
//! ends by itself and its totals balance.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{json, Value};

mod support;
use support::{build_examples, interrupt, spawn_with_lines, wait_bounded};

const NAME: &str = "stream_processing";
const LIMIT: Duration = Duration::from_secs(20);

/// Start the program with `args`; its stdout and stderr lines arrive on
/// two channels, read by two threads so neither pipe can fill up.
fn start(args: &[&str]) -> (Child, Receiver<String>, Receiver<String>) {
    spawn_with_lines(Command::new(build_examples([NAME]).join(NAME)).args(args))
}

/// The next line that starts with `prefix`, waiting at most `LIMIT`.
fn line_starting(lines: &Receiver<String>, prefix: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if line.starts_with(prefix) {
            return line;
        }
    }
}

fn listening_addr(stderr: &Receiver<String>) -> String {
    let line = line_starting(stderr, "listening on ");
    line["listening on ".len()..].to_owned()
}

/// Every JSON object the program printed, once it has exited.
fn json_lines(stdout: &Receiver<String>) -> Vec<Value> {
    stdout
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A window's numbers for one key, as the program prints them.
fn stats(count: u64, sum: f64, min: f64, max: f64, p50: f64, p90: f64, p99: f64) -> Value {
    json!({"count": count, "sum": sum, "min": min, "max": max, "p50": p50, "p90": p90, "p99": p99})
}

#[test]
fn a_scripted_tcp_stream_gives_exact_windows_and_counts_late_and_malformed_lines() {
    let (mut child, stdout, stderr) = start(&[
        "--source",
        "tcp://127.0.0.1:0",
        "--json",
        "--window",
        "1s",
        "--lateness",
        "500ms",
        "--idle",
        "60s",
    ]);
    let mut client = TcpStream::connect(listening_addr(&stderr)).unwrap();
    let script = [
        r#"{"ts":100,"sensor":"a","value":1}"#,
        r#"{"ts":200,"sensor":"b","value":2}"#,
        "this is not json",
        r#"{"ts":900,"sensor":"a","value":3}"#,
        r#"{"ts":1200,"sensor":"a","value":10}"#, // watermark 700
        r#"{"ts":800,"sensor":"b","value":4}"#,   // out of order, in time
        r#"{"ts":1600,"sensor":"a","value":5}"#,  // watermark 1100: [0, 1000) closes
        r#"{"ts":950,"sensor":"b","value":7}"#,   // late for [0, 1000)
        r#"{"ts":1500,"value":1}"#,               // no key: malformed
        &"x".repeat(5000),                        // over-long: malformed
        r#"{"ts":2000,"sensor":"b","value":8}"#,  // watermark 1500
        r#"{"ts":1000,"sensor":"b","value":6}"#,  // exactly at [1000, 2000)'s start
    ];
    for line in script {
        writeln!(client, "{line}").unwrap();
    }
    drop(client);
    let ended = line_starting(&stderr, "connection from");
    assert!(
        ended.ends_with("ended (closed by the client): 12 lines, 3 malformed"),
        "{ended}"
    );
    interrupt(&child);
    let status = wait_bounded(&mut child, LIMIT);
    assert!(status.success(), "exit status {status}");

    let out = json_lines(&stdout);
    let expected = [
        json!({"start": 0, "end": 1000, "flushed": false, "keys": {
            "a": stats(2, 4.0, 1.0, 3.0, 1.0, 3.0, 3.0),
            "b": stats(2, 6.0, 2.0, 4.0, 2.0, 4.0, 4.0),
        }}),
        json!({"start": 1000, "end": 2000, "flushed": true, "keys": {
            "a": stats(2, 15.0, 5.0, 10.0, 5.0, 10.0, 10.0),
            "b": stats(1, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0),
        }}),
        json!({"start": 2000, "end": 3000, "flushed": true, "keys": {
            "b": stats(1, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0),
        }}),
    ];
    assert_eq!(out[..3], expected[..], "{out:#?}");
    assert_eq!(out.len(), 4, "three windows and the totals: {out:#?}");
    let totals = &out[3]["totals"];
    assert_eq!(
        *totals,
        json!({"events": 9, "malformed": 3, "late": 1, "dropped": 0, "windows": 3,
               "flushed_windows": 2, "late_by_window": [[0, 1000, 1]]}),
    );
}

#[test]
fn a_quiet_source_still_gets_its_window_closed() {
    let (mut child, stdout, stderr) = start(&[
        "--source",
        "tcp://127.0.0.1:0",
        "--json",
        "--window",
        "100ms",
        "--lateness",
        "50ms",
        "--idle",
        "200ms",
    ]);
    let mut client = TcpStream::connect(listening_addr(&stderr)).unwrap();
    writeln!(client, r#"{{"ts":10,"sensor":"a","value":2.5}}"#).unwrap();
    // No more events, the connection still open: the watermark must move on
    // with the wall clock and close [0, 100) without a flush.
    let window: Value = serde_json::from_str(&line_starting(&stdout, "{")).unwrap();
    assert_eq!(window["flushed"], false, "{window}");
    assert_eq!(window["keys"]["a"]["count"], 1, "{window}");
    interrupt(&child);
    assert!(wait_bounded(&mut child, LIMIT).success());
    drop(client);
}

#[test]
fn a_generator_run_with_a_duration_ends_by_itself_and_balances() {
    let (mut child, stdout, _stderr) = start(&[
        "--rate",
        "5000",
        "--duration",
        "1500ms",
        "--window",
        "200ms",
        "--lateness",
        "100ms",
        "--late-every",
        "40",
        "--json",
    ]);
    let status = wait_bounded(&mut child, LIMIT);
    assert!(status.success(), "exit status {status}");
    let out = json_lines(&stdout);
    let (totals, windows) = out.split_last().unwrap();
    let totals = &totals["totals"];
    let n = |key: &str| totals[key].as_u64().unwrap();
    assert!(n("events") > 1000, "{totals}");
    assert_eq!((n("malformed"), n("dropped")), (0, 0), "{totals}");
    assert!(n("late") > 0, "one in 40 is held back: {totals}");
    assert_eq!(n("windows"), windows.len() as u64);
    let windowed: u64 = windows
        .iter()
        .flat_map(|w| w["keys"].as_object().unwrap().values())
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    // Tumbling windows: every event is in exactly one window, or late for it.
    assert_eq!(windowed + n("late"), n("events"), "{totals}");
    let late_by_window: u64 = totals["late_by_window"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[2].as_u64().unwrap())
        .sum();
    assert_eq!(late_by_window, n("late"));
}

#[test]
fn an_address_it_cannot_listen_on_is_one_sentence_and_a_failure() {
    let (mut child, _stdout, stderr) = start(&["--source", "tcp://999.1.1.1:80"]);
    let status = wait_bounded(&mut child, LIMIT);
    assert!(!status.success(), "it must fail: {status}");
    let said: Vec<String> = stderr.iter().collect(); // the pipe closed at exit
    assert_eq!(said.len(), 1, "one sentence, not a dump: {said:?}");
    assert!(
        said[0].starts_with("stream_processing: cannot listen on 999.1.1.1:80: "),
        "{said:?}"
    );
}
