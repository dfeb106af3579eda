//! End-to-end: the finished `scatter_gather` program against its demo
//! backends and against `search_backend` processes, as a user runs them.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn examples() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["scatter_gather", "search_backend"]))
}

/// Run `scatter_gather` with `args`, bounded in time.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(examples().join("scatter_gather"));
    support::output_bounded(command.args(args), Duration::from_secs(30))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn statuses(report: &serde_json::Value) -> Vec<String> {
    report["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_demo_marks_a_partial_answer_and_merges_what_arrived() {
    let out = run(&["--demo", "6", "--timeout", "300ms", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report = json(&out);
    assert_eq!(report["complete"], false);
    assert_eq!(report["answered"], 4);
    let s = statuses(&report);
    assert_eq!(s[4], "failed");
    assert_eq!(s[5], "timed_out");
    assert!(
        report["elapsed_ms"].as_f64().unwrap() >= 290.0,
        "waited for the deadline"
    );
    let products = report["products"].as_array().unwrap();
    let mut skus: Vec<&str> = products
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    let offered: u64 = products
        .iter()
        .map(|p| p["offered_by"].as_u64().unwrap())
        .sum();
    assert_eq!(offered, 12, "4 backends x 3 offers, each counted once");
    skus.sort_unstable();
    skus.dedup();
    assert_eq!(skus.len(), products.len(), "each product once");
}

#[test]
fn a_quorum_answers_before_the_deadline_and_cancels_the_rest() {
    let out = run(&["--demo", "6", "--timeout", "2s", "--quorum", "2", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report = json(&out);
    assert_eq!(report["answered"], 2);
    assert!(report["elapsed_ms"].as_f64().unwrap() < 1000.0, "{report}");
    assert!(statuses(&report).iter().any(|s| s == "cancelled"));
}

/// Start a `search_backend` process; returns it and the address it printed.
fn backend(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(examples().join("search_backend"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("search_backend starts");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{first}");
    (child, addr)
}

#[test]
fn it_queries_backend_processes_and_hedges_a_slow_one() {
    let (mut fast, a) = backend(&["--name", "fast", "--latency", "2ms"]);
    let (mut slow, b) = backend(&[
        "--name",
        "tail",
        "--latency",
        "2ms",
        "--slow",
        "1",
        "--slow-latency",
        "5s",
    ]);
    let list = format!("{a},{b}");
    let out = run(&[
        "--backends",
        &list,
        "--timeout",
        "1s",
        "--hedge-after",
        "20ms",
        "--json",
    ]);
    // Every request to `tail` is slow, so the hedge is slow too: the answer
    // is partial, `tail` timed out after being hedged.
    assert!(out.status.success(), "{out:?}");
    let report = json(&out);
    assert_eq!(statuses(&report), ["answered", "timed_out"]);
    assert_eq!(report["backends"][1]["hedged"], true);
    assert_eq!(report["hedges"], 1);
    for child in [&mut fast, &mut slow] {
        support::interrupt(child);
        assert!(support::wait_bounded(child, Duration::from_secs(10)).success());
    }
}

#[test]
fn when_no_backend_answers_the_exit_status_says_so() {
    // Nothing listens on a port that was just released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(&["--backends", &dead.to_string(), "--timeout", "500ms"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed: connect"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 of 1 backends answered"));
}

#[test]
fn bad_command_lines_are_refused_with_a_reason() {
    for (args, needle) in [
        (
            &["--demo", "3", "--quorum", "0"][..],
            "--quorum must be between 1",
        ),
        (
            &["--demo", "3", "--quorum", "4"],
            "--quorum must be between 1",
        ),
        (&["--demo", "3", "--query", "a b"], "--query must be"),
        (&["--backends", "localhost:80"], "invalid socket address"),
        (&["--timeout", "200ms"], "--backends"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
