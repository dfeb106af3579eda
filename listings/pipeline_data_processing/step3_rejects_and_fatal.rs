//! Step 3: rejects and fatal errors. A record that fails a rule goes to a
//! reject file with its line number and reason, and the run goes on. An
//! error that makes the output wrong (the disk is full, the output's folder
//! does not exist, the input cannot be read) is fatal: every stage stops and
//! `run` returns the error. What this step does not fix yet: a run that
//! fails has already written part of its output under the real name (step 4
//! stages it).
//!
//! Run it: `cargo run --example step3_rejects_and_fatal`

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::thread;

use may::go;
use may_patterns::bounded::{self, Receiver, Sender};
use serde::{Deserialize, Serialize};

/// The sample data set, found wherever the listing is compiled from.
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/listings/pipeline_data_processing/data/orders.csv"
);

// The record types and the parse, transform and validate functions are
// step 1's, unchanged.

/// The columns of an input CSV file, in order; its first line must be this.
pub const HEADER: &str = "order_id,customer,country,amount,currency,ordered_at";

/// One line of input, numbered from 1 as an editor shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub number: u64,
    pub text: String,
}

/// A parsed record: the fields as the source wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOrder {
    pub line: u64,
    pub order_id: String,
    pub customer: String,
    pub country: String,
    pub amount: f64,
    pub currency: String,
    pub ordered_at: String,
}

/// A normalised record; the validator decides whether it is good.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub line: u64,
    pub order_id: String,
    pub customer: String,
    pub country: String,
    pub amount: f64,
    pub currency: String,
    /// `None` when the currency has no rate (the validator rejects it).
    pub amount_eur_cents: Option<i64>,
    pub ordered_at: String,
}

/// A record that passed every rule: what the writer writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CleanOrder {
    pub line: u64,
    pub order_id: String,
    pub customer: String,
    pub country: String,
    pub amount: f64,
    pub currency: String,
    pub amount_eur_cents: i64,
    pub ordered_at: String,
}

/// A record that did not make it, and why; `line` says where to look.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
}

/// Parse one CSV line. Only the shape is checked here: six columns and a
/// numeric amount. Whether the values make sense is the validator's job.
pub fn parse_csv(line: &Line) -> Result<RawOrder, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.text.as_bytes());
    let record = match reader.records().next() {
        Some(Ok(record)) => record,
        Some(Err(err)) => return Err(format!("malformed CSV: {err}")),
        None => return Err("empty line".to_string()),
    };
    if record.len() != 6 {
        return Err(format!("expected 6 columns, found {}", record.len()));
    }
    Ok(RawOrder {
        line: line.number,
        order_id: record[0].to_string(),
        customer: record[1].to_string(),
        country: record[2].to_string(),
        amount: parse_amount(&record[3])?,
        currency: record[4].to_string(),
        ordered_at: record[5].to_string(),
    })
}

/// The JSON Lines form of a record; `amount` may be a number or a string.
#[derive(Deserialize)]
struct JsonOrder {
    order_id: String,
    customer: String,
    country: String,
    amount: serde_json::Value,
    currency: String,
    ordered_at: String,
}

/// Parse one JSON Lines record (one JSON object per line).
pub fn parse_json(line: &Line) -> Result<RawOrder, String> {
    let json: JsonOrder =
        serde_json::from_str(&line.text).map_err(|err| format!("invalid JSON: {err}"))?;
    let amount = match &json.amount {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        serde_json::Value::String(s) => parse_amount(s)?,
        other => return Err(format!("amount is not a number: {other}")),
    };
    Ok(RawOrder {
        line: line.number,
        order_id: json.order_id,
        customer: json.customer,
        country: json.country,
        amount,
        currency: json.currency,
        ordered_at: json.ordered_at,
    })
}

fn parse_amount(text: &str) -> Result<f64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("amount is not a number: {text:?}"))
}

/// Euro value of one unit of each currency we accept. A fixed table, not
/// today's rates: a real pipeline would load it per run.
const RATES_TO_EUR: [(&str, f64); 7] = [
    ("EUR", 1.0),
    ("USD", 0.92),
    ("GBP", 1.17),
    ("CHF", 1.05),
    ("SEK", 0.088),
    ("DKK", 0.134),
    ("PLN", 0.23),
];

