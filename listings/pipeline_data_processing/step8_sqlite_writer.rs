//! Step 8: SQLite on the writer's thread. The good records go into a table
//! `orders` instead of a CSV file. rusqlite's calls block the thread that
//! makes them, so the connection lives on the writer's OS thread for the
//! whole run, fed by the bounded queue like any other stage. It writes one
//! transaction, which `run` commits only when every stage has succeeded; a
//! failure rolls it back (and removes the database if this run created it).
//!
//! Run it: `cargo run --example step8_sqlite_writer`

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpStream;
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use tempfile::{NamedTempFile, TempPath};

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
    /// The run was stopped before the input ended.
    pub stopped_early: bool,
    /// In chain order: read, parse, transform, validate, write.
    pub stages: Vec<StageStats>,
    pub elapsed: Duration,
}

/// What travels between two stages: a record, or the reason it was
/// rejected earlier. Passing rejects along keeps one order for everything.
pub type Item<T> = Result<T, Reject>;

// ANCHOR: stats
/// One stage's numbers.
#[derive(Debug, Default, Clone)]
pub struct StageStats {
    pub name: &'static str,
    /// Good records that came in, went out, and that this stage rejected.
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    /// Doing its own work.
    pub busy: Duration,
    /// Parked in `send` on a full queue: backpressure.
    pub blocked: Duration,
    /// Parked in `recv` on an empty queue: the stages before it were slower.
    pub starved: Duration,
    /// The deepest its input queue got (the reader has none).
    pub queue_high_water: Option<usize>,
}

/// Run `f`, adding the time it took to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    *total += started.elapsed();
    result
}
// ANCHOR_END: stats

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

/// What the reader needs to know about its source.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_line_bytes: usize,
    /// A socket that sends nothing for this long has lost its client.
    pub idle: Duration,
}

/// Where the records come from.
pub enum Input {
    File(PathBuf),
    /// A connected client, read with `READ_TICK` as its read timeout.
    Tcp(TcpStream),
}

/// How long a socket read waits before the reader checks for a stop and
/// counts idle time.
const READ_TICK: Duration = Duration::from_millis(50);

// ANCHOR: reader
/// Step 6's reader for any `BufRead`: it reads lines with `next_line`,
/// which bounds them, and hands over-long and non-UTF-8 lines on as
/// rejects. The first line must be the CSV header.
fn read_lines(
    mut source: impl BufRead,
    limits: Limits,
    output: Sender<Item<Line>>,
    shutdown: &Shutdown,
    stats: &mut StageStats,
) -> Result<bool, Fatal> {
    for number in 1.. {
        if shutdown.is_triggered() {
            return Ok(true); // dropping `output` lets the chain drain
        }
        let line = timed(&mut stats.busy, || next_line(&mut source, limits, shutdown))?;
        let Some(line) = line else {
            return Ok(shutdown.is_triggered()); // the end, or a stop while idle
        };
        let item = match line {
            RawLine::Text(text) if number == 1 => {
                if text.trim() != HEADER {
                    return Err(Fatal(format!("unexpected header {text:?}")));
                }
                continue;
            }
            RawLine::Text(text) => Ok(Line { number, text }),
            RawLine::TooLong => Err(format!("line longer than {} bytes", limits.max_line_bytes)),
            RawLine::NotUtf8 => Err("line is not UTF-8".to_string()),
        };
        stats.records_in += 1;
        let item = item.map_err(|reason| {
            stats.rejected += 1;
            Reject {
                line: number,
                reason,
            }
        });
        stats.records_out += u64::from(item.is_ok());
        if timed(&mut stats.blocked, || output.send(item)).is_err() {
            break; // the writer failed: it will say why
        }
    }
    Ok(false)
}

enum RawLine {
    Text(String),
    TooLong,
    NotUtf8,
}

