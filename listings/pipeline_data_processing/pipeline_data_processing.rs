//! Pipeline data processing: the finished program.
//!
//! **Purpose.** Clean a data set of orders on its way into a system: read it
//! from a file or a TCP connection, parse CSV or JSON Lines, normalise every
//! record, check it against data quality rules, and write the good records
//! to a CSV/JSON Lines file or an SQLite database. Every bad record goes to a
//! reject file with its line number and the rule it broke; a fatal error
//! (full disk, unreadable input, lost client) leaves no partial output.
//!
//! **Architecture.** reader -> parse -> transform -> validate -> writer,
//! joined by `may_patterns::bounded` channels of `--buffer` slots. The
//! reader is an OS thread for a file (file reads block) and a coroutine for a
//! TCP connection (may's sockets park the coroutine, not the worker). Parse,
//! transform and validate are `--workers-per-stage` coroutines each. The
//! writer is an OS thread: file writes and SQLite calls block. Rejects travel
//! down the chain with the good records, so the writer sees every record.
//! Output is staged (a temporary file renamed on success, or one SQLite
//! transaction committed on success). Ctrl-C stops the reader; the rest
//! drains, and the output holds everything read. Every stage counts its
//! records and times its work, its waits for input and its waits for room.
//!
//! **Usage.**
//! `cargo run --release --example pipeline_data_processing -- --input listings/pipeline_data_processing/data/orders.csv --output /tmp/clean.csv`
//! (`--help` lists every flag with its default; `--json` prints the summary
//! as JSON; `--input tcp://127.0.0.1:9000 --format csv` listens for one
//! client, e.g. `nc 127.0.0.1 9000 < orders.csv`). Exit status: 0 on
//! success, 1 after a fatal error, 130 when stopped by Ctrl-C.
//!
//! **Performance.** `cargo bench --bench pipeline_data_processing` compares
//! the chain with `--sequential` (the same stages in one loop) for a
//! CPU-heavy transform and for one that waits on a simulated lookup; the
//! chapter shows the table. `--hash-rounds` and `--lookup-us` add those
//! costs to the transform stage so you can see them yourself.
//!
//! **Customization.** The record types (`RawOrder`, `Order`, `CleanOrder`),
//! `parse_csv`/`parse_json`, `transform` and `validate` are the schema: change
//! them for your data, and the SQLite table in `SqliteSink`. The stages,
//! channels, staging, shutdown and statistics do not depend on the schema.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use may::go;
use may::net::TcpListener;
use may_patterns::accept;
use may_patterns::bounded::{self, Receiver, Sender};
use may_patterns::cli::at_least_one;
use may_patterns::json::check_depth;
use may_patterns::pace::Pacer;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;
use may_patterns::stage::{timed, Outcome, Stage, StageStats};
use serde::{Deserialize, Serialize};
use tempfile::{NamedTempFile, TempPath};

// The record types and the parse, transform and validate functions are
// step 1's; only `parse_csv` gained a fast path.

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
    // ANCHOR: fast_csv
    // Step 6 measured parse as the slowest stage: a csv::Reader per line is
    // costly to build. A line without quotes is split on commas instead.
    let record = match line.text.contains('"') {
        false => csv::StringRecord::from(line.text.split(',').collect::<Vec<_>>()),
        true => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.text.as_bytes());
            match reader.records().next() {
                Some(Ok(record)) => record,
                Some(Err(err)) => return Err(format!("malformed CSV: {err}")),
                None => return Err("empty line".to_string()),
            }
        }
    };
    // ANCHOR_END: fast_csv
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

/// How deep a JSON Lines record may nest. A record is one flat object
/// (depth 1); the rest leaves room for extra fields, which are skipped. The
/// parse coroutines have 32 KiB stacks, and serde_json builds `amount` (a
/// `Value`) by recursion: a debug build overflowed at depth 16. A deeper
/// line is rejected unparsed.
pub const MAX_DEPTH: usize = 8;

/// A parse coroutine's stack, in words: 64 KiB, twice may's default. Its
/// most is parsing a record whose `amount` nests to `MAX_DEPTH`; a line's
/// length does not matter (the parser keeps text on the heap). Measured
/// with may's odd-stack-size report, `cargo test [--release] --example
/// pipeline_data_processing measure -- --ignored --nocapture` (`used
/// size`, in words): 3280 in a debug build, 789 in a release build, for
/// 64 KiB and 1 MiB lines alike (rustc 1.95, x86_64 Linux, 2026-12-01).
/// The stack holds the debug figure 2 times or more
/// (`PARSE_STACK_HEADROOM`); a test runs the worst case on
/// `PARSE_STACK_WORDS / PARSE_STACK_HEADROOM` words.
pub const PARSE_STACK_WORDS: usize = 0x2000;
/// How many times the measured worst case `PARSE_STACK_WORDS` must hold.
pub const PARSE_STACK_HEADROOM: usize = 2;

