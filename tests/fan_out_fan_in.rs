//! End-to-end: the finished `fan_out_fan_in` program, run as a user would,
//! with its command-line flags; results read from `--print` and `--json`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

fn binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| support::build_examples(["fan_out_fan_in"]).join("fan_out_fan_in"))
}

fn run(args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    support::output_bounded(command.args(args), Duration::from_secs(60))
}

/// `--print` lines (`index worker outcome`) and the JSON summary (last line).
fn results_and_report(out: &Output) -> (Vec<(usize, String)>, serde_json::Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    let report = serde_json::from_str(lines.pop().expect("a summary line")).expect("JSON");
    let results = lines
        .iter()
        .map(|l| {
            let mut words = l.splitn(3, ' ');
            let index = words.next().unwrap().parse().unwrap();
            let _worker = words.next().unwrap();
            (index, words.next().unwrap().to_owned())
        })
        .collect();
    (results, report)
}

#[test]
fn every_strategy_emits_each_result_exactly_once() {
    for strategy in ["shared", "round-robin", "least-loaded"] {
        let out = run(&[
            "--tasks",
            "300",
            "--workers",
            "6",
            "--task-us",
            "200",
            "--strategy",
            strategy,
            "--skew",
            "0.2",
            "--print",
            "--json",
        ]);
        assert!(out.status.success(), "{strategy}: {out:?}");
        let (results, report) = results_and_report(&out);
        let indices: BTreeSet<usize> = results.iter().map(|(i, _)| *i).collect();
        assert_eq!(results.len(), 300, "{strategy}: one line per task");
        assert_eq!(indices, (0..300).collect(), "{strategy}: each index once");
        assert!(results.iter().all(|(_, o)| o.starts_with("Ok(")));
        assert_eq!(report["ok"], 300);
        assert_eq!(report["coroutines_left"], 0);
    }
}

#[test]
fn ordered_mode_prints_results_in_input_order() {
    let out = run(&[
        "--tasks",
        "400",
        "--workers",
        "16",
        "--task-us",
        "300",
        "--skew",
        "0.05",
        "--ordered",
        "--window",
        "12",
        "--print",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (results, report) = results_and_report(&out);
    let indices: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..400).collect::<Vec<_>>());
    let held = report["reorder_high_water"].as_u64().unwrap();
    assert!(held <= 12, "the window bounds the buffer: {held}");
}

#[test]
fn fail_fast_stops_the_batch_and_exits_non_zero() {
    let out = run(&[
        "--tasks",
        "5000",
        "--workers",
        "4",
        "--task-us",
        "500",
        "--fail-at",
        "20",
        "--fail-fast",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (_, report) = results_and_report(&out);
    let count = |field: &str| report[field].as_u64().unwrap();
    let ran = count("ok") + count("failed");
    assert_eq!(count("failed"), 1);
    assert!(ran < 500, "the rest did not run: {report}");
    assert_eq!(ran + count("skipped") + count("not_dispatched"), 5000);
    assert_eq!(report["first_error"], "task 20 failed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 task(s) failed"));
}

#[test]
fn collect_mode_runs_everything_and_reports_the_failures() {
    let out = run(&[
        "--tasks",
        "200",
        "--workers",
        "8",
        "--task-us",
        "100",
        "--fail-at",
        "5,150",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let (_, report) = results_and_report(&out);
    assert_eq!(
        (report["ok"].as_u64(), report["failed"].as_u64()),
        (Some(198), Some(2))
    );
    assert_eq!(report["skipped"], 0);
}

#[test]
fn a_dynamic_pool_scales_within_its_bounds() {
    let out = run(&[
        "--min-workers",
        "2",
        "--max-workers",
        "12",
        "--tasks",
        "600",
        "--task-us",
        "1000",
        "--scale-up-at",
        "4",
        "--idle",
        "5ms",
        "--burst",
        "200",
        "--gap",
        "60ms",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (_, report) = results_and_report(&out);
    let count = |field: &str| report[field].as_u64().unwrap();
    assert_eq!(count("ok"), 600);
    assert_eq!(count("peak_workers"), 12, "{report}");
    assert!((2..12).contains(&count("low_workers")), "{report}");
    assert!(count("retired") > 0, "{report}");
    assert_eq!(count("coroutines_left"), 0);
}

#[test]
fn impossible_command_lines_are_refused_with_a_reason() {
    for (args, needle) in [
        (&["--workers", "0"][..], "--workers must be at least 1"),
        (
            &["--min-workers", "5", "--max-workers", "2"],
            "--min-workers",
        ),
        (
            &["--max-workers", "4", "--strategy", "round-robin"],
            "--strategy shared",
        ),
        (&["--tasks", "10", "--fail-at", "10"], "--fail-at 10"),
        (
            &["--workers", "2", "--max-workers", "4"],
            "cannot be used with",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing ran: {args:?}");
    }
}