/// The next line without its line ending, or `None` at the end of the
/// input (or on a stop while waiting for data). Never holds more than
/// `max_line_bytes` + 1 bytes of a line.
fn next_line(
    source: &mut impl BufRead,
    limits: Limits,
    shutdown: &Shutdown,
) -> Result<Option<RawLine>, Fatal> {
    let max = limits.max_line_bytes;
    let mut buf = Vec::new();
    let mut too_long = false;
    let mut idle_since = Instant::now();
    loop {
        let before = buf.len();
        // Read at most one byte past the limit: enough to know it is over.
        let room = (max + 1 - buf.len()) as u64;
        match source.by_ref().take(room).read_until(b'\n', &mut buf) {
            Ok(0) if buf.is_empty() && !too_long => return Ok(None),
            // A whole line, or the last one without a line ending.
            Ok(_) if buf.ends_with(b"\n") || buf.len() <= max => break,
            // Over the limit: drop what we have, read on to the line's end.
            Ok(_) => {
                too_long = true;
                buf.clear();
            }
            // A socket's read timeout: a chance to check for a stop.
            Err(err) if matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                if buf.len() > before {
                    idle_since = Instant::now();
                }
                if shutdown.is_triggered() {
                    return Ok(None);
                }
                if idle_since.elapsed() >= limits.idle {
                    let idle = limits.idle;
                    return Err(Fatal(format!(
                        "no data for {idle:?}: the input is incomplete"
                    )));
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(Fatal(format!("cannot read the input: {err}"))),
        }
    }
    if too_long {
        return Ok(Some(RawLine::TooLong));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(
        String::from_utf8(buf).map_or(RawLine::NotUtf8, RawLine::Text),
    ))
}
// ANCHOR_END: reader

// ANCHOR: stage
/// A middle stage, on a coroutine: step 5's loop, with every part timed.
fn stage<I, O>(
    name: &'static str,
    input: Receiver<Item<I>>,
    output: Sender<Item<O>>,
    work: impl Fn(I) -> Item<O>,
) -> StageStats {
    let mut stats = StageStats {
        name,
        ..StageStats::default()
    };
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        let done = match item {
            Ok(record) => {
                stats.records_in += 1;
                let done = timed(&mut stats.busy, || work(record));
                match &done {
                    Ok(_) => stats.records_out += 1,
                    Err(_) => stats.rejected += 1,
                }
                done
            }
            Err(reject) => Err(reject), // from an earlier stage: pass it on
        };
        if timed(&mut stats.blocked, || output.send(done)).is_err() {
            break; // the next stage is gone
        }
    }
    stats.queue_high_water = Some(input.high_water());
    stats
}
// ANCHOR_END: stage

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

// ANCHOR: staged
/// An output file that only appears under its name once the run succeeded.
/// Records go to a temporary file in the same folder (so the final rename
/// stays on one file system and is atomic); `commit` renames it.
struct StagedFile {
    file: File,
    /// Deletes the temporary file when dropped without `commit`.
    temp: Option<TempPath>,
    path: PathBuf,
}

impl StagedFile {
    fn create(path: &Path) -> Result<StagedFile, Fatal> {
        // A device or a pipe (/dev/null, /dev/full, a FIFO) has nothing to
        // rename over: write to it directly.
        if path.metadata().is_ok_and(|m| !m.is_file()) {
            let file = OpenOptions::new().write(true).open(path);
            let file = file.map_err(fatal("cannot open", path))?;
            return Ok(StagedFile {
                file,
                temp: None,
                path: path.to_path_buf(),
            });
        }
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !folder.is_dir() {
            let folder = folder.display();
            return Err(Fatal(format!(
                "cannot create a file in {folder}: no such folder"
            )));
        }
        let temp = NamedTempFile::new_in(folder);
        let temp = temp.map_err(fatal("cannot create a file in", folder))?;
        let (file, temp) = temp.into_parts();
        Ok(StagedFile {
            file,
            temp: Some(temp),
            path: path.to_path_buf(),
        })
    }

    /// Make the data durable, then give it its real name.
    fn commit(self) -> Result<(), Fatal> {
        let Some(temp) = self.temp else {
            return Ok(());
        };
        self.file
            .sync_all()
            .map_err(fatal("cannot write", &self.path))?;
        temp.persist(&self.path)
            .map_err(|err| fatal("cannot rename into", &self.path)(err.error))
    }
}
// ANCHOR_END: staged

