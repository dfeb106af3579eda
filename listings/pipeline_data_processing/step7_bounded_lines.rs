//! Step 7: one bounded line reader for files and sockets. `BufRead::lines`
//! reads a line however long it is: a file with a 2 GB line, or a client
//! that never sends a newline, makes the reader buffer without limit. Here
//! the reader reads at most `max_line_bytes` + 1 bytes of a line, skips the
//! rest of an over-long one and hands it on as a reject (a line that is not
//! UTF-8 too). The same reader runs on an OS thread for a file and on a
//! coroutine for a TCP client, whose may socket parks the coroutine; a
//! client that sends nothing for `idle` is a fatal error, since its input
//! is incomplete.
//!
//! Run it: `cargo run --example step7_bounded_lines`

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

// ANCHOR: writer
/// The write stage, on its own OS thread, timing its writes and its waits.
fn write_records(
    input: Receiver<Item<CleanOrder>>,
    output: StagedFile,
    rejects: StagedFile,
) -> Result<(Summary, StagedFile, StagedFile, StageStats), Fatal> {
    let mut good = csv::Writer::from_writer(&output.file);
    let mut bad = csv::Writer::from_writer(&rejects.file);
    let mut summary = Summary::default();
    let mut stats = StageStats {
        name: "write",
        ..StageStats::default()
    };
    while let Ok(item) = timed(&mut stats.starved, || input.recv()) {
        let written = timed(&mut stats.busy, || match item {
            Ok(order) => {
                stats.records_in += 1;
                good.serialize(&order).map(|()| summary.written += 1)
            }
            Err(reject) => bad.serialize(&reject).map(|()| summary.rejected += 1),
        });
        written.map_err(|err| Fatal(format!("cannot write: {err}")))?;
    }
    good.flush().map_err(fatal("cannot write", &output.path))?;
    bad.flush().map_err(fatal("cannot write", &rejects.path))?;
    drop((good, bad));
    stats.records_out = summary.written;
    stats.queue_high_water = Some(input.high_water());
    Ok((summary, output, rejects, stats))
}
// ANCHOR_END: writer

// ANCHOR: run
/// Step 6's `run`, reading `input` with `limits`.
pub fn run(
    input: Input,
    limits: Limits,
    output: &Path,
    rejects: &Path,
    capacity: usize,
    shutdown: &Shutdown,
) -> Result<Summary, Fatal> {
    let started = Instant::now();
    // Open both destinations before reading anything: a bad path fails fast.
    let output = StagedFile::create(output)?;
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
    let (output, rejects) = (dir.path().join("clean.csv"), dir.path().join("rejects.csv"));
    let limits = Limits {
        max_line_bytes: 4096,
        idle: Duration::from_millis(300),
    };
    let report = |what: &str, result: Result<Summary, Fatal>| match result {
        Ok(s) => println!(
            "{what}: read {}, written {}, rejected {}",
            s.read, s.written, s.rejected
        ),
        Err(Fatal(message)) => println!("{what}: fatal: {message}"),
    };

    // A file with a 10 MB line and a line that is not UTF-8.
    let input = dir.path().join("odd.csv");
    write_odd_lines(&input);
    let file = Input::File(input);
    report(
        "odd.csv",
        run(file, limits, &output, &rejects, 4, &Shutdown::new()),
    );
    for reject in std::fs::read_to_string(&rejects).unwrap().lines() {
        println!("  {reject}");
    }

    // The sample, sent by a client over TCP.
    let sample = std::fs::read(SAMPLE).unwrap();
    let (client, keep_open) = connected_client(sample, false);
    let tcp = Input::Tcp(client);
    let summary = run(tcp, limits, &output, &rejects, 4, &Shutdown::new());
    report("the sample over TCP", summary);
    drop(keep_open);

    // A client that sends half a line, then nothing, and stays connected.
    let (client, keep_open) = connected_client(b"A-1,Jo,FR,1.5".to_vec(), true);
    let tcp = Input::Tcp(client);
    report(
        "a silent client",
        run(tcp, limits, &output, &rejects, 4, &Shutdown::new()),
    );
    drop(keep_open);
}

