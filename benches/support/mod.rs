//! Shared by every chapter's bench: configure may, and write the chapter's
//! results table from criterion's own estimates, so no number in the book is
//! typed by hand.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Two workers (this book's reference machine has two cores), pinning off.
pub fn configure_may() {
    may::config().set_workers(2);
    may::config().set_worker_pin(false);
}

/// One row of a chapter's table: a criterion group whose functions are named
/// after the table's two columns (`subject` and `baseline` of `write_table`).
pub struct Row {
    pub what: &'static str,
    pub group: &'static str,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Median time per iteration in nanoseconds, from criterion's estimates.json.
fn median_ns(group: &str, id: &str) -> Option<f64> {
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn human(ns: f64) -> String {
    match ns {
        n if n < 1_000.0 => format!("{n:.0} ns"),
        n if n < 1_000_000.0 => format!("{:.2} µs", n / 1_000.0),
        n => format!("{:.2} ms", n / 1_000_000.0),
    }
}

/// "model name" from /proc/cpuinfo, and the number of CPUs we may use.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpus} CPUs ({cpu}), {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Today's date (UTC) as YYYY-MM-DD, from the days since 1970 (H. Hinnant's
/// civil-from-days algorithm).
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Write `book/<chapter>/benchmarks.md` from the rows' criterion results.
/// Leaves the file alone when a row has no result (e.g. a filtered run).
pub fn write_table(chapter: &str, subject: &str, baseline: &str, rows: &[Row]) {
    let mut table = format!(
        "Measured on {} with `cargo bench --bench {chapter}` (release build, criterion \
         medians), {}.\n\n| measurement | {subject} | {baseline} | {baseline} ÷ {subject} |\n|---|---|---|---|\n",
        machine(),
        today()
    );
    for row in rows {
        let (Some(ours), Some(theirs)) = (
            median_ns(row.group, subject),
            median_ns(row.group, baseline),
        ) else {
            eprintln!(
                "no criterion result for `{}`; benchmarks.md left unchanged",
                row.group
            );
            return;
        };
        writeln!(
            table,
            "| {} | {} | {} | {:.1}x |",
            row.what,
            human(ours),
            human(theirs),
            theirs / ours
        )
        .unwrap();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join(chapter)
        .join("benchmarks.md");
    std::fs::write(&path, table).unwrap();
    println!("wrote {}", path.display());
}
