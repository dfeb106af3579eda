//! Shared by every chapter's bench: configure may, and write the chapter's
//! results table from criterion's own estimates, so no number in the book is
//! typed by hand.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Every chapter's criterion settings: 1 s warm-up, 3 s of measurement,
/// then whatever the command line adds.
#[allow(dead_code)] // a bench that only writes percentile tables needs no criterion
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .configure_from_args()
}

/// Two workers (this book's reference machine has two cores), pinning off.
#[allow(dead_code)] // a bench of programs in their own processes runs no may here
pub fn configure_may() {
    may::config().set_workers(2);
    may::config().set_worker_pin(false);
}

/// One row of a chapter's table: a criterion group whose functions are named
/// after the table's columns (the criterion ids of `write_table` or of
/// `Table::columns`).
pub struct Row {
    pub what: &'static str,
    pub group: &'static str,
}

/// How a table's ratio columns compare each column with the first one.
#[derive(Clone, Copy)]
#[allow(dead_code)] // each bench is its own crate and uses one of the two
pub enum Ratio {
    /// `column ÷ first`: how many times longer than the first column it takes.
    ColumnOverFirst,
    /// `first ÷ column`: the speed-up of a column over a first-column baseline.
    FirstOverColumn,
}

/// A chapter's table with one column per criterion function, plus one ratio
/// column for every column after the first.
pub struct Table<'a> {
    /// Also the bench's name: the heading says `cargo bench --bench <chapter>`.
    pub chapter: &'a str,
    /// Printed under the heading line: what a cell holds. Empty for none.
    pub note: &'a str,
    /// `(title, criterion function id)` per column; the first column is the
    /// one the ratios compare with.
    pub columns: &'a [(&'a str, &'a str)],
    pub ratio: Ratio,
    /// Criterion's median per iteration is divided by this: 1 to show the time
    /// per iteration, the batch size to show the time per item of a batch.
    pub items_per_iteration: u64,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Median time per iteration in nanoseconds, from criterion's estimates.json.