// ANCHOR: sqlite
/// The table `orders` in an SQLite database, filled in one transaction:
/// `commit` makes the rows visible; dropping it uncommitted rolls them back
/// (and deletes the database file if this run created it).
struct SqliteSink {
    connection: Option<rusqlite::Connection>,
    path: PathBuf,
    created: bool,
}

impl SqliteSink {
    /// Open (or create) the database and start the run's transaction.
    fn open(path: &Path) -> Result<SqliteSink, Fatal> {
        let created = !path.exists();
        let mut sink = SqliteSink {
            connection: None,
            path: path.to_path_buf(),
            created,
        };
        let connection = rusqlite::Connection::open(path).map_err(|e| sink.failed(e))?;
        connection
            .execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS orders (
                     line INTEGER NOT NULL, order_id TEXT NOT NULL,
                     customer TEXT NOT NULL, country TEXT NOT NULL,
                     amount REAL NOT NULL, currency TEXT NOT NULL,
                     amount_eur_cents INTEGER NOT NULL, ordered_at TEXT NOT NULL);",
            )
            .map_err(|e| sink.failed(e))?;
        sink.connection = Some(connection);
        Ok(sink)
    }

    fn write(&mut self, o: &CleanOrder) -> Result<(), Fatal> {
        let connection = self.connection.as_ref().expect("open until committed");
        let insert = "INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
        let row = rusqlite::params![
            o.line,
            o.order_id,
            o.customer,
            o.country,
            o.amount,
            o.currency,
            o.amount_eur_cents,
            o.ordered_at
        ];
        let inserted = connection
            .prepare_cached(insert)
            .and_then(|mut insert| insert.execute(row));
        inserted.map(drop).map_err(|e| self.failed(e))
    }

    fn commit(mut self) -> Result<(), Fatal> {
        let connection = self.connection.take().expect("open until committed");
        let committed = connection
            .execute_batch("COMMIT")
            .and_then(|()| connection.close().map_err(|(_, err)| err));
        committed.map_err(|e| self.failed(e))
    }

    fn failed(&self, err: rusqlite::Error) -> Fatal {
        Fatal(format!("SQLite {}: {err}", self.path.display()))
    }
}

