//! Step 2: the same work as step 1, as a chain of stages. A reader thread
//! sends lines to a parse coroutine, which sends records to a transform
//! coroutine, then to a validate coroutine, then to a writer thread; each
//! pair is joined by a `may_patterns::bounded` channel, which works from
//! threads and coroutines alike. A rejected record travels down the chain
//! like any other, so the writer sees every record, in input order.
//!
//! Run it: `cargo run --example step2_stages`

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
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
#[derive(Debug, Clone, PartialEq)]
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
    pub rejects: Vec<Reject>,
}

// ANCHOR: item
/// What travels between two stages: a record, or the reason it was
/// rejected earlier. Passing rejects along keeps one order for everything.
pub type Item<T> = Result<T, Reject>;
// ANCHOR_END: item

// ANCHOR: reader
/// The read stage, on its own OS thread: reading a file blocks, and a
/// coroutine that blocks holds its may worker thread. Returns the number of
/// records read.
fn read_lines(input: &Path, output: Sender<Item<Line>>) -> io::Result<u64> {
    let mut lines = BufReader::new(File::open(input)?).lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    if header.trim() != HEADER {
        return Err(io::Error::other(format!("unexpected header {header:?}")));
    }
    let mut read = 0;
    for (index, text) in lines.enumerate() {
        let line = Line {
            number: index as u64 + 2, // the header is line 1
            text: text?,
        };
        read += 1;
        if output.send(Ok(line)).is_err() {
            break; // the next stage is gone
        }
    }
    Ok(read)
}
// ANCHOR_END: reader

// ANCHOR: stage
/// A middle stage, on a coroutine: apply `work` to every record, pass
/// rejects through untouched, until the input ends.
fn stage<I, O>(input: Receiver<Item<I>>, output: Sender<Item<O>>, work: impl Fn(I) -> Item<O>) {
    for item in input {
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
// ANCHOR_END: stage

// ANCHOR: writer
/// The write stage, on its own OS thread (writing a file blocks too).
fn write_records(input: Receiver<Item<CleanOrder>>, output: &Path) -> io::Result<Summary> {
    let mut writer = csv::Writer::from_path(output)?;
    let mut summary = Summary::default();
    for item in input {
        match item {
            Ok(order) => {
                writer.serialize(&order)?;
                summary.written += 1;
            }
            Err(reject) => summary.rejects.push(reject),
        }
    }
    writer.flush()?;
    Ok(summary)
}
// ANCHOR_END: writer

// ANCHOR: run
/// Step 1's `run`, as five stages joined by bounded queues of `capacity`
/// slots: a stage that gets ahead parks in `send` (a thread blocks there)
/// until the next one has taken a record, so memory stays bounded however
/// large the input is.
pub fn run(input: &Path, output: &Path, capacity: usize) -> io::Result<Summary> {
    let (lines_tx, lines_rx) = bounded::channel(capacity);
    let (raw_tx, raw_rx) = bounded::channel(capacity);
    let (orders_tx, orders_rx) = bounded::channel(capacity);
    let (clean_tx, clean_rx) = bounded::channel(capacity);

    let input = input.to_path_buf();
    let reader = thread::spawn(move || read_lines(&input, lines_tx));
    let parser = go!(move || stage(lines_rx, raw_tx, parse_stage));
    let transformer = go!(move || stage(raw_rx, orders_tx, transform_stage));
    let validator = go!(move || stage(orders_rx, clean_tx, validate_stage));
    let output = output.to_path_buf();
    let writer = thread::spawn(move || write_records(clean_rx, &output));

    let read = reader.join().expect("the reader panicked")?;
    for coroutine in [parser, transformer, validator] {
        coroutine.join().expect("a stage panicked");
    }
    let summary = writer.join().expect("the writer panicked")?;
    Ok(Summary { read, ..summary })
}
// ANCHOR_END: run

fn main() -> io::Result<()> {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let dir = tempfile::tempdir()?;
    let output = dir.path().join("clean.csv");
    let summary = run(Path::new(SAMPLE), &output, 4)?;
    println!(
        "read {} records: {} written, {} rejected",
        summary.read,
        summary.written,
        summary.rejects.len()
    );
    let lines: Vec<String> = summary.rejects.iter().map(|r| r.line.to_string()).collect();
    println!(
        "rejected lines, in the order the writer saw them: {}",
        lines.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_writes_what_the_sequential_loop_writes_in_the_same_order() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        // One slot is the tightest a queue can be: every hand-off waits.
        for capacity in [1, 4] {
            let summary = run(Path::new(SAMPLE), &output, capacity).unwrap();
            assert_eq!((summary.read, summary.written), (41, 33));
            let rejected: Vec<u64> = summary.rejects.iter().map(|r| r.line).collect();
            assert_eq!(rejected, [12, 14, 16, 18, 20, 22, 24, 26]);

            let written = std::fs::read_to_string(&output).unwrap();
            let lines: Vec<u64> = written
                .lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap().parse().unwrap())
                .collect();
            let expected: Vec<u64> = (2..=42).filter(|n| !rejected.contains(n)).collect();
            assert_eq!(lines, expected, "one coroutine per stage keeps input order");
        }
    }

    #[test]
    fn a_missing_input_file_is_an_error_not_a_hang() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("nope.csv"), dir.path().join("out.csv"));
        let err = run(&input, &output, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// The chapter's reason for the reader thread: may's `CoIo`, which makes
    /// a socket co-operative by registering it with epoll, refuses a regular
    /// file (epoll does not take them: EPERM).
    #[test]
    fn may_cannot_make_a_file_cooperative() {
        may_patterns::runtime::configure_for_tests();
        let file = std::fs::File::open(SAMPLE).unwrap();
        let err = io::Error::from(may::io::CoIo::new(file).unwrap_err());
        assert_eq!(err.raw_os_error(), Some(1), "EPERM, got {err}");
    }
}