#[allow(dead_code)] // each bench is its own crate; most read it through the writers
pub fn median_ns(group: &str, id: &str) -> Option<f64> {
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

/// The first lines of every table: the machine, the command, how it was
/// measured and the date, then the table's own `note` if it has one.
fn heading(chapter: &str, how: &str, note: &str) -> String {
    let mut text = format!(
        "Measured on {} with `cargo bench --bench {chapter}` ({how}), {}.",
        may_patterns::machine::describe(),
        may_patterns::machine::today()
    );
    if !note.is_empty() {
        write!(text, "\n{note}").unwrap();
    }
    text
}

/// Write `book/<chapter>/benchmarks.md` from the rows' criterion results, one
/// column for `subject`, one for `baseline`, and `baseline ÷ subject`.
/// Leaves the file alone when a row has no result (e.g. a filtered run).
#[allow(dead_code)] // each bench is its own crate and uses one of the writers
pub fn write_table(chapter: &str, subject: &str, baseline: &str, rows: &[Row]) {
    write_table_columns(
        &Table {
            chapter,
            note: "",
            columns: &[(subject, subject), (baseline, baseline)],
            ratio: Ratio::ColumnOverFirst,
            items_per_iteration: 1,
        },
        rows,
    );
}

/// Write `book/<chapter>/benchmarks.md` from the rows' criterion results, one
/// column per `table.columns` entry, then the ratios to the first column.
/// Leaves the file alone when a row has no result (e.g. a filtered run).
pub fn write_table_columns(table: &Table, rows: &[Row]) {
    write_table_file(table, rows, "benchmarks.md");
}

/// [`write_table_columns`] into `book/<chapter>/<file>`, for a chapter with
/// more than one table.
#[allow(dead_code)] // each bench is its own crate; most write one table
pub fn write_table_file(table: &Table, rows: &[Row], file: &str) {
    let mut text = heading(
        table.chapter,
        "release build, criterion medians",
        table.note,
    );
    text.push_str(&header(table));
    for row in rows {
        let Some(medians) = row_medians(table, row) else {
            eprintln!(
                "no criterion result for `{}`; {file} left unchanged",
                row.group
            );
            return;
        };
        text.push_str(&table_line(table.ratio, row.what, &medians));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join(table.chapter)
        .join(file);
    // A new chapter's folder may not exist yet.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    println!("wrote {}", path.display());
}

/// The blank line before the table, its column titles and the separator line.
fn header(table: &Table) -> String {
    let (first, _) = table.columns[0];
    let titles = table.columns.iter().map(|&(title, _)| title.to_owned());
    let ratios = table.columns[1..]
        .iter()
        .map(|&(title, _)| match table.ratio {
            Ratio::ColumnOverFirst => format!("{title} ÷ {first}"),
            Ratio::FirstOverColumn => format!("{first} ÷ {title}"),
        });
    let cells: Vec<String> = std::iter::once("measurement".to_owned())
        .chain(titles)
        .chain(ratios)
        .collect();
    format!(
        "\n\n| {} |\n|{}\n",
        cells.join(" | "),
        "---|".repeat(cells.len())
    )
}

/// The row's median per item for every column, or `None` if one is missing.
fn row_medians(table: &Table, row: &Row) -> Option<Vec<f64>> {
    table
        .columns
        .iter()
        .map(|&(_, id)| median_ns(row.group, id).map(|ns| ns / table.items_per_iteration as f64))
        .collect()
}

fn table_line(ratio: Ratio, what: &str, medians: &[f64]) -> String {
    let first = medians[0];
    let times = medians.iter().map(|&ns| human(ns));
    let ratios = medians[1..].iter().map(|&ns| match ratio {
        Ratio::ColumnOverFirst => times_as_text(ns / first),
        Ratio::FirstOverColumn => times_as_text(first / ns),
    });
    let cells: Vec<String> = std::iter::once(what.to_owned())
        .chain(times)
        .chain(ratios)
        .collect();
    format!("| {} |\n", cells.join(" | "))
}

/// A ratio as `3.0x`; below 1, two decimals so `0.05x` does not read `0.1x`.
fn times_as_text(ratio: f64) -> String {
    if ratio < 1.0 {
        format!("{ratio:.2}x")
    } else {
        format!("{ratio:.1}x")
    }
}

/// One row of a percentile table written by [`write_percentile_table`]: a
/// measurement criterion does not make (e.g. the latency of each of many
/// events), summarised by the bench itself.
#[allow(dead_code)] // each bench is its own crate; most use criterion's tables only
pub struct PercentileRow {
    pub what: String,
    pub samples: usize,
    pub median: std::time::Duration,
    pub p99: std::time::Duration,
    pub max: std::time::Duration,
}

/// Write `book/<chapter>/<file>` (e.g. `latency.md`): the same heading line
/// as [`write_table_columns`], `note`, then one line per row with its sample
/// count, median, 99th percentile and maximum.
#[allow(dead_code)] // each bench is its own crate; most use criterion's tables only
pub fn write_percentile_table(chapter: &str, file: &str, note: &str, rows: &[PercentileRow]) {
    let mut text = heading(chapter, "release build", note);
    text.push_str("\n\n| measurement | samples | median | p99 | max |\n|---|---|---|---|---|\n");
    for row in rows {
        let ns = |d: std::time::Duration| human(d.as_nanos() as f64);
        writeln!(
            text,
            "| {} | {} | {} | {} | {} |",
            row.what,
            row.samples,
            ns(row.median),
            ns(row.p99),
            ns(row.max)
        )
        .unwrap();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join(chapter)
        .join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    println!("wrote {}", path.display());
}

/// One cell of a table a bench measures itself, not through criterion (a
/// peer system's numbers, or a child process with other settings).
#[derive(Clone, Copy)]
#[allow(dead_code)] // each bench is its own crate; most use criterion's tables only
pub enum Cell {
    /// Time per iteration, in nanoseconds.
    Nanos(f64),
    /// A size, in bytes.
    Bytes(f64),
    /// A count per iteration, shown with two decimals.
    Count(f64),
    /// A whole count, shown as it is.
    Whole(u64),
    /// A share, as a signed percentage with two decimals (`+0.05%`).
    Percent(f64),
    /// A rate, in thousands a second (`54.9k/s`).
    PerSecond(f64),
    /// Whether a property holds: `yes` or `no`.
    Flag(bool),
    /// Not measured for this column.
    Empty,
}

fn bytes_as_text(bytes: f64) -> String {
    match bytes {
        b if b.abs() < 1_024.0 => format!("{b:.0} B"),
        b if b.abs() < 1_048_576.0 => format!("{:.1} KiB", b / 1_024.0),
        b => format!("{:.1} MiB", b / 1_048_576.0),
    }
}

/// Write `book/<chapter>/<file>`: the same heading line as the criterion
/// tables, `note`, then a `measurement` column and one column per title, with
/// one line per row of cells.
#[allow(dead_code)] // each bench is its own crate; most use criterion's tables only
pub fn write_cells_table(
    chapter: &str,
    file: &str,
    note: &str,
    titles: &[&str],
    rows: &[(String, Vec<Cell>)],
) {
    write_cells_table_of(chapter, chapter, file, note, titles, rows);
}

/// [`write_cells_table`] for a chapter with more than one bench: the
/// heading names `bench` (`cargo bench --bench <bench>`).
#[allow(dead_code)] // each bench is its own crate; most use criterion's tables only
pub fn write_cells_table_of(
    bench: &str,
    chapter: &str,
    file: &str,
    note: &str,
    titles: &[&str],
    rows: &[(String, Vec<Cell>)],
) {
    let mut text = heading(bench, "release build", note);
    write!(
        text,
        "\n\n| measurement | {} |\n|{}\n",
        titles.join(" | "),
        "---|".repeat(titles.len() + 1)
    )
    .unwrap();
    for (what, cells) in rows {
        let cells: Vec<String> = cells
            .iter()
            .map(|cell| match *cell {
                Cell::Nanos(ns) => human(ns),
                Cell::Bytes(bytes) => bytes_as_text(bytes),
                Cell::Count(count) => format!("{count:.2}"),
                Cell::Whole(count) => count.to_string(),
                Cell::Percent(share) => format!("{:+.2}%", share * 100.0),
                Cell::PerSecond(rate) => format!("{:.1}k/s", rate / 1_000.0),
                Cell::Flag(holds) => (if holds { "yes" } else { "no" }).to_owned(),
                Cell::Empty => "—".to_owned(),
            })
            .collect();
        writeln!(text, "| {what} | {} |", cells.join(" | ")).unwrap();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join(chapter)
        .join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    println!("wrote {}", path.display());
}