/// Parse one JSON Lines record (one JSON object per line).
pub fn parse_json(line: &Line) -> Result<RawOrder, String> {
    check_depth(line.text.as_bytes(), MAX_DEPTH).map_err(|err| format!("invalid JSON: {err}"))?;
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

// ANCHOR: cli
/// Clean a file or a TCP stream of orders: parse (CSV or JSON Lines),
/// normalise, validate, and write the good records to a CSV/JSON Lines file
/// or an SQLite database. Bad records go to a reject file with their line
/// number and reason. Exit status: 0 success, 1 fatal error, 130 Ctrl-C.
#[derive(Parser, Debug)]
#[command(name = "pipeline_data_processing")]
pub struct Args {
    /// A file to read, or tcp://ADDR to listen on ADDR for one client.
    #[arg(long)]
    input: String,
    /// A .csv or .jsonl file, or sqlite://PATH for a table `orders` in PATH.
    #[arg(long)]
    output: String,
    /// Input format [default: from the input's extension; required for tcp].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Where rejected records go, as CSV [default: <output>.rejects.csv].
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Slots in each queue between two stages.
    #[arg(long, default_value_t = 64, value_parser = at_least_one::<u64>)]
    buffer: u64,
    /// Coroutines in each of the parse, transform and validate stages. With
    /// 1, the output keeps the input's order; with more, it does not.
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u64>)]
    workers_per_stage: u64,
    /// Longest line accepted, in bytes; a longer one is rejected, not read.
    #[arg(long, default_value_t = 64 * 1024)]
    max_line_bytes: usize,
    /// Give up on a TCP client that sends nothing for this many seconds.
    #[arg(long, default_value_t = 10)]
    idle_timeout_secs: u64,
    /// Simulated CPU work in the transform stage: hash rounds per record.
    #[arg(long, default_value_t = 0)]
    hash_rounds: u32,
    /// Simulated lookup in the transform stage: microseconds of waiting per
    /// record (a remote call; parks the coroutine).
    #[arg(long, default_value_t = 0)]
    lookup_us: u64,
    /// Run every stage in one loop on one thread instead (the baseline).
    #[arg(long)]
    sequential: bool,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}
// ANCHOR_END: cli

/// How input lines are parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated, first line `order_id,customer,country,amount,currency,ordered_at`.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Where records come from.
pub enum Input {
    File(PathBuf),
    /// Accept one client on this listener and read until it closes.
    Tcp(TcpListener),
}

/// Where good records go.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Csv(PathBuf),
    Jsonl(PathBuf),
    Sqlite(PathBuf),
}

/// Simulated per-record costs in the transform stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Costs {
    pub hash_rounds: u32,
    pub lookup: Duration,
}

/// Everything `run` needs; `main` builds it from the command line.
pub struct Config {
    pub input: Input,
    pub format: Format,
    pub output: Output,
    pub rejects: PathBuf,
    pub buffer: usize,
    pub workers_per_stage: usize,
    pub max_line_bytes: usize,
    pub idle_timeout: Duration,
    pub costs: Costs,
}

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

/// What travels between two stages: a record, or why it was rejected.
pub type Item<T> = Result<T, Reject>;

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// The stages' numbers as `--json` prints them (durations in ms). The
/// numbers themselves are `may_patterns::stage::StageStats`, which has no
/// serde dependency.
fn stages_as_json<S: serde::Serializer>(stages: &[StageStats], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Stage {
        name: &'static str,
        workers: usize,
        records_in: u64,
        records_out: u64,
        rejected: u64,
        busy: f64,
        blocked: f64,
        starved: f64,
        queue_high_water: Option<usize>,
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    s.collect_seq(stages.iter().map(|st| Stage {
        name: st.name,
        workers: st.workers,
        records_in: st.items_in,
        records_out: st.items_out,
        rejected: st.rejected_total(),
        busy: ms(st.busy),
        blocked: ms(st.blocked),
        starved: ms(st.starved),
        queue_high_water: st.input_high_water,
    }))
}

// ANCHOR: read_lines
/// Read numbered lines from `source` and hand each to `emit` (which returns
/// false when nobody wants more). Used by the file reader (an OS thread) and
/// the TCP reader (a coroutine) alike.
///
/// A line longer than `max_line_bytes` is skipped and handed on as a
/// reject, so one bad client cannot make us buffer without limit. A read
/// that times out (a socket with a read timeout) is retried until `idle`
/// has passed with no data, checking `shutdown` in between. A CSV source's
/// first line must be the header, and is not a record.
fn read_lines(
    mut source: impl BufRead,
    limits: Limits,
    shutdown: &Shutdown,
    stats: &mut StageStats,
    mut emit: impl FnMut(Item<Line>, &mut StageStats) -> bool,
) -> Result<bool, Fatal> {
    let mut number = 0;
    loop {
        if shutdown.is_triggered() {
            return Ok(true); // stopped early
        }
        let started = Instant::now();
        let line = next_line(&mut source, limits, shutdown)?;
        stats.busy += started.elapsed();
        let Some(line) = line else {
            return Ok(shutdown.is_triggered());
        };
        number += 1;
        let item = match line {
            RawLine::Text(text) if number == 1 && limits.header => {
                if text.trim() != HEADER {
                    return Err(Fatal(format!("line 1: unexpected CSV header {text:?}")));
                }
                continue;
            }
            RawLine::Text(text) if text.trim().is_empty() => continue,
            RawLine::Text(text) => Ok(Line { number, text }),
            RawLine::TooLong => Err(Reject {
                line: number,
                reason: format!("line longer than {} bytes", limits.max_line_bytes),
            }),
            RawLine::NotUtf8 => Err(Reject {
                line: number,
                reason: "line is not UTF-8".to_string(),
            }),
        };
        stats.items_in += 1;
        if item.is_ok() {
            stats.items_out += 1;
        } else {
            stats.reject("unreadable line");
        }
        if !emit(item, stats) {
            return Ok(false); // the writer failed: it will say why
        }
    }
}

/// What `read_lines` needs to know about its source.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_line_bytes: usize,
    /// Give up after this long without data.
    pub idle: Duration,
    /// The first line is a CSV header.
    pub header: bool,
}