/// A header, a good record, a 10 MB line, a line that is not UTF-8, and
/// another good record.
fn write_odd_lines(path: &Path) {
    use std::io::Write;
    let mut file = io::BufWriter::new(File::create(path).unwrap());
    writeln!(file, "{HEADER}").unwrap();
    writeln!(file, "A-1,Jo,FR,1.50,EUR,2024-03-01").unwrap();
    writeln!(
        file,
        "A-2,{},FR,1.50,EUR,2024-03-01",
        "x".repeat(10_000_000)
    )
    .unwrap();
    file.write_all(b"A-3,J\xf6,FR,1.50,EUR,2024-03-01\n")
        .unwrap();
    writeln!(file, "A-4,Jo,FR,1.50,EUR,2024-03-01").unwrap();
    file.flush().unwrap();
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
    use std::io::Cursor;

    const LIMITS: Limits = Limits {
        max_line_bytes: 4096,
        idle: Duration::from_millis(300),
    };

    fn lines_of(source: impl BufRead, max_line_bytes: usize) -> Vec<String> {
        let mut source = source;
        let limits = Limits {
            max_line_bytes,
            ..LIMITS
        };
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut source, limits, &Shutdown::new()).unwrap() {
            lines.push(match line {
                RawLine::Text(text) => text,
                RawLine::TooLong => "<too long>".to_string(),
                RawLine::NotUtf8 => "<not UTF-8>".to_string(),
            });
        }
        lines
    }

    /// Runs `run` on its own thread, so that a hang fails the test.
    fn run_within_10s(input: Input, dir: &Path, shutdown: &Shutdown) -> Result<Summary, Fatal> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (dir, shutdown) = (dir.to_path_buf(), shutdown.clone());
        thread::spawn(move || {
            let (output, rejects) = (dir.join("out.csv"), dir.join("rejects.csv"));
            let _ = done_tx.send(run(input, LIMITS, &output, &rejects, 4, &shutdown));
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the run did not end within 10 s")
    }

    #[test]
    fn line_endings_the_limit_and_a_last_line_without_newline() {
        let text = format!("a\r\nb\n{}\n{}\nc", "x".repeat(8), "y".repeat(9));
        let lines = lines_of(Cursor::new(text), 8);
        assert_eq!(lines, ["a", "b", "xxxxxxxx", "<too long>", "c"]);
        assert_eq!(
            lines_of(Cursor::new(b"ok\n\xff\xfe\nok\n"), 8)[1],
            "<not UTF-8>"
        );
    }

    #[test]
    fn an_endless_line_is_skipped_and_the_next_one_read() {
        // 64 MiB without a newline, made as it is read: the reader keeps at
        // most 4097 bytes of it at a time.
        let endless = io::repeat(b'x').take(64 << 20);
        let source = BufReader::new(endless.chain(Cursor::new("\nnext\n")));
        assert_eq!(lines_of(source, 4096), ["<too long>", "next"]);
    }

    #[test]
    fn odd_lines_become_rejects_and_every_line_is_counted() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("odd.csv");
        write_odd_lines(&input);
        let s = run_within_10s(Input::File(input), dir.path(), &Shutdown::new()).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (4, 2, 2));
        let rejected = std::fs::read_to_string(dir.path().join("rejects.csv")).unwrap();
        assert_eq!(
            rejected,
            "line,reason\n3,line longer than 4096 bytes\n4,line is not UTF-8\n"
        );
    }

    #[test]
    fn the_sample_over_tcp_is_cleaned_like_the_file() {
        may_patterns::runtime::configure_for_tests();
        let (by_file, by_tcp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let file = Input::File(PathBuf::from(SAMPLE));
        let s = run_within_10s(file, by_file.path(), &Shutdown::new()).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (41, 33, 8));

        let (client, _keep_open) = connected_client(std::fs::read(SAMPLE).unwrap(), false);
        let s = run_within_10s(Input::Tcp(client), by_tcp.path(), &Shutdown::new()).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (41, 33, 8));
        for name in ["out.csv", "rejects.csv"] {
            let read = |dir: &Path| std::fs::read(dir.join(name)).unwrap();
            assert_eq!(read(by_file.path()), read(by_tcp.path()), "{name}");
        }
    }

    #[test]
    fn a_silent_client_is_fatal_and_leaves_no_output() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let (client, _keep_open) = connected_client(format!("{HEADER}\nA-1,Jo").into(), true);
        let started = Instant::now();
        let err = run_within_10s(Input::Tcp(client), dir.path(), &Shutdown::new()).unwrap_err();
        assert!(err.0.starts_with("no data for 300ms"), "{err}");
        assert!(started.elapsed() >= LIMITS.idle);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_stop_while_the_client_is_silent_ends_the_wait() {
        may_patterns::runtime::configure_for_tests();
        let (client, _keep_open) = connected_client(Vec::new(), true);
        let stopped = Shutdown::new();
        stopped.trigger();
        // Only the stop can end this wait: the client sends nothing and the
        // idle limit is far away.
        let limits = Limits {
            idle: Duration::from_secs(600),
            ..LIMITS
        };
        let waited = go!(move || {
            client.set_read_timeout(Some(READ_TICK)).unwrap();
            let mut source = BufReader::new(client);
            next_line(&mut source, limits, &stopped).map(|line| line.is_none())
        });
        assert_eq!(waited.join().unwrap(), Ok(true), "no line, no error");
    }
}