/// Normalise: trim every field, upper-case the codes, convert the amount to
/// euro cents, and write the timestamp as `YYYY-MM-DDTHH:MM:SSZ`. It never
/// rejects; what it cannot normalise it leaves for the validator to refuse.
pub fn transform(raw: RawOrder) -> Order {
    let currency = raw.currency.trim().to_uppercase();
    let rate = RATES_TO_EUR.iter().find(|(code, _)| *code == currency);
    Order {
        line: raw.line,
        order_id: raw.order_id.trim().to_string(),
        customer: raw.customer.trim().to_string(),
        country: raw.country.trim().to_uppercase(),
        amount_eur_cents: rate.map(|(_, rate)| (raw.amount * rate * 100.0).round() as i64),
        amount: raw.amount,
        currency,
        ordered_at: normalise_timestamp(raw.ordered_at.trim()),
    }
}

/// `2024-03-01`, `2024-03-01 10:02:11` and `2024-03-01T10:02:11Z` all become
/// `2024-03-01T10:02:11Z` (with `00:00:00` for a bare date). Anything else is
/// returned as it is.
fn normalise_timestamp(text: &str) -> String {
    match text.len() {
        10 => format!("{text}T00:00:00Z"),
        19 if text.as_bytes()[10] == b' ' => format!("{}T{}Z", &text[..10], &text[11..]),
        _ => text.to_string(),
    }
}

/// Countries we ship to (ISO 3166-1 alpha-2).
const COUNTRIES: [&str; 16] = [
    "AT", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "NL", "PL", "PT", "SE", "US",
];

/// No single order is worth more than this; a bigger one is a data error.
const MAX_EUR_CENTS: i64 = 100_000 * 100;