enum RawLine {
    Text(String),
    TooLong,
    NotUtf8,
}

/// The next line without its line ending, or `None` at the end of the
/// input (or on a stop while waiting for data).
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
            Err(err) if is_timeout(&err) => {
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

fn is_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}
// ANCHOR_END: read_lines

// ANCHOR: readers
/// How long a socket read waits before `read_lines` checks for a stop.
const READ_TICK: Duration = Duration::from_millis(100);

/// Start the read stage: an OS thread for a file, a coroutine for TCP.
fn spawn_reader(
    input: Input,
    limits: Limits,
    shutdown: Shutdown,
    output: Sender<Item<Line>>,
) -> Box<dyn FnOnce() -> (Result<bool, Fatal>, StageStats)> {
    let send = move |item, stats: &mut StageStats| {
        let sent = timed(&mut stats.blocked, || output.send(item));
        sent.is_ok()
    };
    match input {
        Input::File(path) => {
            let reader = thread::spawn(move || {
                let mut stats = StageStats::new("read", 1);
                let result = File::open(&path)
                    .map_err(fatal("cannot open", &path))
                    .and_then(|file| {
                        let source = BufReader::new(file);
                        read_lines(source, limits, &shutdown, &mut stats, send)
                    });
                (result, stats)
            });
            Box::new(move || reader.join().expect("the reader panicked"))
        }
        Input::Tcp(listener) => {
            let reader = go!(move || {
                let mut stats = StageStats::new("read", 1);
                let result = accept_one(&listener, &shutdown).and_then(|client| {
                    let Some(client) = client else {
                        return Ok(true); // stopped before anyone connected
                    };
                    let source = BufReader::new(client);
                    read_lines(source, limits, &shutdown, &mut stats, send)
                });
                (result, stats)
            });
            Box::new(move || reader.join().expect("the reader panicked"))
        }
    }
}

/// Wait for one client; `None` if `shutdown` fires first. may's `accept`
/// has no timeout, so the waker connects to it when the stop comes.
fn accept_one(
    listener: &TcpListener,
    shutdown: &Shutdown,
) -> Result<Option<may::net::TcpStream>, Fatal> {
    let waker = accept::wake_on_shutdown(listener, shutdown).map_err(|e| Fatal(e.to_string()))?;
    let accept = listener.accept();
    waker.finish(); // one accept is all this reader does
    let (client, _) = accept.map_err(|e| Fatal(format!("cannot accept a client: {e}")))?;
    if shutdown.is_triggered() {
        return Ok(None);
    }
    // The read timeout lets `read_lines` check for a stop and count idle time.
    client
        .set_read_timeout(Some(READ_TICK))
        .map_err(|e| Fatal(e.to_string()))?;
    Ok(Some(client))
}
// ANCHOR_END: readers

// ANCHOR: stages
/// Fit a stage's work to `may_patterns::stage`: a record is this stage's to
/// count; a reject it makes is counted here and still sent on, to the
/// writer's reject file; an earlier stage's reject passes through.
fn counted<I, O>(mut work: impl FnMut(I) -> Item<O>) -> impl FnMut(Item<I>) -> Outcome<Item<O>> {
    move |item| match item {
        Err(earlier) => Outcome::PassOn(Err(earlier)),
        Ok(record) => match work(record) {
            Ok(out) => Outcome::Out(Ok(out)),
            Err(reject) => Outcome::Rejected {
                reason: "invalid record",
                pass_on: Some(Err(reject)),
            },
        },
    }
}

fn parse_stage(format: Format) -> impl FnMut(Line) -> Item<RawOrder> {
    move |line| {
        let parsed = match format {
            Format::Csv => parse_csv(&line),
            Format::Jsonl => parse_json(&line),
        };
        parsed.map_err(|reason| Reject {
            line: line.number,
            reason,
        })
    }
}

/// `transform`, plus the simulated costs: hashing holds the worker (CPU
/// work), the lookup parks the coroutine (a remote call). Each worker has
/// its own `Pacer`: may 0.3.51 must not sleep a coroutine for under 1 ms,
/// so waits shorter than that are added up and slept off together.
fn transform_stage(costs: Costs) -> impl FnMut(RawOrder) -> Item<Order> {
    let mut pacer = Pacer::new();
    move |raw| {
        if costs.hash_rounds > 0 {
            std::hint::black_box(hash_rounds(&raw.order_id, costs.hash_rounds));
        }
        if !costs.lookup.is_zero() {
            pacer.wait(costs.lookup);
        }
        Ok(transform(raw))
    }
}

fn validate_stage(order: Order) -> Item<CleanOrder> {
    let line = order.line;
    validate(order).map_err(|reason| Reject { line, reason })
}

/// A cheap 64-bit mix (splitmix64's finaliser), `rounds` times over.
pub fn hash_rounds(text: &str, rounds: u32) -> u64 {
    let mut x = text
        .bytes()
        .fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(b));
    for _ in 0..rounds {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    x
}
// ANCHOR_END: stages

// ANCHOR: staged
/// An output file that only appears under its name once the run succeeded:
/// records go to a temporary file in the same folder, renamed by `commit`.
/// An existing device or pipe (/dev/null, /dev/full) is written in place.
struct StagedFile {
    file: File,
    /// Deletes the temporary file when dropped without `commit`.
    temp: Option<TempPath>,
    path: PathBuf,
}

