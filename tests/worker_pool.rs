//! End-to-end: the finished `worker_pool` program, run as a user runs it,
//! on short bursty traces.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

fn program() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["worker_pool"]))
        .join("worker_pool")
}

fn run(args: &[&str]) -> Output {
    let mut command = Command::new(program());
    support::output_bounded(command.args(args), Duration::from_secs(60))
}

/// Three bursts of 200 jobs, 300 ms apart, on 2 to 24 workers that retire
/// after 50 ms idle: long enough between bursts for the pool to shrink.
const BURSTY: &[&str] = &[
    "--jobs",
    "600",
    "--burst",
    "200",
    "--gap",
    "300ms",
    "--idle",
    "50ms",
    "--io-wait",
    "5ms",
    "--cpu-work",
    "20000",
];
const DYNAMIC: &[&str] = &["--min", "2", "--max", "24"];
const FIXED: &[&str] = &["--min", "8", "--max", "8"];

struct Runs {
    json: Value,
    text: String,
    svg: String,
    fixed: Value,
}

fn json(out: Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The bursty trace as JSON (drawing the SVG), as text, and on a fixed
/// pool, run at the same time so the test takes one run's time.
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("run.svg");
        let svg_arg = svg.to_str().unwrap().to_owned();
        let (with_json, as_text, fixed) = std::thread::scope(|s| {
            let with_json =
                s.spawn(|| run(&[BURSTY, DYNAMIC, &["--json", "--svg", &svg_arg]].concat()));
            let as_text = s.spawn(|| run(&[BURSTY, DYNAMIC].concat()));
            let fixed = s.spawn(|| run(&[BURSTY, FIXED, &["--json"]].concat()));
            (
                with_json.join().unwrap(),
                as_text.join().unwrap(),
                fixed.join().unwrap(),
            )
        });
        assert!(as_text.status.success(), "{as_text:?}");
        Runs {
            json: json(with_json),
            text: String::from_utf8(as_text.stdout).unwrap(),
            svg: std::fs::read_to_string(&svg).unwrap(),
            fixed: json(fixed),
        }
    })
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn every_job_completes_and_the_mix_is_exact() {
    let summary = &runs().json;
    assert_eq!(u64_at(summary, "completed"), 600);
    assert_eq!(u64_at(summary, "panicked"), 0);
    assert_eq!(u64_at(summary, "io_jobs"), 450, "3:1 of 600");
    assert_eq!(u64_at(summary, "cpu_jobs"), 150);
    assert_eq!(summary["bursts"].as_array().unwrap().len(), 3);
    assert_eq!(u64_at(&summary["queue_wait"], "samples"), 600);
    // An I/O job waits 5 ms on the alarm: never less.
    assert!(
        summary["ran_io"]["p50_ms"].as_f64().unwrap() >= 5.0,
        "{summary}"
    );
}

#[test]
fn the_dynamic_pool_grows_with_a_burst_and_shrinks_between_bursts() {
    let summary = &runs().json;
    assert!(u64_at(summary, "grew") >= 1, "{summary}");
    assert!(u64_at(summary, "shrank") >= 1, "{summary}");
    let workers = &summary["workers"];
    assert!(u64_at(workers, "min") >= 2, "{workers}");
    assert!(u64_at(workers, "max") > u64_at(workers, "min"), "{workers}");
    assert!(u64_at(workers, "max") <= 24, "{workers}");
    for event in summary["events"].as_array().unwrap() {
        let after = u64_at(event, "workers");
        assert!((2..=24).contains(&after), "{event}");
    }
    assert!(!summary["timeline"].as_array().unwrap().is_empty());
}

#[test]
fn a_fixed_pool_never_scales() {
    let fixed = &runs().fixed;
    assert_eq!(u64_at(fixed, "completed"), 600);
    assert_eq!((u64_at(fixed, "grew"), u64_at(fixed, "shrank")), (0, 0));
    let workers = &fixed["workers"];
    assert_eq!((u64_at(workers, "min"), u64_at(workers, "max")), (8, 8));
    // The same jobs from the same seed, whoever ran them.
    assert_eq!(fixed["checksum"], runs().json["checksum"]);
}

#[test]
fn the_text_summary_names_every_figure() {
    let text = &runs().text;
    assert!(text.contains("completed 600, panicked 0"), "{text}");
    for label in [
        "queue wait  p50 ",
        "ran (io)    p50 ",
        "ran (cpu)   p50 ",
        "workers     min ~",
    ] {
        assert!(text.contains(label), "{label}: {text}");
    }
    assert!(text.contains("  grew   at "), "{text}");
    assert!(text.contains("  shrank at "), "{text}");
}

#[test]
fn the_svg_is_well_formed_with_both_series_and_a_mark_per_burst() {
    let svg = &runs().svg;
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    let class = |name: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(name))
            .collect::<Vec<_>>()
    };
    for series in ["workers", "queued"] {
        let line = class(series);
        assert_eq!(line.len(), 1, "{series}");
        let points = line[0].attribute("points").unwrap();
        assert!(points.split(' ').count() >= 4, "{series}: {points}");
    }
    assert_eq!(class("burst").len(), 3);
    // Readable on a light and a dark page: the theme's text colour only.
    let lower = svg.to_lowercase();
    assert!(!lower.contains("#000") && !lower.contains("black"), "{svg}");
    assert!(!svg.contains("\n\n"), "no blank line inside the HTML block");
}

#[test]
fn fork_join_cpu_jobs_compute_what_the_workers_compute() {
    let steal = [BURSTY, DYNAMIC, &["--steal", "--json"]].concat();
    let shared_queue = [&steal[..], &["--shared-queue"]].concat();
    let (stealing, shared) = std::thread::scope(|s| {
        let stealing = s.spawn(|| json(run(&steal)));
        let shared = s.spawn(|| json(run(&shared_queue)));
        (stealing.join().unwrap(), shared.join().unwrap())
    });
    assert_eq!(stealing["cpu"], "fork-join, stealing");
    assert_eq!(shared["cpu"], "fork-join, shared queue");
    for summary in [&stealing, &shared] {
        assert_eq!(u64_at(summary, "completed"), 600);
        assert_eq!(summary["checksum"], runs().json["checksum"], "{summary}");
    }
}

#[test]
fn a_panicking_job_is_counted_and_the_rest_complete() {
    let summary = json(run(&[
        "--jobs",
        "200",
        "--burst",
        "100",
        "--gap",
        "10ms",
        "--panic-every",
        "50",
        "--json",
    ]));
    assert_eq!(u64_at(&summary, "panicked"), 4);
    assert_eq!(u64_at(&summary, "completed"), 196);
}

#[test]
fn bad_flags_exit_2_with_one_sentence() {
    let cases: [(&[&str], &str); 5] = [
        (&["--min", "8", "--max", "4"], "--min 8"),
        (&["--queue", "0"], "--queue"),
        (&["--mix", "io:x"], "`io` in `io:x` is not a whole number"),
        (&["--mix", "0:0"], "one side must be above 0"),
        (&["--shared-queue"], "--steal"),
    ];
    for (args, sentence) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{args:?}: {stderr}");
        assert!(first.contains(sentence), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing runs");
    }
}
