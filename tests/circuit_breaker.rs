//! End-to-end: the finished `circuit_breaker` program, run as a user runs
//! it, through a short outage of its built-in backend.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

fn program() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["circuit_breaker"]))
        .join("circuit_breaker")
}

fn run(args: &[&str]) -> Output {
    let mut command = Command::new(program());
    support::output_bounded(command.args(args), Duration::from_secs(60))
}

/// One second healthy, two failing, one and a half recovering, with the
/// breaker open for half a second at a time. The attempt timeout and the
/// slow-call threshold are long, so a busy machine that stalls the program
/// for a moment does not trip the breaker while the backend is healthy.
const OUTAGE: &[&str] = &[
    "--phases",
    "healthy:1s,failing:2s,recovering:1500ms",
    "--open-for",
    "500ms",
    "--interval",
    "250ms",
    "--timeout",
    "1s",
    "--slow-call",
    "5s",
    "--json",
];

struct Runs {
    breaker: Value,
    no_breaker: Value,
    svg: String,
}

/// The outage with the breaker (drawing the SVG) and without it, run at the
/// same time so the test takes one run's time.
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("timeline.svg");
        let svg_arg = svg.to_str().unwrap().to_owned();
        let json = |out: Output| -> Value {
            assert!(out.status.success(), "{out:?}");
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
        };
        let (breaker, no_breaker) = std::thread::scope(|s| {
            let with = s.spawn(|| run(&[OUTAGE, &["--svg", &svg_arg]].concat()));
            let without = s.spawn(|| run(&[OUTAGE, &["--no-breaker"]].concat()));
            (with.join().unwrap(), without.join().unwrap())
        });
        Runs {
            breaker: json(breaker),
            no_breaker: json(no_breaker),
            svg: std::fs::read_to_string(&svg).unwrap(),
        }
    })
}

fn transitions(timeline: &Value) -> Vec<(String, String, String, f64)> {
    timeline["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_owned(),
                t["to"].as_str().unwrap().to_owned(),
                t["phase"].as_str().unwrap().to_owned(),
                t["into_phase_ms"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// (calls, attempts sent) over the rows of `phase`.
fn phase_totals(timeline: &Value, phase: &str) -> (u64, u64) {
    let rows = timeline["rows"].as_array().unwrap();
    rows.iter()
        .filter(|row| row["phase"] == phase)
        .fold((0, 0), |(calls, sent), row| {
            (
                calls + row["calls"].as_u64().unwrap(),
                sent + row["sent"].as_u64().unwrap(),
            )
        })
}

#[test]
fn the_breaker_opens_while_failing_and_closes_once_recovering() {
    let timeline = &runs().breaker;
    let changes = transitions(timeline);
    let (from, to, phase, _) = &changes[0];
    assert_eq!(
        (from.as_str(), to.as_str(), phase.as_str()),
        ("closed", "open", "failing"),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|(from, to, phase, _)| from == "open" && to == "half-open" && phase == "failing"),
        "probes while failing: {changes:?}"
    );
    assert!(
        !changes
            .iter()
            .any(|(_, to, phase, _)| to == "closed" && phase == "failing"),
        "{changes:?}"
    );
    let (from, to, phase, into_phase_ms) = changes.last().unwrap();
    assert_eq!(
        (from.as_str(), to.as_str(), phase.as_str()),
        ("half-open", "closed", "recovering"),
        "{changes:?}"
    );
    // Open for 500 ms at most after the backend recovers, then one round of
    // probes (10 ms each); loose, for a busy machine.
    assert!(
        *into_phase_ms < 1500.0,
        "closed {into_phase_ms} ms into recovery"
    );
    assert_eq!(
        timeline["backend_requests"].as_u64(),
        timeline["sent"].as_u64(),
        "every attempt the callers count reached the backend"
    );
}

#[test]
fn while_open_the_failing_backend_gets_few_requests() {
    let (calls, sent) = phase_totals(&runs().breaker, "failing");
    let (calls_without, sent_without) = phase_totals(&runs().no_breaker, "failing");
    assert!(
        calls > 200 && calls_without > 200,
        "{calls} / {calls_without}"
    );
    // The trip takes 10 failures; then 3 probes per half-second.
    assert!(sent * 10 < calls, "{sent} attempts for {calls} calls");
    assert!(
        sent * 10 < sent_without,
        "{sent} attempts with the breaker, {sent_without} without"
    );
}

#[test]
fn the_svg_is_well_formed_with_every_series() {
    let svg = &runs().svg;
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let with_class = |class: &str| {
        root.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .collect::<Vec<_>>()
    };
    // Two points per row in which some call ended (all 18, unless the
    // machine stalled the program for a whole row).
    let rows = runs().breaker["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 18);
    let with_calls = rows.iter().filter(|r| r["calls"] != 0).count();
    assert!(with_calls >= 12, "{with_calls} of 18 rows have calls");
    for series in ["success-rate", "p50", "p99"] {
        let line = with_class(series);
        assert_eq!(line.len(), 1, "{series}");
        let points = line[0].attribute("points").unwrap().split(' ').count();
        assert_eq!(points, 2 * with_calls, "{series}: two points per row");
    }
    let opens = transitions(&runs().breaker)
        .iter()
        .filter(|(_, to, _, _)| to == "open")
        .count();
    assert_eq!(with_class("state-open").len(), opens);
    assert_eq!(with_class("state-half-open").len(), opens);
    let phases: Vec<&str> = with_class("phase")
        .iter()
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(phases, ["healthy", "failing", "recovering"]);
    assert!(
        !svg.contains("#000") && !svg.contains("black"),
        "currentColor only, for dark themes"
    );
}

#[test]
fn a_malformed_phase_script_or_share_exits_2_with_one_sentence() {
    let cases = [
        (
            vec!["--phases", "healthy:1s,broken:1s"],
            "unknown phase `broken`; the phases are healthy, slow, failing, hanging, recovering",
        ),
        (
            vec!["--phases", "healthy"],
            "phase `healthy` has no duration; write it as healthy:3s",
        ),
        (
            vec!["--phases", "failing:soon"],
            "phase `failing:soon`: `soon` is not a duration (write 3s or 500ms)",
        ),
        (
            vec!["--failure-rate", "150%"],
            "`150%` is not between 0% and 100%",
        ),
        (
            vec!["--window", "5", "--min-calls", "10"],
            "min_calls (10) is larger than the window (5 calls): the breaker could never trip",
        ),
    ];
    for (args, sentence) in cases {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(sentence), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_backend_that_is_down_at_start_is_named_and_exits_1() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = run(&["--backend", &addr, "--phases", "healthy:1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the backend at {addr}")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no timeline of errors");
}
