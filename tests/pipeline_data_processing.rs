//! End to end: run the finished `pipeline_data_processing` program as a user
//! would, on the sample data, into CSV and SQLite, from a TCP client, and
//! into outputs that fail; check the books, the reject file, the order of
//! the output, and that a fatal error leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;
use support::{build_examples, output_bounded, wait_bounded};

const NAME: &str = "pipeline_data_processing";
const LIMIT: Duration = Duration::from_secs(30);

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("listings/pipeline_data_processing/data")
        .join(name)
}

/// Run the program with `args`, bounded in time; its exit status and output.
fn pipeline(args: &[&str]) -> Output {
    let mut command = Command::new(build_examples([NAME]).join(NAME));
    output_bounded(command.args(args), LIMIT)
}

fn json_summary(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn n(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

const EXPECTED_REJECTS: &str = r#"line,reason
12,"expected 6 columns, found 5"
14,"amount is not a number: ""12;50"""
16,missing order_id
18,"unknown country code ""XX"""
20,"amount must be positive, got -15"
22,amount over 100000 EUR: 9999999
24,"unknown currency ""JPY"""
26,"bad date ""2024-02-30T12:00:00Z"""
"#;

#[test]
fn the_sample_csv_is_cleaned_into_csv_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clean.csv");
    let input = sample("orders.csv");
    let run = pipeline(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(run.status.success(), "{run:?}");
    let summary = json_summary(&run);
    assert_eq!(
        (
            n(&summary, "read"),
            n(&summary, "written"),
            n(&summary, "rejected")
        ),
        (41, 33, 8)
    );
    assert_eq!(
        n(&summary, "read"),
        n(&summary, "written") + n(&summary, "rejected")
    );
    let rejects = std::fs::read_to_string(dir.path().join("clean.csv.rejects.csv")).unwrap();
    assert_eq!(rejects, EXPECTED_REJECTS);
    // One worker per stage: the output's line numbers are the input's good
    // lines, in input order.
    let written = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<u64> = written
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let bad = [12, 14, 16, 18, 20, 22, 24, 26];
    let expected: Vec<u64> = (2..=42).filter(|l| !bad.contains(l)).collect();
    assert_eq!(lines, expected);
}

#[test]
fn the_sample_goes_into_sqlite_with_its_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let input = sample("orders.jsonl");
    let output = format!("sqlite://{}", db.display());
    let run = pipeline(&["--input", input.to_str().unwrap(), "--output", &output]);
    assert!(run.status.success(), "{run:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let count: u64 = conn
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 33);
    let (id, country, cents): (String, String, i64) = conn
        .query_row(
            "SELECT order_id, country, amount_eur_cents FROM orders WHERE line = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (id.as_str(), country.as_str(), cents),
        ("A-1003", "NL", 31000)
    );
    let usd: i64 = conn
        .query_row(
            "SELECT amount_eur_cents FROM orders WHERE order_id = 'A-1010'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(usd, 9108, "99 USD at 0.92");
    let rejects = std::fs::read_to_string(format!("{}.rejects.csv", db.display())).unwrap();
    assert!(
        rejects.contains("\n11,invalid JSON: EOF while parsing an object"),
        "{rejects}"
    );
}

#[test]
fn an_unwritable_output_is_fatal_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample("orders.csv");
    let rejects = dir.path().join("rejects.csv");
    let run = pipeline(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        "/dev/full",
        "--rejects",
        rejects.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("fatal: cannot write /dev/full: No space left on device"),
        "{stderr}"
    );
    assert!(!rejects.exists(), "no reject file either");

    let missing = dir.path().join("no/such/folder/out.csv");
    let run = pipeline(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("no such folder"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was left behind"
    );
}

#[test]
fn records_sent_over_tcp_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clean.jsonl");
    let mut child = Command::new(build_examples([NAME]).join(NAME))
        .args([
            "--input",
            "tcp://127.0.0.1:0",
            "--format",
            "csv",
            "--json",
            "--output",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first}"));
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .write_all(&std::fs::read(sample("orders.csv")).unwrap())
        .unwrap();
    drop(client); // EOF: the program reads to the end and finishes
    let status = wait_bounded(&mut child, LIMIT);
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((n(&summary, "read"), n(&summary, "written")), (41, 33));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 33);
}

#[test]
fn two_workers_per_stage_still_conserve_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.csv");
    let generator = "generate_orders";
    let status = Command::new(build_examples([generator]).join(generator))
        .args(["--rows", "20000", "--bad-every", "7", "--out"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let out = dir.path().join("clean.csv");
    let run = pipeline(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--workers-per-stage",
        "2",
        "--json",
    ]);
    assert!(run.status.success(), "{run:?}");
    let summary = json_summary(&run);
    assert_eq!(n(&summary, "read"), 20_000);
    assert_eq!(n(&summary, "rejected"), 20_000 / 7);
    assert_eq!(n(&summary, "written"), 20_000 - 20_000 / 7);
    let mut lines: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(
        lines.len() as u64,
        n(&summary, "written"),
        "each record written once"
    );
}
