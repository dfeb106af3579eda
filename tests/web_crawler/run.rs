//! Running the `web_crawler` program as a user runs it, and reading back
//! what it wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// The built program (debug or release, as this test was built).
pub fn program() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["web_crawler"]))
        .join("web_crawler")
}

/// One finished run.
pub struct Crawl {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The `--out` file, one JSON value per line.
    pub records: Vec<Value>,
    /// The `--json` summary: stdout's last line.
    pub summary: Value,
    pub elapsed: Duration,
}

impl Crawl {
    /// Exit 0 and nothing on stderr that says a panic or an overflow
    /// happened, in any coroutine.
    pub fn assert_clean(&self) {
        assert!(
            self.status.success(),
            "exit {:?}\n{}",
            self.status,
            self.describe()
        );
        for sign in [
            "panicked",
            "overflow",
            "stack backtrace",
            "Node value is None",
        ] {
            assert!(
                !self.stderr.contains(sign),
                "{sign:?} on stderr\n{}",
                self.describe()
            );
        }
    }

    /// A count under `key` of the summary's `map` (`skipped`, `errors`), 0
    /// if absent.
    pub fn counted(&self, map: &str, key: &str) -> u64 {
        self.summary[map][key].as_u64().unwrap_or(0)
    }

    /// The record of `url`, if the crawl wrote one.
    pub fn record(&self, url: &str) -> Option<&Value> {
        self.records.iter().find(|r| r["url"] == url)
    }

    /// URLs of the records, in the order written.
    pub fn urls(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| r["url"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn describe(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}\nrecords:\n{}",
            self.stdout,
            self.stderr,
            self.records
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

/// `web_crawler ARGS --json` with its files (`crawl.jsonl`,
/// `crawl.checkpoint`) in `dir`.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program());
    command
        .args(args)
        .arg("--json")
        .arg("--out")
        .arg(dir.join("crawl.jsonl"))
        .arg("--checkpoint")
        .arg(dir.join("crawl.checkpoint"));
    command
}

/// Run [`command`] to its end, killed after `limit`.
pub fn crawl(dir: &Path, args: &[&str], limit: Duration) -> Crawl {
    let started = Instant::now();
    let output = support::output_bounded(&mut command(dir, args), limit);
    finished(
        dir,
        output.status,
        &output.stdout,
        &output.stderr,
        started.elapsed(),
    )
}

/// What a run that ended left: its output, summary and records.
pub fn finished(
    dir: &Path,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
    elapsed: Duration,
) -> Crawl {
    let stdout = String::from_utf8_lossy(stdout).into_owned();
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    Crawl {
        status,
        stdout,
        stderr: String::from_utf8_lossy(stderr).into_owned(),
        records: read_records(&dir.join("crawl.jsonl")),
        summary,
        elapsed,
    }
}

/// Every line of a JSON Lines file (none if it does not exist), each of
/// which must be JSON.
pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()))
        })
        .collect()
}