impl Drop for SqliteSink {
    fn drop(&mut self) {
        // Still open: the run failed. Closing rolls the transaction back.
        if let Some(connection) = self.connection.take() {
            drop(connection);
            if self.created {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
// ANCHOR_END: sqlite

// ANCHOR: writer
/// The write stage, on its own OS thread: good records into the database,
/// rejects into the staged reject file. Returns both uncommitted.
fn write_records(
    input: Receiver<Item<CleanOrder>>,
    mut output: SqliteSink,
    rejects: StagedFile,
) -> Result<(Summary, SqliteSink, StagedFile, StageStats), Fatal> {
    let mut bad = csv::Writer::from_writer(&rejects.file);
    let mut summary = Summary::default();
    let mut stats = StageStats {
        name: "write",
        ..StageStats::default()
    };
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        timed(&mut stats.busy, || match item {
            Ok(order) => {
                stats.records_in += 1;
                output.write(&order).map(|()| summary.written += 1)
            }
            Err(reject) => bad
                .serialize(&reject)
                .map(|()| summary.rejected += 1)
                .map_err(|err| Fatal(format!("cannot write: {err}"))),
        })?;
    }
    bad.flush().map_err(fatal("cannot write", &rejects.path))?;
    drop(bad);
    stats.records_out = summary.written;
    stats.queue_high_water = Some(input.high_water());
    Ok((summary, output, rejects, stats))
}
// ANCHOR_END: writer

// ANCHOR: run
/// Step 7's `run`, writing the good records into the SQLite database `db`.
pub fn run(
    input: Input,
    limits: Limits,
    db: &Path,
    rejects: &Path,
    capacity: usize,
    shutdown: &Shutdown,
) -> Result<Summary, Fatal> {
    let started = Instant::now();
    // Open both destinations before reading anything: a bad path fails fast.
    let output = SqliteSink::open(db)?;
    let rejects = StagedFile::create(rejects)?;
    let (lines_tx, lines_rx) = bounded::channel(capacity);
    let (raw_tx, raw_rx) = bounded::channel(capacity);
    let (orders_tx, orders_rx) = bounded::channel(capacity);
    let (clean_tx, clean_rx) = bounded::channel(capacity);

    let reader = spawn_reader(input, limits, lines_tx, shutdown.clone());
    let parser = go!(move || stage("parse", lines_rx, raw_tx, parse_stage));
    let transformer = go!(move || stage("transform", raw_rx, orders_tx, transform_stage));
    let validator = go!(move || stage("validate", orders_rx, clean_tx, validate_stage));
    let writer = thread::spawn(move || write_records(clean_rx, output, rejects));

    let (read, read_stats) = reader();
    let mut stages = vec![read_stats];
    for coroutine in [parser, transformer, validator] {
        stages.push(coroutine.join().expect("a stage panicked"));
    }
    let written = writer.join().expect("the writer panicked");
    let (summary, output, rejects, write_stats) = written?;
    let stopped_early = read?;
    output.commit()?;
    rejects.commit()?;
    stages.push(write_stats);
    Ok(Summary {
        read: stages[0].records_in,
        stopped_early,
        stages,
        elapsed: started.elapsed(),
        ..summary
    })
}
// ANCHOR_END: run

// ANCHOR: spawn_reader
/// Start the read stage: an OS thread for a file (reading one blocks), a
/// coroutine for a socket (a may socket parks it). Returns how to join it.
fn spawn_reader(
    input: Input,
    limits: Limits,
    output: Sender<Item<Line>>,
    shutdown: Shutdown,
) -> Box<dyn FnOnce() -> (Result<bool, Fatal>, StageStats)> {
    let read = move |source: io::Result<Box<dyn BufRead>>| {
        let mut stats = StageStats {
            name: "read",
            ..StageStats::default()
        };
        let source = source.map_err(|err| Fatal(format!("cannot read the input: {err}")));
        let read = source.and_then(|s| read_lines(s, limits, output, &shutdown, &mut stats));
        (read, stats)
    };
    match input {
        Input::File(path) => {
            let reader = thread::spawn(move || {
                let file = File::open(&path).map(|f| Box::new(BufReader::new(f)) as _);
                read(file)
            });
            Box::new(move || reader.join().expect("the reader panicked"))
        }
        Input::Tcp(client) => {
            let reader = go!(move || {
                let client = client.set_read_timeout(Some(READ_TICK)).map(|()| client);
                read(client.map(|c| Box::new(BufReader::new(c)) as _))
            });
            Box::new(move || reader.join().expect("the reader panicked"))
        }
    }
}
// ANCHOR_END: spawn_reader

// ANCHOR: main
fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.csv");
    let limits = Limits {
        max_line_bytes: 4096,
        idle: Duration::from_millis(300),
    };
    let report = |what: &str, result: Result<Summary, Fatal>| match result {
        Ok(s) => println!(
            "{what}: read {}, written {}, rejected {}",
            s.read, s.written, s.rejected
        ),
        Err(Fatal(message)) => {
            let message = message.replace(&format!("{}/", dir.path().display()), "");
            println!("{what}: fatal: {message}");
        }
    };
    let (db, new_db) = (dir.path().join("orders.db"), dir.path().join("new.db"));

    let sample = Input::File(PathBuf::from(SAMPLE));
    let done = run(sample, limits, &db, &rejects, 4, &Shutdown::new());
    report("orders.csv -> orders.db", done);
    println!("  {}", rows_in(&db));

    // A client that sends 20 lines and goes silent: its input is incomplete.
    let first_lines: String = std::fs::read_to_string(SAMPLE)
        .unwrap()
        .lines()
        .take(20)
        .map(|line| format!("{line}\n"))
        .collect();
    for target in [&db, &new_db] {
        let (client, keep_open) = connected_client(first_lines.clone().into(), true);
        let name = target.file_name().unwrap().to_string_lossy();
        let done = run(
            Input::Tcp(client),
            limits,
            target,
            &rejects,
            4,
            &Shutdown::new(),
        );
        report(&format!("a silent client -> {name}"), done);
        drop(keep_open);
    }
    println!("  {}", rows_in(&db));
    println!("  new.db exists: {}", new_db.exists());
}

/// How many rows `orders` holds, and their first and last input line.
fn rows_in(db: &Path) -> String {
    let connection = rusqlite::Connection::open(db).unwrap();
    let query = "SELECT COUNT(*), MIN(line), MAX(line) FROM orders";
    let (rows, first, last): (u64, u64, u64) = connection
        .query_row(query, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    format!("orders.db holds {rows} rows, lines {first} to {last}")
}

/// A may socket connected to a client thread that sends `bytes`, then, if
/// `hold`, stays connected until the returned sender is dropped. (The
/// client is an OS thread, so std's blocking socket is fine there.)
fn connected_client(bytes: Vec<u8>, hold: bool) -> (TcpStream, std::sync::mpsc::Sender<()>) {
    use std::io::Write;
    let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (keep_open, closed) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(&bytes).unwrap();
        if hold {
            let _ = closed.recv(); // returns when the sender is dropped
        }
    });
    // Accepted on a coroutine, as a server would.
    let accepted = go!(move || listener.accept()).join().unwrap();
    (accepted.unwrap().0, keep_open)
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_line_bytes: 4096,
        idle: Duration::from_millis(300),
    };