impl StagedFile {
    fn create(path: &Path) -> Result<StagedFile, Fatal> {
        let staged = |file, temp| StagedFile {
            file,
            temp,
            path: path.to_path_buf(),
        };
        if path.metadata().is_ok_and(|m| !m.is_file()) {
            let file = OpenOptions::new().write(true).open(path);
            return Ok(staged(file.map_err(fatal("cannot open", path))?, None));
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
        let (file, temp) = temp
            .map_err(fatal("cannot create a file in", folder))?
            .into_parts();
        Ok(staged(file, Some(temp)))
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

/// A staged file that records are serialised into, as CSV or JSON Lines.
struct FileSink {
    staged: StagedFile,
    writer: FileWriter,
}

enum FileWriter {
    Csv(Box<csv::Writer<File>>),
    Jsonl(io::BufWriter<File>),
}

impl FileSink {
    fn create(path: &Path, jsonl: bool) -> Result<FileSink, Fatal> {
        let staged = StagedFile::create(path)?;
        let file = staged
            .file
            .try_clone()
            .map_err(fatal("cannot open", path))?;
        let writer = match jsonl {
            true => FileWriter::Jsonl(io::BufWriter::new(file)),
            false => FileWriter::Csv(Box::new(csv::Writer::from_writer(file))),
        };
        Ok(FileSink { staged, writer })
    }

    fn write(&mut self, record: &impl Serialize) -> Result<(), Fatal> {
        let path = &self.staged.path;
        let result = match &mut self.writer {
            FileWriter::Csv(csv) => csv.serialize(record).map_err(io::Error::from),
            FileWriter::Jsonl(out) => serde_json::to_writer(&mut *out, record)
                .map_err(io::Error::from)
                .and_then(|()| io::Write::write_all(out, b"\n")),
        };
        result.map_err(fatal("cannot write", path))
    }

    /// Flush what is buffered; the file is still staged.
    fn finish(mut self) -> Result<StagedFile, Fatal> {
        let flushed = match &mut self.writer {
            FileWriter::Csv(csv) => csv.flush(),
            FileWriter::Jsonl(out) => io::Write::flush(out),
        };
        flushed.map_err(fatal("cannot write", &self.staged.path))?;
        Ok(self.staged)
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
    fn open(path: &Path) -> Result<SqliteSink, Fatal> {
        let failed = |err: rusqlite::Error| Fatal(format!("SQLite {}: {err}", path.display()));
        let created = !path.exists();
        let mut sink = SqliteSink {
            connection: None,
            path: path.to_path_buf(),
            created,
        };
        let connection = rusqlite::Connection::open(path).map_err(failed)?;
        connection
            .execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS orders (
                     line INTEGER NOT NULL, order_id TEXT NOT NULL,
                     customer TEXT NOT NULL, country TEXT NOT NULL,
                     amount REAL NOT NULL, currency TEXT NOT NULL,
                     amount_eur_cents INTEGER NOT NULL, ordered_at TEXT NOT NULL);",
            )
            .map_err(failed)?;
        sink.connection = Some(connection);
        Ok(sink)
    }

    fn write(&mut self, o: &CleanOrder) -> Result<(), Fatal> {
        let connection = self.connection.as_ref().expect("open until committed");
        let mut insert = connection
            .prepare_cached("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .map_err(|err| Fatal(format!("SQLite {}: {err}", self.path.display())))?;
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
        insert
            .execute(row)
            .map(drop)
            .map_err(|err| Fatal(format!("SQLite {}: {err}", self.path.display())))
    }

    fn commit(mut self) -> Result<(), Fatal> {
        let connection = self.connection.take().expect("open until committed");
        let committed = connection
            .execute_batch("COMMIT")
            .and_then(|()| connection.close().map_err(|(_, err)| err));
        committed.map_err(|err| Fatal(format!("SQLite {}: {err}", self.path.display())))
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
/// The write stage's state: where good records and rejects go.
struct Writer {
    records: RecordSink,
    rejects: FileSink,
    stats: StageStats,
    rejects_written: u64,
}

enum RecordSink {
    File(FileSink),
    Sqlite(SqliteSink),
}

impl Writer {
    /// Open every destination before anything is read: a bad path fails fast.
    fn open(output: &Output, rejects: &Path) -> Result<Writer, Fatal> {
        let records = match output {
            Output::Csv(path) => RecordSink::File(FileSink::create(path, false)?),
            Output::Jsonl(path) => RecordSink::File(FileSink::create(path, true)?),
            Output::Sqlite(path) => RecordSink::Sqlite(SqliteSink::open(path)?),
        };
        Ok(Writer {
            records,
            rejects: FileSink::create(rejects, false)?,
            stats: StageStats::new("write", 1),
            rejects_written: 0,
        })
    }

    fn write(&mut self, item: Item<CleanOrder>) -> Result<(), Fatal> {
        let started = Instant::now();
        let result = match &item {
            Ok(order) => {
                self.stats.items_in += 1;
                match &mut self.records {
                    RecordSink::File(file) => file.write(order),
                    RecordSink::Sqlite(db) => db.write(order),
                }
                .map(|()| self.stats.items_out += 1)
            }
            Err(reject) => self
                .rejects
                .write(reject)
                .map(|()| self.rejects_written += 1),
        };
        self.stats.busy += started.elapsed();
        result
    }

    /// Flush both destinations. Nothing is committed yet: only `run` knows
    /// whether every other stage succeeded too.
    fn finish(self) -> Result<(Pending, StageStats, u64), Fatal> {
        let records = match self.records {
            RecordSink::File(file) => Pending::File(file.finish()?),
            RecordSink::Sqlite(db) => Pending::Sqlite(db),
        };
        let rejects = self.rejects.finish()?;
        let pending = Pending::Both(Box::new(records), rejects);
        Ok((pending, self.stats, self.rejects_written))
    }
}

/// Output that is complete but not yet visible.
enum Pending {
    File(StagedFile),
    Sqlite(SqliteSink),
    /// The records, then the reject file.
    Both(Box<Pending>, StagedFile),
}

impl Pending {
    fn commit(self) -> Result<(), Fatal> {
        match self {
            Pending::File(file) => file.commit(),
            Pending::Sqlite(db) => db.commit(),
            Pending::Both(records, rejects) => {
                records.commit()?;
                rejects.commit()
            }
        }
    }
}

type Written = Result<(Pending, StageStats, u64), Fatal>;

/// The write stage's loop, on its own OS thread: file writes and SQLite
/// calls block, and must not hold a may worker. Returning early drops
/// `input`, so every stage's next send fails and the chain stops.
fn drain(mut writer: Writer, input: Receiver<Item<CleanOrder>>) -> Written {
    let mut starved = Duration::ZERO;
    while let Ok(item) = timed(&mut starved, || input.recv()) {
        writer.write(item)?;
    }
    writer.stats.starved = starved;
    writer.stats.input_high_water = Some(input.high_water());
    writer.finish()
}
// ANCHOR_END: writer

// ANCHOR: run
/// Run the chain: reader -> parse -> transform -> validate -> writer.
pub fn run(config: Config, shutdown: &Shutdown) -> Result<Summary, Fatal> {
    let started = Instant::now();
    let writer = Writer::open(&config.output, &config.rejects)?;
    let (n, format, costs) = (config.workers_per_stage, config.format, config.costs);
    let (lines_tx, lines_rx) = bounded::channel(config.buffer);
    let (raw_tx, raw_rx) = bounded::channel(config.buffer);
    let (orders_tx, orders_rx) = bounded::channel(config.buffer);
    let (clean_tx, clean_rx) = bounded::channel(config.buffer);

    let limits = config.limits();
    let reader = spawn_reader(config.input, limits, shutdown.clone(), lines_tx);
    let parse =
        Stage::new("parse", n)
            .stack_words(PARSE_STACK_WORDS)
            .spawn(lines_rx, raw_tx, || counted(parse_stage(format)));
    let transform =
        Stage::new("transform", n).spawn(raw_rx, orders_tx, || counted(transform_stage(costs)));
    let validate = Stage::new("validate", n).spawn(orders_rx, clean_tx, || counted(validate_stage));
    let writer = thread::spawn(move || drain(writer, clean_rx));

    let (read, read_stats) = reader();
    let mut stages = vec![read_stats];
    stages.push(parse.join());
    stages.push(transform.join());
    stages.push(validate.join());
    // The writer's error first: when it fails, the others only see their
    // sends fail. Any error drops the pending output, which deletes it.
    let (pending, write_stats, rejects_written) = writer.join().expect("the writer panicked")?;
    let stopped_early = read?;
    pending.commit()?;
    stages.push(write_stats);
    Ok(Summary::new(
        stages,
        rejects_written,
        stopped_early,
        started,
    ))
}
// ANCHOR_END: run

// ANCHOR: sequential
/// The baseline: the same stages in one loop on the calling thread.
pub fn run_sequential(config: Config, shutdown: &Shutdown) -> Result<Summary, Fatal> {
    let started = Instant::now();
    let mut writer = Writer::open(&config.output, &config.rejects)?;
    let limits = config.limits();
    let (mut parse, mut transform) = (parse_stage(config.format), transform_stage(config.costs));
    let source: Box<dyn BufRead> = match config.input {
        Input::File(path) => Box::new(BufReader::new(
            File::open(&path).map_err(fatal("cannot open", &path))?,
        )),
        Input::Tcp(listener) => match accept_one(&listener, shutdown)? {
            Some(client) => Box::new(BufReader::new(client)),
            None => Box::new(io::empty()),
        },
    };
    let mut read_stats = StageStats::new("read", 1);
    let mut failure = None;
    let read = read_lines(source, limits, shutdown, &mut read_stats, |item, _| {
        let item = item.and_then(&mut parse).and_then(&mut transform);
        match writer.write(item.and_then(validate_stage)) {
            Ok(()) => true,
            Err(fatal) => {
                failure = Some(fatal);
                false
            }
        }
    });
    if let Some(fatal) = failure {
        return Err(fatal);
    }
    let stopped_early = read?;
    let (pending, write_stats, rejects_written) = writer.finish()?;
    pending.commit()?;
    let stages = vec![read_stats, write_stats];
    Ok(Summary::new(
        stages,
        rejects_written,
        stopped_early,
        started,
    ))
}
// ANCHOR_END: sequential

impl Config {
    fn limits(&self) -> Limits {
        Limits {
            max_line_bytes: self.max_line_bytes,
            idle: self.idle_timeout,
            header: self.format == Format::Csv,
        }
    }
}

/// What one run did.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub read: u64,
    pub written: u64,
    pub rejected: u64,
    pub stopped_early: bool,
    pub conserved: bool,
    #[serde(serialize_with = "as_ms")]
    pub elapsed: Duration,
    pub records_per_s: f64,
    #[serde(serialize_with = "stages_as_json")]
    pub stages: Vec<StageStats>,
}

impl Summary {
    fn new(
        stages: Vec<StageStats>,
        rejected: u64,
        stopped_early: bool,
        started: Instant,
    ) -> Summary {
        let elapsed = started.elapsed();
        let read = stages[0].items_in;
        let written = stages.last().map_or(0, |w| w.items_out);
        Summary {
            read,
            written,
            rejected,
            stopped_early,
            conserved: read == written + rejected,
            elapsed,
            records_per_s: read as f64 / elapsed.as_secs_f64().max(1e-9),
            stages,
        }
    }

    // ANCHOR: print
    fn print_text(&self) {
        println!(
            "read {} records in {:.1?} (~{:.0} records/s){}",
            self.read,
            self.elapsed,
            self.records_per_s,
            if self.stopped_early {
                ", stopped early"
            } else {
                ""
            }
        );
        println!("stage      workers     in    out  rejected");
        for s in &self.stages {
            let queue = s
                .input_high_water
                .map_or(String::new(), |q| format!(", queue max ~{q}"));
            println!(
                "{:<10} {:>7} {:>6} {:>6} {:>9}  busy {:.1?}, blocked {:.1?}, starved {:.1?}{queue}",
                s.name, s.workers, s.items_in, s.items_out, s.rejected_total(), s.busy, s.blocked, s.starved
            );
        }
        println!(
            "books: read {} = written {} + rejected {}: {}",
            self.read,
            self.written,
            self.rejected,
            if self.conserved {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        );
    }
    // ANCHOR_END: print
}

// ANCHOR: config
impl Args {
    /// Turn the flags into a `Config`; binds the listener for `tcp://`.
    fn config(&self) -> Result<Config, Fatal> {
        let (input, tcp) = match self.input.strip_prefix("tcp://") {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .map_err(|e| Fatal(format!("cannot listen on {addr}: {e}")))?;
                let bound = listener.local_addr().map_err(|e| Fatal(e.to_string()))?;
                eprintln!("listening on {bound}");
                (Input::Tcp(listener), true)
            }
            None => (Input::File(PathBuf::from(&self.input)), false),
        };
        let format = match (self.format, tcp) {
            (Some(format), _) => format,
            (None, true) => return Err(Fatal("--format is required with tcp://".into())),
            (None, false) => format_of(Path::new(&self.input))?,
        };
        let output = match self.output.strip_prefix("sqlite://") {
            Some(path) => Output::Sqlite(PathBuf::from(path)),
            None if self.output.ends_with(".jsonl") => Output::Jsonl(self.output.clone().into()),
            None => Output::Csv(PathBuf::from(&self.output)),
        };
        let rejects = match &self.rejects {
            Some(path) => path.clone(),
            None => {
                let out = self
                    .output
                    .strip_prefix("sqlite://")
                    .unwrap_or(&self.output);
                PathBuf::from(format!("{out}.rejects.csv"))
            }
        };
        Ok(Config {
            input,
            format,
            output,
            rejects,
            buffer: self.buffer as usize,
            workers_per_stage: self.workers_per_stage as usize,
            max_line_bytes: self.max_line_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            costs: Costs {
                hash_rounds: self.hash_rounds,
                lookup: Duration::from_micros(self.lookup_us),
            },
        })
    }
}

/// `.csv` is CSV, `.jsonl` or `.ndjson` is JSON Lines.
fn format_of(path: &Path) -> Result<Format, Fatal> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        _ => Err(Fatal(format!(
            "cannot tell the format of {}: use --format",
            path.display()
        ))),
    }
}
// ANCHOR_END: config

// ANCHOR: main
fn main() -> ExitCode {
    let args = Args::parse();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    if let Err(err) = ctrlc::set_handler(move || on_ctrl_c.trigger()) {
        eprintln!("cannot install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    let result = args.config().and_then(|config| match args.sequential {
        true => run_sequential(config, &shutdown),
        false => run(config, &shutdown),
    });
    let summary = match result {
        Ok(summary) => summary,
        Err(Fatal(message)) => {
            eprintln!("fatal: {message}; no output was written");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary).expect("plain data"));
    } else {
        summary.print_text();
    }
    match (summary.conserved, summary.stopped_early) {
        (false, _) => ExitCode::FAILURE,
        (true, true) => ExitCode::from(130), // what a shell reports for Ctrl-C
        (true, false) => ExitCode::SUCCESS,
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    // (Only `super::*` here: the bench includes this file as a module.)
    use super::*;

    const SAMPLE_DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/listings/pipeline_data_processing/data"
    );

    /// Records that take a parse coroutine deepest: `amount` (parsed as a
    /// `Value`) nested to `MAX_DEPTH` as arrays and as objects, each line
    /// `len` bytes long.
    fn worst_admitted_lines(len: usize) -> Vec<String> {
        let levels = MAX_DEPTH - 1; // the record is level 1
        let arrays = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        let objects = format!("{}1{}", r#"{"k":"#.repeat(levels), "}".repeat(levels));
        let line = |amount: String| {
            let head = format!(r#"{{"amount":{amount},"order_id":"A-1","customer":""#);
            let tail = r#"","country":"DE","currency":"EUR","ordered_at":"2024-03-01"}"#;
            let pad = "\\\\".repeat((len - head.len() - tail.len()) / 2);
            format!("{head}{pad}{tail}")
        };
        vec![line(arrays), line(objects)]
    }

    /// Run `lines` through a one-worker parse stage whose coroutine has a
    /// stack of `stack_words`; what it passed on.
    fn parse_on_stack(stack_words: usize, lines: &[String]) -> Vec<Item<RawOrder>> {
        may_patterns::runtime::configure_for_tests();
        let (tx, rx) = bounded::channel(lines.len() + 1);
        let (out_tx, out_rx) = bounded::channel(lines.len() + 1);
        let parse = Stage::new("parse", 1).stack_words(stack_words);
        let parse = parse.spawn(rx, out_tx, || counted(parse_stage(Format::Jsonl)));
        for (n, text) in lines.iter().enumerate() {
            let line = Line {
                number: n as u64 + 1,
                text: text.clone(),
            };
            tx.send(Ok(line)).unwrap();
        }
        drop(tx);
        parse.join();
        out_rx.iter().collect()
    }

    /// What `PARSE_STACK_WORDS` is sized from: may prints a coroutine's
    /// stack use when it ends if its stack size is odd.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn measure_the_parse_stack() {
        for len in [64 * 1024, 1024 * 1024] {
            let out = parse_on_stack(PARSE_STACK_WORDS | 1, &worst_admitted_lines(len));
            println!("lines of {len} bytes: {} records parsed", out.len());
        }
    }

    #[test]
    fn the_deepest_records_admitted_parse_on_a_fraction_of_the_stack() {
        let mut lines = worst_admitted_lines(64 * 1024);
        let levels = MAX_DEPTH; // one more than admitted
        lines.push(format!(
            r#"{{"amount":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        ));
        let out = parse_on_stack(PARSE_STACK_WORDS / PARSE_STACK_HEADROOM, &lines);
        let reasons: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().unwrap_err().reason.as_str())
            .collect();
        assert_eq!(reasons.len(), 3, "every line came out: {reasons:?}");
        assert!(reasons[..2]
            .iter()
            .all(|r| r.starts_with("amount is not a number: ")));
        assert!(
            reasons[2].starts_with("invalid JSON: JSON nested deeper than 8 levels"),
            "{}",
            reasons[2]
        );
    }

    fn config(input: Input, format: Format, output: Output, dir: &Path) -> Config {
        Config {
            input,
            format,
            output,
            rejects: dir.join("rejects.csv"),
            buffer: 4,
            workers_per_stage: 1,
            max_line_bytes: 200,
            idle_timeout: Duration::from_secs(5),
            costs: Costs::default(),
        }
    }

    fn sample(name: &str) -> Input {
        Input::File(Path::new(SAMPLE_DIR).join(name))
    }

    /// `run` on a thread; fail if it has not returned within 10 s.
    fn run_within_10s(config: Config, shutdown: &Shutdown) -> Result<Summary, Fatal> {
        let shutdown = shutdown.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = done_tx.send(run(config, &shutdown));
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the run did not end within 10 s")
    }

    fn first_column(text: &str) -> Vec<u64> {
        text.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn csv_and_jsonl_samples_give_the_same_records_in_input_order() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.csv");
        let cfg = config(
            sample("orders.csv"),
            Format::Csv,
            Output::Csv(out.clone()),
            dir.path(),
        );
        let s = run_within_10s(cfg, &Shutdown::new()).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (41, 33, 8));
        let from_csv = std::fs::read_to_string(&out).unwrap();
        let lines = first_column(&from_csv);
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");

        let out = dir.path().join("b.csv");
        let cfg = config(
            sample("orders.jsonl"),
            Format::Jsonl,
            Output::Csv(out.clone()),
            dir.path(),
        );
        let s = run_within_10s(cfg, &Shutdown::new()).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (41, 33, 8));
        // JSON Lines has no header, so every line number is one less.
        let from_jsonl = first_column(&std::fs::read_to_string(&out).unwrap());
        assert_eq!(from_jsonl, lines.iter().map(|n| n - 1).collect::<Vec<_>>());
        let rejects = std::fs::read_to_string(dir.path().join("rejects.csv")).unwrap();
        assert!(
            rejects.contains("11,invalid JSON: EOF while parsing an object"),
            "{rejects}"
        );
    }

    #[test]
    fn sequential_and_chain_with_two_workers_agree() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let cfg = config(
            sample("orders.csv"),
            Format::Csv,
            Output::Jsonl(a.clone()),
            dir.path(),
        );
        run_sequential(cfg, &Shutdown::new()).unwrap();
        let mut cfg = config(
            sample("orders.csv"),
            Format::Csv,
            Output::Jsonl(b.clone()),
            dir.path(),
        );
        cfg.workers_per_stage = 2;
        let s = run_within_10s(cfg, &Shutdown::new()).unwrap();
        assert!(s.conserved);
        let sorted = |path: &Path| {
            let mut lines: Vec<String> = std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&a), sorted(&b), "same records, order aside");
        assert_eq!(s.stages[1].workers, 2);
    }