/// The data quality rules. Each failure names its rule, so a reject file
/// says what to fix.
pub fn validate(order: Order) -> Result<CleanOrder, String> {
    if order.order_id.is_empty() {
        return Err("missing order_id".to_string());
    }
    if !COUNTRIES.contains(&order.country.as_str()) {
        return Err(format!("unknown country code {:?}", order.country));
    }
    let Some(eur_cents) = order.amount_eur_cents else {
        return Err(format!("unknown currency {:?}", order.currency));
    };
    // NaN is not above zero either, and `parse` accepts "NaN".
    if order.amount.is_nan() || order.amount <= 0.0 {
        return Err(format!("amount must be positive, got {}", order.amount));
    }
    if eur_cents > MAX_EUR_CENTS {
        return Err(format!("amount over 100000 EUR: {}", order.amount));
    }
    if !is_valid_timestamp(&order.ordered_at) {
        return Err(format!("bad date {:?}", order.ordered_at));
    }
    Ok(CleanOrder {
        line: order.line,
        order_id: order.order_id,
        customer: order.customer,
        country: order.country,
        amount: order.amount,
        currency: order.currency,
        amount_eur_cents: eur_cents,
        ordered_at: order.ordered_at,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` naming a real day (leap years included) and time.
fn is_valid_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'Z'),
        ]
        .iter()
        .all(|&(i, c)| b[i] == c);
    let number = |from: usize, to: usize| text.get(from..to)?.parse::<u32>().ok();
    let fields = (
        number(0, 4),
        number(5, 7),
        number(8, 10),
        number(11, 13),
        number(14, 16),
        number(17, 19),
    );
    let (Some(y), Some(m), Some(d), Some(hh), Some(mm), Some(ss)) = fields else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => 0,
    };
    shape && (1..=days_in_month).contains(&d) && hh < 24 && mm < 60 && ss < 60
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub read: u64,
    pub written: u64,
    pub rejected: u64,
}

/// What travels between two stages: a record, or the reason it was
/// rejected earlier. Passing rejects along keeps one order for everything.
pub type Item<T> = Result<T, Reject>;

// ANCHOR: fatal
/// An error that stops the whole run, with a message for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `io_result.map_err(fatal("cannot write", path))`: say what failed, where.
fn fatal<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> Fatal + 'a {
    move |err| Fatal(format!("{what} {}: {err}", path.display()))
}
// ANCHOR_END: fatal

/// The read stage, on its own OS thread: reading a file blocks, and a
/// coroutine that blocks holds its may worker thread. Returns the number of
/// records read.
fn read_lines(input: &Path, output: Sender<Item<Line>>) -> Result<u64, Fatal> {
    let file = File::open(input).map_err(fatal("cannot open", input))?;
    let mut lines = BufReader::new(file).lines();
    let header = lines
        .next()
        .transpose()
        .map_err(fatal("cannot read", input))?;
    let header = header.unwrap_or_default();
    if header.trim() != HEADER {
        return Err(Fatal(format!(
            "{}: unexpected header {header:?}",
            input.display()
        )));
    }
    let mut read = 0;
    for (index, text) in lines.enumerate() {
        let line = Line {
            number: index as u64 + 2, // the header is line 1
            text: text.map_err(fatal("cannot read", input))?,
        };
        read += 1;
        if output.send(Ok(line)).is_err() {
            break; // the writer failed: it will say why
        }
    }
    Ok(read)
}

/// A middle stage, on a coroutine: apply `work` to every record, pass
/// rejects through untouched, until the input ends or the next stage is
/// gone.
fn stage<I, O>(input: Receiver<Item<I>>, output: Sender<Item<O>>, work: impl Fn(I) -> Item<O>) {
    for item in &input {
        if output.send(item.and_then(&work)).is_err() {
            break; // the next stage is gone
        }
    }
}

/// The three middle stages' work, each turning a failure into a [`Reject`]
/// that remembers the record's line.
fn parse_stage(line: Line) -> Item<RawOrder> {
    parse_csv(&line).map_err(|reason| Reject {
        line: line.number,
        reason,
    })
}

fn transform_stage(raw: RawOrder) -> Item<Order> {
    Ok(transform(raw))
}

fn validate_stage(order: Order) -> Item<CleanOrder> {
    let line = order.line;
    validate(order).map_err(|reason| Reject { line, reason })
}

/// A destination, created (or emptied) before anything is read, so that a
/// bad path fails fast; its path is kept for error messages.
fn create(path: &Path) -> Result<(File, PathBuf), Fatal> {
    let file = File::create(path).map_err(fatal("cannot create", path))?;
    Ok((file, path.to_path_buf()))
}

// ANCHOR: writer
/// The write stage, on its own OS thread. Good records go to the output,
/// rejects to the reject file; the first write that fails ends the stage.
fn write_records(
    input: Receiver<Item<CleanOrder>>,
    (output, output_path): (File, PathBuf),
    (rejects, rejects_path): (File, PathBuf),
) -> Result<Summary, Fatal> {
    let mut good = csv::Writer::from_writer(output);
    let mut bad = csv::Writer::from_writer(rejects);
    let mut summary = Summary::default();
    for item in &input {
        let written = match item {
            Ok(order) => good.serialize(&order).map(|()| summary.written += 1),
            Err(reject) => bad.serialize(&reject).map(|()| summary.rejected += 1),
        };
        // Returning drops `input`: every stage's next send fails, and
        // the chain stops from the end back to the reader.
        written.map_err(|err| Fatal(format!("cannot write: {err}")))?;
    }
    good.flush().map_err(fatal("cannot write", &output_path))?;
    bad.flush().map_err(fatal("cannot write", &rejects_path))?;
    Ok(summary)
}
// ANCHOR_END: writer

// ANCHOR: run
/// Step 2's chain, with a reject file and errors that stop it.
pub fn run(input: &Path, output: &Path, rejects: &Path, capacity: usize) -> Result<Summary, Fatal> {
    let output = create(output)?;
    let rejects = create(rejects)?;
    let (lines_tx, lines_rx) = bounded::channel(capacity);
    let (raw_tx, raw_rx) = bounded::channel(capacity);
    let (orders_tx, orders_rx) = bounded::channel(capacity);
    let (clean_tx, clean_rx) = bounded::channel(capacity);

    let input = input.to_path_buf();
    let reader = thread::spawn(move || read_lines(&input, lines_tx));
    let parser = go!(move || stage(lines_rx, raw_tx, parse_stage));
    let transformer = go!(move || stage(raw_rx, orders_tx, transform_stage));
    let validator = go!(move || stage(orders_rx, clean_tx, validate_stage));
    let writer = thread::spawn(move || write_records(clean_rx, output, rejects));

    let read = reader.join().expect("the reader panicked");
    for coroutine in [parser, transformer, validator] {
        coroutine.join().expect("a stage panicked");
    }
    let written = writer.join().expect("the writer panicked");
    // The writer's error first: when it fails, the reader only sees its
    // sends fail.
    let summary = written?;
    let read = read?;
    Ok(Summary { read, ..summary })
}
// ANCHOR_END: run

/// The sample with a line that is not UTF-8 after its first 19 records: a
/// read that fails halfway, as a bad disk sector or a lost client would.
fn write_broken_sample(path: &Path) {
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let mut text = Vec::new();
    for (number, line) in (1..).zip(sample.lines()) {
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
        if number == 20 {
            text.extend_from_slice(b"A-9999,Jo,FR,1.5,EUR,2024-03-01\xff\n");
        }
    }
    std::fs::write(path, text).unwrap();
}

/// How many data lines (all but the header) the CSV file at `path` holds.
fn records_in(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().count().saturating_sub(1)
}

// ANCHOR: main
fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let dir = tempfile::tempdir().unwrap();
    let (clean, rejects) = (dir.path().join("clean.csv"), dir.path().join("rejects.csv"));
    let broken = dir.path().join("broken.csv");
    write_broken_sample(&broken);
    let runs = [
        (Path::new(SAMPLE), clean.clone()),
        (Path::new(SAMPLE), PathBuf::from("/dev/full")),
        (
            Path::new(SAMPLE),
            dir.path().join("missing-folder/clean.csv"),
        ),
        (broken.as_path(), clean.clone()),
    ];
    for (n, (input, output)) in runs.iter().enumerate() {
        let from = input.file_name().unwrap().to_string_lossy();
        let to = output.strip_prefix(dir.path()).unwrap_or(output);
        let shown = format!("{from} -> {}", to.display());
        match run(input, output, &rejects, 4) {
            Ok(s) => println!(
                "{shown}: read {}, written {}, rejected {}",
                s.read, s.written, s.rejected
            ),
            Err(Fatal(message)) => {
                let message = message.replace(&format!("{}/", dir.path().display()), "");
                println!("{shown}: fatal: {message}");
            }
        }
        if n == 0 {
            println!("rejects.csv:");
            for line in std::fs::read_to_string(&rejects).unwrap().lines() {
                println!("  {line}");
            }
        }
    }
    println!(
        "clean.csv now holds {} records, rejects.csv {} rejects",
        records_in(&clean),
        records_in(&rejects)
    );
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rejects_go_to_their_file_with_line_and_reason() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let (output, rejects) = (dir.path().join("out.csv"), dir.path().join("rejects.csv"));
        let summary = run(Path::new(SAMPLE), &output, &rejects, 4).unwrap();
        assert_eq!(
            (summary.read, summary.written, summary.rejected),
            (41, 33, 8)
        );
        let rejected = std::fs::read_to_string(&rejects).unwrap();
        assert_eq!(rejected.lines().count(), 9, "a header and 8 rejects");
        assert!(rejected.starts_with("line,reason\n12,\"expected 6 columns, found 5\"\n"));
        assert_eq!(files_in(dir.path()), ["out.csv", "rejects.csv"]);
    }

    #[test]
    fn a_full_disk_is_fatal() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let rejects = dir.path().join("rejects.csv");
        let err = run(Path::new(SAMPLE), Path::new("/dev/full"), &rejects, 4).unwrap_err();
        assert!(err.0.contains("No space left on device"), "{err}");
    }

    #[test]
    fn a_missing_folder_is_fatal_before_anything_is_read() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("nope/out.csv");
        let err = run(Path::new(SAMPLE), &output, &dir.path().join("r.csv"), 4).unwrap_err();
        assert!(err.0.starts_with("cannot create"), "{err}");
        assert!(files_in(dir.path()).is_empty());
    }

    /// The defect step 4 fixes: the destinations were emptied before the
    /// input turned out to be unreadable.
    #[test]
    fn an_unreadable_input_is_fatal_but_has_emptied_the_output() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let (output, rejects) = (dir.path().join("out.csv"), dir.path().join("rejects.csv"));
        std::fs::write(&output, "an earlier run's output\n").unwrap();
        let err = run(&dir.path().join("missing.csv"), &output, &rejects, 4).unwrap_err();
        assert!(err.0.starts_with("cannot open"), "{err}");
        assert_eq!(files_in(dir.path()), ["out.csv", "rejects.csv"]);
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "");
    }

    /// The other half of that defect: a read that fails halfway leaves the
    /// records before it under the output's real name.
    #[test]
    fn a_read_error_halfway_leaves_a_partial_output() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("broken.csv"), dir.path().join("out.csv"));
        write_broken_sample(&input);
        let err = run(&input, &output, &dir.path().join("r.csv"), 4).unwrap_err();
        assert!(
            err.0.contains("stream did not contain valid UTF-8"),
            "{err}"
        );
        // Lines 2 to 20 were read; 12, 14, 16, 18 and 20 are rejects.
        assert_eq!(records_in(&output), 14);
    }

    #[test]
    fn a_writer_failure_stops_the_reader_of_a_long_input() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("long.csv");
        let mut file = File::create(&input).unwrap();
        writeln!(file, "{HEADER}").unwrap();
        for n in 0..200_000 {
            writeln!(file, "A-{n},Jo,FR,1.5,EUR,2024-03-01").unwrap();
        }
        drop(file);
        let err = run(&input, Path::new("/dev/full"), &dir.path().join("r.csv"), 4).unwrap_err();
        assert!(err.0.contains("No space left on device"), "{err}");
        // `run` ended, so the reader did; that it stopped early, at the first
        // send into a gone stage, is the reader's own part:
        let (lines_tx, lines_rx) = bounded::channel(4);
        drop(lines_rx);
        assert_eq!(
            read_lines(&input, lines_tx),
            Ok(1),
            "one line read, none sent"
        );
    }
}