    /// Runs `run` on its own thread, so that a hang fails the test.
    fn run_within_10s(input: Input, db: &Path) -> Result<Summary, Fatal> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let db = db.to_path_buf();
        thread::spawn(move || {
            let rejects = db.with_extension("rejects.csv");
            let _ = done_tx.send(run(input, LIMITS, &db, &rejects, 4, &Shutdown::new()));
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the run did not end within 10 s")
    }

    fn lines_in(db: &Path) -> Vec<u64> {
        let connection = rusqlite::Connection::open(db).unwrap();
        let mut query = connection.prepare("SELECT line FROM orders").unwrap();
        let lines = query.query_map([], |r| r.get(0)).unwrap();
        lines.map(Result::unwrap).collect()
    }

    #[test]
    fn the_sample_goes_into_the_table_in_input_order() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orders.db");
        let s = run_within_10s(Input::File(PathBuf::from(SAMPLE)), &db).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (41, 33, 8));
        let rejected = [12, 14, 16, 18, 20, 22, 24, 26];
        let expected: Vec<u64> = (2..=42).filter(|n| !rejected.contains(n)).collect();
        assert_eq!(lines_in(&db), expected);
        assert_eq!(rows_in(&db), "orders.db holds 33 rows, lines 2 to 42");
    }

    #[test]
    fn a_failed_run_rolls_back_and_keeps_the_rows_before_it() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orders.db");
        run_within_10s(Input::File(PathBuf::from(SAMPLE)), &db).unwrap();
        let before = lines_in(&db);
        let sample = std::fs::read(SAMPLE).unwrap();
        let (client, _keep_open) = connected_client(sample[..sample.len() / 2].to_vec(), true);
        let err = run_within_10s(Input::Tcp(client), &db).unwrap_err();
        assert!(err.0.starts_with("no data for"), "{err}");
        assert_eq!(
            lines_in(&db),
            before,
            "the failed run's rows were rolled back"
        );
    }

    #[test]
    fn a_failed_run_removes_the_database_it_created() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new.db");
        let (client, _keep_open) = connected_client(format!("{HEADER}\n").into(), true);
        let err = run_within_10s(Input::Tcp(client), &db).unwrap_err();
        assert!(err.0.starts_with("no data for"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_database_that_cannot_be_opened_is_fatal_before_anything_is_read() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("missing-folder/orders.db");
        let err = run_within_10s(Input::File(PathBuf::from(SAMPLE)), &db).unwrap_err();
        assert!(err.0.starts_with("SQLite "), "{err}");
        assert!(err.0.contains("unable to open database file"), "{err}");
    }
}