    #[test]
    fn over_long_and_non_utf8_lines_are_rejected_and_the_rest_goes_on() {
        may_patterns::runtime::configure_for_tests();
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let mut file = File::create(&input).unwrap();
        writeln!(file, "{HEADER}").unwrap();
        writeln!(file, "A-1,Jo,FR,1,EUR,2024-03-01").unwrap();
        writeln!(file, "A-2,{},FR,1,EUR,2024-03-01", "x".repeat(500)).unwrap();
        file.write_all(b"A-3,J\xff,FR,1,EUR,2024-03-01\n").unwrap();
        write!(file, "A-4,Jo,FR,1,EUR,2024-03-01").unwrap(); // no final newline
        drop(file);
        let out = dir.path().join("out.csv");
        let cfg = config(
            Input::File(input),
            Format::Csv,
            Output::Csv(out.clone()),
            dir.path(),
        );
        let s = run_within_10s(cfg, &Shutdown::new()).unwrap();
        assert_eq!((s.read, s.written, s.rejected), (4, 2, 2));
        let rejects = std::fs::read_to_string(dir.path().join("rejects.csv")).unwrap();
        assert_eq!(
            rejects,
            "line,reason\n3,line longer than 200 bytes\n4,line is not UTF-8\n"
        );
        assert_eq!(first_column(&std::fs::read_to_string(out).unwrap()), [2, 5]);
    }

    #[test]
    fn a_fatal_write_leaves_no_database_and_no_reject_file() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orders.db");
        let mut cfg = config(
            sample("orders.csv"),
            Format::Csv,
            Output::Sqlite(db.clone()),
            dir.path(),
        );
        cfg.rejects = PathBuf::from("/dev/full");
        let err = run_within_10s(cfg, &Shutdown::new()).unwrap_err();
        assert!(err.0.contains("No space left on device"), "{err}");
        assert!(!db.exists(), "the half-filled database was removed");
        let cfg = config(
            sample("orders.csv"),
            Format::Csv,
            Output::Sqlite(db.clone()),
            dir.path(),
        );
        let s = run_within_10s(cfg, &Shutdown::new()).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows: u64 = conn
            .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, s.written);
    }

    #[test]
    fn tcp_input_reads_one_client_until_it_closes() {
        may_patterns::runtime::configure_for_tests();
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let out = dir.path().join("out.csv");
        let cfg = config(
            Input::Tcp(listener),
            Format::Csv,
            Output::Csv(out.clone()),
            dir.path(),
        );
        let client = thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            let data = std::fs::read(Path::new(SAMPLE_DIR).join("orders.csv")).unwrap();
            stream.write_all(&data).unwrap();
        });
        let s = run_within_10s(cfg, &Shutdown::new()).unwrap();
        client.join().unwrap();
        assert_eq!((s.read, s.written, s.rejected), (41, 33, 8));
    }

    #[test]
    fn a_silent_client_times_out_and_nothing_is_written() {
        may_patterns::runtime::configure_for_tests();
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let out = dir.path().join("out.csv");
        let mut cfg = config(
            Input::Tcp(listener),
            Format::Csv,
            Output::Csv(out.clone()),
            dir.path(),
        );
        cfg.idle_timeout = Duration::from_millis(300);
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(format!("{HEADER}\nA-1,Jo,FR,1,EUR,2024-03-01\nA-2,Jo").as_bytes())
            .unwrap();
        let err = run_within_10s(cfg, &Shutdown::new()).unwrap_err();
        assert!(err.0.starts_with("no data for 300ms"), "{err}");
        assert!(!out.exists());
        drop(stream);
    }

    #[test]
    fn a_stop_while_waiting_for_a_client_ends_the_run() {
        may_patterns::runtime::configure_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let out = dir.path().join("out.csv");
        let cfg = config(
            Input::Tcp(listener),
            Format::Csv,
            Output::Csv(out.clone()),
            dir.path(),
        );
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            stop.trigger();
        });
        let s = run_within_10s(cfg, &shutdown).unwrap();
        assert!(s.stopped_early && s.conserved && s.read == 0, "{s:?}");
    }

    #[test]
    fn quoted_and_plain_csv_lines_parse_alike() {
        let line = |text: &str| Line {
            number: 2,
            text: text.to_string(),
        };
        let plain = parse_csv(&line("A-1,Jo,FR,1.5,EUR,2024-03-01")).unwrap();
        let quoted = parse_csv(&line(r#""A-1","Jo",FR,1.5,EUR,"2024-03-01""#)).unwrap();
        assert_eq!(plain, quoted);
        let comma = parse_csv(&line(r#"A-1,"Smith, Jo",FR,1.5,EUR,2024-03-01"#)).unwrap();
        assert_eq!(comma.customer, "Smith, Jo");
        assert_eq!(
            parse_csv(&line("A-1,Jo,FR")).unwrap_err(),
            "expected 6 columns, found 3"
        );
    }

    #[test]
    fn the_command_line_picks_formats_and_defaults() {
        let args =
            Args::try_parse_from(["p", "--input", "a.jsonl", "--output", "sqlite://o.db"]).unwrap();
        let cfg = args.config().unwrap();
        assert_eq!(cfg.format, Format::Jsonl);
        assert_eq!(cfg.output, Output::Sqlite("o.db".into()));
        assert_eq!(cfg.rejects, PathBuf::from("o.db.rejects.csv"));
        assert_eq!((cfg.buffer, cfg.workers_per_stage), (64, 1));
        let args = Args::try_parse_from(["p", "--input", "a.txt", "--output", "o.csv"]).unwrap();
        assert!(args.config().is_err());
        let err = Args::try_parse_from(["p", "--input", "a", "--output", "o", "--buffer", "0"]);
        assert!(err.is_err());
    }
}
