//! Stream processing: the finished program.
//!
//! **Purpose.** Real-time analytics over an unbounded stream of events: per
//! window of event time and per key, the count, sum, minimum, maximum and
//! 50th/90th/99th percentiles of a numeric field, emitted as each window
//! closes. Out-of-order events within the allowed lateness still count; later
//! ones are counted as late, per window. Nothing is dropped silently.
//!
//! **Architecture.** A source (the built-in generator, or a TCP listener with
//! one coroutine per connection reading newline-delimited JSON) parses each
//! line where it arrives and offers the event to one bounded ingest channel
//! of `--buffer` slots, under `--policy`: `block` parks the source (for TCP,
//! the connection stops reading, and TCP flow control slows the client),
//! `drop` counts the event as dropped. One window coroutine owns a
//! deterministic `Windower`: it adds each event to its windows, moves the
//! watermark (newest event time minus `--lateness`), and sends every window
//! whose end the watermark passed to the main thread, which prints it. When
//! nothing arrives for `--idle`, the watermark moves on by the quiet time. On
//! Ctrl-C (or after `--duration`, or `--events` generated events) the source
//! stops, the window coroutine emits every open window marked as flushed, and
//! the totals are printed: events, malformed, late, dropped.
//!
//! **Usage.**
//! `cargo run --example stream_processing -- --rate 2000 --window 1s --slide 200ms`
//! (generator), or `cargo run --example stream_processing -- --source tcp://127.0.0.1:7070`
//! and send lines such as `{"ts":1200,"sensor":"pump","value":3.5}` with
//! `nc 127.0.0.1 7070`. `--json` prints one JSON object per closed window and
//! one with the totals. `--help` lists every flag and its default.
//!
//! **Performance.** `cargo bench --bench stream_processing` measures events per
//! second through the window operator (fed through the bounded channel on
//! coroutines, and in one sequential loop) and the latency from the event that
//! closes a window to the window's emission; the chapter shows the tables.
//! Every value of every open window is kept, for exact percentiles: memory
//! grows with rate x (window + lateness) x (window / slide).
//!
//! **Customization.** The key and value fields are flags. Replace `KeyStats`
//! to compute other aggregates; swap the kept values for a sketch (t-digest,
//! HDR histogram) at high rates. Add a subscriber (an alerting rule, an
//! archive) with the broadcaster of step 6 in front of the window coroutine.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::error::ErrorKind as ClapError;
use clap::{CommandFactory, Parser, ValueEnum};
use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::{Mutex, WaitGroup};
use may_patterns::accept;
use may_patterns::bounded::{self, Receiver, RecvTimeoutError, Sender, TrySendError};
use may_patterns::cli::at_least_one;
use may_patterns::json::check_depth;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::shutdown::Shutdown;
use may_patterns::timeout::for_may;
use serde::Serialize;

// ANCHOR: cli
/// Windowed analytics over a stream of newline-delimited JSON events: per
/// window of event time and per key, count, sum, min, max, p50, p90, p99.
#[derive(Parser, Debug)]
#[command(name = "stream_processing")]
struct Args {
    /// Where events come from: `gen` (the built-in generator) or
    /// `tcp://ADDR` (listen on ADDR; port 0 picks a free port).
    #[arg(long, default_value = "gen", value_parser = parse_source)]
    source: Source,
    /// Generator: events per second, spread over four keys.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one::<u64>)]
    rate: u64,
    /// Generator: stop after this many events (0: never).
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Generator: one event in N is held back by lateness + window, so that
    /// it arrives late (0: none).
    #[arg(long, default_value_t = 100)]
    late_every: u64,
    /// Window length, in event time (whole milliseconds, at least 1ms).
    #[arg(long, default_value = "1s", value_parser = window_ms)]
    window: Duration,
    /// A new window starts every SLIDE (sliding windows; at most the window
    /// length, or some events would fall between windows); default: the
    /// window length (tumbling windows). Each event is kept in WINDOW / SLIDE
    /// windows at once, so a small slide multiplies memory and work.
    #[arg(long, value_parser = window_ms)]
    slide: Option<Duration>,
    /// The JSON field that holds the key events are grouped by.
    #[arg(long, default_value = "sensor")]
    key: String,
    /// The JSON field that holds the number to aggregate.
    #[arg(long, default_value = "value")]
    value: String,
    /// How far behind the newest event time the watermark trails: events up
    /// to this much out of order still count in their window.
    #[arg(long, default_value = "500ms", value_parser = whole_ms)]
    lateness: Duration,
    /// After this long without an event, the watermark moves on with the
    /// wall clock, so the last windows close.
    #[arg(long, default_value = "2s", value_parser = timeout)]
    idle: Duration,
    /// What a source does when the ingest buffer is full.
    #[arg(long, value_enum, default_value_t = Policy::Block)]
    policy: Policy,
    /// Events the ingest buffer holds.
    #[arg(long, default_value_t = 1024, value_parser = at_least_one::<u64>)]
    buffer: u64,
    /// TCP: close a connection that sends nothing for this long.
    #[arg(long, default_value = "30s", value_parser = timeout)]
    conn_timeout: Duration,
    /// TCP: connections served at once; a client beyond this is closed at
    /// once (and logged), so open sockets and their coroutines stay bounded.
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<u64>)]
    max_connections: u64,
    /// Stop by itself after this long, as Ctrl-C would.
    #[arg(long, value_parser = timeout)]
    duration: Option<Duration>,
    /// Print one JSON object per closed window, then one with the totals.
    #[arg(long)]
    json: bool,
}
// ANCHOR_END: cli

/// Where events come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Generator,
    Tcp(String),
}

/// A duration of event time: whole milliseconds, as events are stamped.
fn whole_ms(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    match duration.subsec_nanos() % 1_000_000 {
        0 => Ok(duration),
        _ => Err("event time is counted in whole milliseconds".to_owned()),
    }
}

/// A window's length or slide: whole milliseconds, and not zero.
fn window_ms(text: &str) -> Result<Duration, String> {
    match whole_ms(text)? {
        Duration::ZERO => Err("a window must be at least 1ms".to_owned()),
        duration => Ok(duration),
    }
}

/// A wait on a coroutine or a socket. may reads a zero timeout as "none",
/// so 0 is refused rather than meaning "wait for ever"; `Args::config`
/// rounds the rest up to what may keeps (`timeout::for_may`).
fn timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|e| e.to_string())? {
        Duration::ZERO => Err("must be longer than 0".to_owned()),
        duration => Ok(duration),
    }
}

fn parse_source(text: &str) -> Result<Source, String> {
    match text {
        "gen" => Ok(Source::Generator),
        _ => match text.strip_prefix("tcp://") {
            Some(addr) if !addr.is_empty() => Ok(Source::Tcp(addr.to_owned())),
            _ => Err("expected `gen` or `tcp://ADDR`".to_owned()),
        },
    }
}

/// What a source does when the ingest buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum Policy {
    /// Wait for room: nothing is lost, the source slows to the window
    /// coroutine's pace.
    Block,
    /// Do not wait: the event is counted as dropped.
    Drop,
}

/// The longest line a connection accepts, in bytes. A longer one is counted
/// as malformed and skipped up to its newline; the connection stays open.
pub const MAX_LINE: usize = 4096;

/// One event after parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: u64,
    pub key: String,
    pub value: f64,
}

/// The names of the JSON fields an event is read from.
#[derive(Debug, Clone)]
pub struct Fields {
    pub key: String,
    pub value: String,
}

/// How deep a line's JSON may nest. An event is one flat object (depth 1);
/// the rest leaves room for extra fields a sender adds. serde_json builds a
/// `Value` by recursion, so a deeper line is refused unparsed: on a 32 KiB
/// connection coroutine a debug build overflowed its stack at depth 16.
pub const MAX_DEPTH: usize = 8;

/// Parse one line; `None` if it nests deeper than [`MAX_DEPTH`], is not
/// JSON, or `ts` (a non-negative integer, ms), the key (a string or a
/// number) or the value (a number) is missing.
pub fn parse_event(line: &[u8], fields: &Fields) -> Option<Event> {
    check_depth(line, MAX_DEPTH).ok()?;
    let json: serde_json::Value = serde_json::from_slice(line).ok()?;
    let key = match &json[&fields.key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(Event {
        ts: json["ts"].as_u64()?,
        key,
        value: json[&fields.value].as_f64()?,
    })
}

/// Windows of `size` ms of event time, one starting every `slide` ms from
/// ts 0. Tumbling if they are equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    pub size: u64,
    pub slide: u64,
}

impl WindowSpec {
    /// The start of every window that holds `ts`, oldest first.
    fn starts_for(self, ts: u64) -> impl Iterator<Item = u64> {
        let newest = ts / self.slide * self.slide;
        let oldest = (ts + 1).saturating_sub(self.size).div_ceil(self.slide) * self.slide;
        (oldest..=newest).step_by(self.slide as usize)
    }
}

/// What one key gets in one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyStats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl KeyStats {
    /// From every value the key had in the window (at least one); exact
    /// percentiles by nearest rank.
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let rank = |p: usize| values[(p * n).div_ceil(100) - 1];
        KeyStats {
            count: n as u64,
            sum: values.iter().sum(),
            min: values[0],
            max: values[n - 1],
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
        }
    }
}

/// A closed window: `[start, end)` of event time in ms, the numbers of every
/// key that had an event in it, and whether it closed because the stream
/// stopped (`flushed`) rather than because the watermark passed its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClosedWindow {
    pub start: u64,
    pub end: u64,
    pub flushed: bool,
    pub keys: BTreeMap<String, KeyStats>,
}

/// Event-time windows with a watermark: step 5's, unchanged.
#[derive(Debug)]
pub struct Windower {
    spec: WindowSpec,
    lateness: u64,
    open: BTreeMap<u64, BTreeMap<String, Vec<f64>>>,
    newest: Option<u64>,
    watermark: u64,
    late_by_window: BTreeMap<u64, u64>,
    late: u64,
}

impl Windower {
    pub fn new(spec: WindowSpec, lateness: u64) -> Self {
        Windower {
            spec,
            lateness,
            open: BTreeMap::new(),
            newest: None,
            watermark: 0,
            late_by_window: BTreeMap::new(),
            late: 0,
        }
    }

    /// Add `event` to its open windows (or count it late for the closed
    /// ones), move the watermark, and return the windows that closed.
    pub fn push(&mut self, event: &Event) -> Vec<ClosedWindow> {
        let mut missed_one = false;
        for start in self.spec.starts_for(event.ts) {
            if start + self.spec.size <= self.watermark {
                *self.late_by_window.entry(start).or_default() += 1;
                missed_one = true;
            } else {
                let window = self.open.entry(start).or_default();
                let values = window.entry(event.key.clone()).or_default();
                values.push(event.value);
            }
        }
        self.late += u64::from(missed_one);
        let newest = self.newest.map_or(event.ts, |n| n.max(event.ts));
        self.newest = Some(newest);
        self.advance_to(newest.saturating_sub(self.lateness))
    }

    /// Nothing has arrived for `quiet`: move the watermark as if an event
    /// stamped `newest + quiet` had come.
    pub fn advance_idle(&mut self, quiet: Duration) -> Vec<ClosedWindow> {
        let Some(newest) = self.newest else {
            return Vec::new();
        };
        let now = newest + quiet.as_millis() as u64;
        self.advance_to(now.saturating_sub(self.lateness))
    }

    /// The stream has stopped: emit every open window, marked as flushed.
    pub fn flush(&mut self) -> Vec<ClosedWindow> {
        let open = std::mem::take(&mut self.open);
        let size = self.spec.size;
        open.into_iter()
            .map(|(start, keys)| close(start, size, keys, true))
            .collect()
    }

    fn advance_to(&mut self, watermark: u64) -> Vec<ClosedWindow> {
        self.watermark = self.watermark.max(watermark);
        let mut closed = Vec::new();
        while let Some(oldest) = self.open.first_entry() {
            if *oldest.key() + self.spec.size > self.watermark {
                break;
            }
            let (start, keys) = oldest.remove_entry();
            closed.push(close(start, self.spec.size, keys, false));
        }
        closed
    }
}

fn close(start: u64, size: u64, keys: BTreeMap<String, Vec<f64>>, flushed: bool) -> ClosedWindow {
    ClosedWindow {
        start,
        end: start + size,
        flushed,
        keys: keys
            .into_iter()
            .map(|(key, values)| (key, KeyStats::of(values)))
            .collect(),
    }
}

// ANCHOR: ingest
/// What travels from the sources to the window coroutine.
pub enum Msg {
    /// A parsed event and the moment its line arrived.
    Event { event: Event, arrived: Instant },
    /// The sources have stopped: flush and end.
    Stop,
}

/// Counters the sources share with the window coroutine.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub malformed: AtomicU64,
    pub dropped: AtomicU64,
}

/// A source's handle on the ingest channel, applying the overflow policy.
#[derive(Clone)]
pub struct Ingest {
    pub tx: Sender<Msg>,
    pub policy: Policy,
    pub counters: Arc<SourceCounters>,
}

impl Ingest {
    /// Offer one parsed line (`None`: it was malformed). Returns `false` once
    /// the window coroutine has gone, so the source should stop.
    pub fn offer(&self, event: Option<Event>, arrived: Instant) -> bool {
        let Some(event) = event else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let msg = Msg::Event { event, arrived };
        match self.policy {
            Policy::Block => self.tx.send(msg).is_ok(),
            Policy::Drop => match self.tx.try_send(msg) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
        }
    }
}
// ANCHOR_END: ingest

/// What the window coroutine and the connections send to the main thread,
/// which does all the printing.
pub enum Output {
    /// A closed window; `trigger` is when the event that closed it arrived
    /// (none for windows closed by quiet time or flushed).
    Window {
        window: ClosedWindow,
        trigger: Option<Instant>,
    },
    /// A line for standard error.
    Log(String),
    /// The last message: the run's totals.
    Done(Totals),
}

/// Where every line went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Events the window coroutine took (late ones included).
    pub events: u64,
    pub malformed: u64,
    /// Events that missed at least one of their windows.
    pub late: u64,
    /// Events the `drop` policy dropped at a full ingest buffer.
    pub dropped: u64,
    pub windows: u64,
    pub flushed_windows: u64,
    /// Late events per window, as `(start, end, late)`.
    pub late_by_window: Vec<(u64, u64, u64)>,
}

// ANCHOR: window_stage
/// The window coroutine: feed events to `windower`, send each closed window
/// to `output`, move the watermark after `idle` without events, and on
/// `Msg::Stop` flush every open window and send the totals.
pub fn window_stage(
    input: Receiver<Msg>,
    mut windower: Windower,
    idle: Duration,
    counters: Arc<SourceCounters>,
    output: Sender<Output>,
) {
    let mut totals = Totals::default();
    let mut last_arrival = Instant::now();
    let emit = |closed: Vec<ClosedWindow>, trigger: Option<Instant>, totals: &mut Totals| {
        for window in closed {
            totals.windows += 1;
            totals.flushed_windows += u64::from(window.flushed);
            // The main thread may be gone only if it panicked.
            let _ = output.send(Output::Window { window, trigger });
        }
    };
    loop {
        match input.recv_timeout(idle) {
            Ok(Msg::Event { event, arrived }) => {
                last_arrival = Instant::now();
                totals.events += 1;
                let closed = windower.push(&event);
                emit(closed, Some(arrived), &mut totals);
            }
            Err(RecvTimeoutError::Timeout) => {
                let closed = windower.advance_idle(last_arrival.elapsed());
                emit(closed, None, &mut totals);
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    emit(windower.flush(), None, &mut totals);
    totals.late = windower.late;
    let size = windower.spec.size;
    totals.late_by_window = (windower.late_by_window.iter())
        .map(|(&start, &late)| (start, start + size, late))
        .collect();
    totals.malformed = counters.malformed.load(Ordering::Relaxed);
    totals.dropped = counters.dropped.load(Ordering::Relaxed);
    let _ = output.send(Output::Done(totals));
}
// ANCHOR_END: window_stage

// ANCHOR: generator
/// The built-in source: `rate` events per second over four keys, event time
/// = when the event is due (ms since the start), up to `lateness` out of
/// order, and one in `late_every` held back by lateness + window.
pub struct Generator {
    pub rate: u64,
    /// Stop after this many events (0: never).
    pub events: u64,
    pub late_every: u64,
    pub seed: u64,
}

impl Generator {
    /// Line number `n`, with the configured field names.
    fn line(&self, n: u64, rng: &mut fastrand::Rng, config: &Config) -> String {
        const KEYS: [&str; 4] = ["boiler", "intake", "pump", "vent"];
        let due = n * 1000 / self.rate;
        let held_back = self.late_every > 0 && (n + 1).is_multiple_of(self.late_every);
        let delay = match held_back {
            true => config.lateness + config.spec.size,
            false => rng.u64(0..=config.lateness / 2),
        };
        let (key, value) = (KEYS[rng.usize(..KEYS.len())], rng.u32(0..1000));
        let Fields { key: kf, value: vf } = &config.fields;
        format!(
            r#"{{"ts":{},"{kf}":"{key}","{vf}":{}}}"#,
            due.saturating_sub(delay),
            f64::from(value) / 10.0
        )
    }

    /// Produce lines until `events` are made, `stop` is triggered or the
    /// window coroutine has gone. Sleeps are 1 ms or more: events due sooner
    /// go out at once, in per-millisecond batches.
    fn run(&self, config: &Config, ingest: &Ingest, stop: &Shutdown) {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let started = Instant::now();
        for n in (0..).take_while(|&n| self.events == 0 || n < self.events) {
            let due = started + Duration::from_micros(n * 1_000_000 / self.rate);
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                may::coroutine::sleep(due - now);
            }
            let line = self.line(n, &mut rng, config);
            let event = parse_event(line.as_bytes(), &config.fields);
            if stop.is_triggered() || !ingest.offer(event, Instant::now()) {
                return;
            }
        }
    }
}
// ANCHOR_END: generator

/// A connection coroutine's stack, in words: 48 KiB, half again may's
/// default. The most it uses is reading and parsing the deepest, longest
/// line admitted (`MAX_DEPTH`, `MAX_LINE`). Measured with may's
/// odd-stack-size report, `cargo test [--release] --example
/// stream_processing measure -- --ignored --nocapture` (`used size`, in
/// words): 2706 in a debug build, 781 in a release build (rustc 1.95,
/// x86_64 Linux, 2026-12-01). The default 4096 would hold the debug figure
/// only 1.5 times; this holds it 2 times or more (`CONN_STACK_HEADROOM`),
/// which a test checks by running that worst case on
/// `CONN_STACK_WORDS / CONN_STACK_HEADROOM` words.
pub const CONN_STACK_WORDS: usize = 0x1800;
/// How many times the measured worst case `CONN_STACK_WORDS` must hold.
pub const CONN_STACK_HEADROOM: usize = 2;

// ANCHOR: connection
/// How one bounded line read ended.
#[derive(Debug, PartialEq)]
enum LineRead {
    /// `buf` holds a whole line (without its newline).
    Line,
    /// The line was longer than the limit; it was skipped to its newline.
    TooLong,
    /// The peer closed the connection and nothing is left.
    End,
}

/// Read one line into `buf`, keeping at most `limit` bytes of it in memory.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            // End of stream: a last line without a newline still counts.
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => LineRead::TooLong,
                (false, true) => LineRead::End,
                (false, false) => LineRead::Line,
            });
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long && buf.len() + chunk.len() <= limit {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        let used = chunk.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// One coroutine per connection: read lines until the peer closes, goes
/// quiet for `timeout`, or the server stops; offer each to the ingest.
fn serve_connection(
    stream: TcpStream,
    ingest: Ingest,
    fields: Fields,
    timeout: Duration,
    stop: &Shutdown,
) -> String {
    let peer = stream.peer_addr().map_or("?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        return format!("connection from {peer}: {e}");
    }
    let mut reader = BufReader::new(stream);
    let (mut buf, mut lines, mut malformed) = (Vec::new(), 0u64, 0u64);
    let why = loop {
        let event = match read_line_bounded(&mut reader, &mut buf, MAX_LINE) {
            // A stop shuts the socket down: the read ends as if the peer had.
            Ok(LineRead::End) if stop.is_triggered() => break "server stopping".to_owned(),
            Ok(LineRead::End) => break "closed by the client".to_owned(),
            Ok(LineRead::TooLong) => None,
            Ok(LineRead::Line) if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(LineRead::Line) => parse_event(&buf, &fields),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                break format!("silent for {timeout:?}");
            }
            Err(e) => break format!("read error: {e}"),
        };
        lines += 1;
        malformed += u64::from(event.is_none());
        if !ingest.offer(event, Instant::now()) {
            break "server stopping".to_owned();
        }
    };
    format!("connection from {peer} ended ({why}): {lines} lines, {malformed} malformed")
}
// ANCHOR_END: connection

/// Everything a run needs; `main` builds it from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub generator_rate: u64,
    pub generator_events: u64,
    pub generator_late_every: u64,
    pub spec: WindowSpec,
    pub lateness: u64,
    pub idle: Duration,
    pub policy: Policy,
    pub buffer: usize,
    pub conn_timeout: Duration,
    pub max_connections: usize,
    pub fields: Fields,
}

/// A started run: read `output` until `Output::Done`.
pub struct Running {
    pub output: Receiver<Output>,
    /// The address a TCP source listens on (port 0 resolved).
    pub local_addr: Option<SocketAddr>,
}

// ANCHOR: start
/// Start the source and the window coroutine. The run ends, with a flush
/// and `Output::Done`, when `shutdown` is triggered or the generator has
/// made all its events.
pub fn start(config: Config, shutdown: Shutdown) -> io::Result<Running> {
    let (ingest_tx, ingest_rx) = bounded::channel(config.buffer);
    let (output_tx, output_rx) = bounded::channel(256);
    let counters = Arc::new(SourceCounters::default());
    let ingest = Ingest {
        tx: ingest_tx.clone(),
        policy: config.policy,
        counters: counters.clone(),
    };
    let windower = Windower::new(config.spec, config.lateness);
    let (idle, to_main) = (config.idle, output_tx.clone());
    go!(move || window_stage(ingest_rx, windower, idle, counters, to_main));

    let (mut local_addr, mut waker) = (None, None);
    let source = match config.source.clone() {
        Source::Generator => {
            let generator = Generator {
                rate: config.generator_rate,
                events: config.generator_events,
                late_every: config.generator_late_every,
                seed: 7,
            };
            let stop = shutdown.clone();
            go!(move || generator.run(&config, &ingest, &stop))
        }
        Source::Tcp(addr) => {
            let listener = TcpListener::bind(addr.as_str())
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            local_addr = Some(listener.local_addr()?);
            // accept() parks until a client comes: on shutdown, this is one.
            waker = Some(accept::wake_on_shutdown(&listener, &shutdown)?);
            let stop = shutdown.clone();
            go!(move || accept(listener, config, ingest, output_tx, stop))
        }
    };
    // The stopper: once the source has ended (the generator ran out, or a
    // stop woke it), tell the window coroutine. `Stop` always waits for
    // room: it must not be dropped.
    go!(move || {
        let _ = source.join();
        drop(waker); // joins the accept waker, if there is one
        let _ = ingest_tx.send(Msg::Stop);
    });
    Ok(Running {
        output: output_rx,
        local_addr,
    })
}
// ANCHOR_END: start

/// Accept connections until `stop`; one coroutine per connection, at most
/// `config.max_connections` at once.
fn accept(
    listener: TcpListener,
    config: Config,
    ingest: Ingest,
    log: Sender<Output>,
    stop: Shutdown,
) {
    // Open sockets by connection id, so a stop can close every one of them,
    // and a wait group, so this returns only after their coroutines ended.
    let open: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
    let connections = WaitGroup::new();
    for id in 0.. {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                let _ = log.send(Output::Log(format!("accept failed: {e}")));
                break;
            }
        };
        if stop.is_triggered() {
            break;
        }
        // Only this loop adds, so the check cannot race another accept.
        if open.lock().unwrap().len() >= config.max_connections {
            let peer = stream.peer_addr().map_or("?".into(), |a| a.to_string());
            let why = format!(
                "refused {peer}: {} connections open",
                config.max_connections
            );
            let _ = log.send(Output::Log(why));
            continue; // dropping the stream closes it
        }
        match stream.try_clone() {
            Ok(handle) => open.lock().unwrap().insert(id, handle),
            Err(e) => {
                let _ = log.send(Output::Log(format!("connection dropped: {e}")));
                continue;
            }
        };
        let (ingest, log, open, member) = (
            ingest.clone(),
            log.clone(),
            open.clone(),
            connections.clone(),
        );
        let (fields, timeout, stop) = (config.fields.clone(), config.conn_timeout, stop.clone());
        let stack = may::coroutine::Builder::new().stack_size(CONN_STACK_WORDS);
        let spawned = go!(stack, move || {
            let summary = serve_connection(stream, ingest, fields, timeout, &stop);
            open.lock().unwrap().remove(&id);
            let _ = log.send(Output::Log(summary));
            drop(member); // this connection is done
        });
        drop(spawned); // may's `Builder::spawn` never fails (it panics instead)
    }
    // Close every open socket (a read parked on one returns at once) and
    // wait for the connection coroutines: none outlives the run.
    for (_, socket) in open.lock().unwrap().drain() {
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
    connections.wait();
}

// ANCHOR: main
impl Args {
    /// The flags, refusing a combination that makes no sense with clap's
    /// usual error (and exit status 2), as a bad single value is.
    fn parse_checked() -> Args {
        let args = Args::parse();
        if let Err(why) = args.check() {
            Args::command()
                .error(ClapError::ArgumentConflict, why)
                .exit();
        }
        args
    }

    fn check(&self) -> Result<(), String> {
        match self.slide {
            Some(slide) if slide > self.window => Err(format!(
                "--slide {} is longer than --window {}: events between two windows would be in none",
                humantime::format_duration(slide),
                humantime::format_duration(self.window)
            )),
            _ => Ok(()),
        }
    }

    fn config(&self) -> Config {
        let window = self.window.as_millis() as u64;
        let slide = self.slide.map_or(window, |s| s.as_millis() as u64);
        Config {
            source: self.source.clone(),
            generator_rate: self.rate,
            generator_events: self.events,
            generator_late_every: self.late_every,
            spec: WindowSpec {
                size: window,
                slide,
            },
            lateness: self.lateness.as_millis() as u64,
            idle: for_may(self.idle),
            policy: self.policy,
            buffer: self.buffer as usize,
            conn_timeout: for_may(self.conn_timeout),
            max_connections: self.max_connections as usize,
            fields: Fields {
                key: self.key.clone(),
                value: self.value.clone(),
            },
        }
    }
}

fn main() {
    let args = Args::parse_checked();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    if let Err(e) = ctrlc::set_handler(move || on_ctrl_c.trigger()) {
        eprintln!("stream_processing: cannot install the Ctrl-C handler: {e}");
        std::process::exit(1);
    }
    if let Some(limit) = args.duration.map(for_may) {
        let stop = shutdown.clone();
        go!(move || {
            may::coroutine::sleep(limit);
            stop.trigger();
        });
    }
    let running = match start(args.config(), shutdown) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("stream_processing: {e}");
            std::process::exit(1);
        }
    };
    if let Some(addr) = running.local_addr {
        eprintln!("listening on {addr}");
    }
    let mut latencies = Vec::new();
    for out in running.output.iter() {
        match out {
            Output::Window { window, trigger } => {
                latencies.extend(trigger.map(|t| t.elapsed()));
                print_window(&window, args.json);
            }
            Output::Log(line) => eprintln!("{line}"),
            Output::Done(totals) => {
                print_totals(&totals, &mut latencies, args.json);
                break;
            }
        }
    }
}
// ANCHOR_END: main

// ANCHOR: print
fn print_window(w: &ClosedWindow, json: bool) {
    if json {
        println!("{}", serde_json::to_string(w).expect("a window serialises"));
        return;
    }
    let how = if w.flushed {
        "flushed at shutdown"
    } else {
        "closed"
    };
    println!("window [{}, {}) ms, {how}:", w.start, w.end);
    for (key, s) in &w.keys {
        println!(
            "  {key:<8} count {:>5}  sum {:>9.1}  min {:>5.1}  max {:>5.1}  p50 {:>5.1}  p90 {:>5.1}  p99 {:>5.1}",
            s.count, s.sum, s.min, s.max, s.p50, s.p90, s.p99
        );
    }
}

/// The median and 99th percentile of `latencies` (nearest rank).
fn median_and_p99(latencies: &mut [Duration]) -> Option<(Duration, Duration)> {
    latencies.sort();
    let n = latencies.len();
    let rank = |p: usize| latencies[(p * n).div_ceil(100).max(1) - 1];
    (n > 0).then(|| (rank(50), rank(99)))
}

fn print_totals(t: &Totals, latencies: &mut [Duration], json: bool) {
    let latency = median_and_p99(latencies);
    if json {
        let mut value = serde_json::json!({ "totals": t });
        if let Some((p50, p99)) = latency {
            value["latency_us"] = serde_json::json!({
                "p50": p50.as_micros() as u64, "p99": p99.as_micros() as u64
            });
        }
        println!("{value}");
        return;
    }
    println!(
        "totals: events {}, malformed {}, late {}, dropped {}; windows {} ({} flushed at shutdown)",
        t.events, t.malformed, t.late, t.dropped, t.windows, t.flushed_windows
    );
    for (start, end, late) in &t.late_by_window {
        println!("  late for window [{start}, {end}) ms: {late}");
    }
    if let Some((p50, p99)) = latency {
        println!(
            "emission latency (arrival of the closing event -> main thread), over ~{} windows: median {p50:.1?}, p99 {p99:.1?}",
            latencies.len()
        );
    }
}
// ANCHOR_END: print

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::io::{Cursor, Read, Write};

    fn fields() -> Fields {
        Fields {
            key: "sensor".into(),
            value: "value".into(),
        }
    }

    fn config(source: Source) -> Config {
        Config {
            source,
            generator_rate: 20_000,
            generator_events: 0,
            generator_late_every: 50,
            spec: WindowSpec {
                size: 100,
                slide: 100,
            },
            lateness: 20,
            idle: Duration::from_secs(5),
            policy: Policy::Block,
            buffer: 64,
            conn_timeout: Duration::from_secs(5),
            max_connections: 16,
            fields: fields(),
        }
    }

    /// Read a run's output until `Done`, bounded in time.
    fn collect(running: &Running) -> (Vec<ClosedWindow>, Vec<String>, Totals) {
        let (mut windows, mut logs) = (Vec::new(), Vec::new());
        loop {
            match running.output.recv_timeout(Duration::from_secs(10)) {
                Ok(Output::Window { window, .. }) => windows.push(window),
                Ok(Output::Log(line)) => logs.push(line),
                Ok(Output::Done(totals)) => return (windows, logs, totals),
                Err(e) => panic!("no output within 10 s: {e:?}"),
            }
        }
    }

    #[test]
    fn keys_and_values_come_from_the_named_fields() {
        let f = Fields {
            key: "host".into(),
            value: "ms".into(),
        };
        let event = parse_event(br#"{"ts":5,"host":7,"ms":1.5}"#, &f).unwrap();
        assert_eq!((event.ts, event.key.as_str(), event.value), (5, "7", 1.5));
        assert!(parse_event(br#"{"ts":5,"sensor":"a","value":1}"#, &f).is_none());
        assert!(parse_event(br#"{"ts":"5","host":"a","ms":1}"#, &f).is_none());
    }

    /// The lines that take a connection coroutine deepest: every shape of
    /// nesting at `MAX_DEPTH`, each as long as a line may be.
    fn worst_admitted_lines() -> Vec<String> {
        let head = r#"{"ts":1,"sensor":"a","value":1,"x":"#;
        let (open, close) = (MAX_DEPTH - 1, MAX_DEPTH - 1); // the event is level 1
        let arrays = format!("{}{}", "[".repeat(open), "]".repeat(close));
        let objects = format!("{}1{}", r#"{"k":"#.repeat(open), "}".repeat(close));
        let pad = |json: String| {
            let room = MAX_LINE - head.len() - json.len() - r#","p":""}"#.len();
            format!(r#"{head}{json},"p":"{}"}}"#, "\\\\".repeat(room / 2))
        };
        let lines = vec![pad(arrays), pad(objects)];
        assert!(lines
            .iter()
            .all(|l| l.len() <= MAX_LINE && l.len() > MAX_LINE - 2));
        lines
    }

    /// Serve one connection that sends `lines` on a coroutine with a stack
    /// of `stack_words`; return the connection's summary.
    fn serve_on_stack(stack_words: usize, lines: &[String]) -> String {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = bounded::channel(lines.len() + 1);
        let ingest = Ingest {
            tx,
            policy: Policy::Block,
            counters: Arc::default(),
        };
        let builder = may::coroutine::Builder::new().stack_size(stack_words);
        let server = go!(builder, move || {
            let (stream, _) = listener.accept().unwrap();
            serve_connection(
                stream,
                ingest,
                fields(),
                Duration::from_secs(5),
                &Shutdown::new(),
            )
        })
        .unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        for line in lines {
            writeln!(client, "{line}").unwrap();
        }
        drop(client);
        let summary = server.join().expect("the connection coroutine ended");
        drop(rx);
        summary
    }

    /// What `CONN_STACK_WORDS` is sized from: may prints a coroutine's stack
    /// use when it ends if its stack size is odd. See `CONN_STACK_WORDS`.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn measure_the_connection_stack() {
        let summary = serve_on_stack(CONN_STACK_WORDS | 1, &worst_admitted_lines());
        assert!(summary.ends_with(": 2 lines, 0 malformed"), "{summary}");
    }

    #[test]
    fn the_deepest_longest_lines_admitted_parse_on_a_fraction_of_the_stack() {
        let stack = CONN_STACK_WORDS / CONN_STACK_HEADROOM;
        let mut lines = worst_admitted_lines();
        let too_deep = format!(
            r#"{{"ts":1,"x":{}{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        lines.push(too_deep);
        lines.push(r#"{"ts":2,"sensor":"a","value":2}"#.to_owned());
        let summary = serve_on_stack(stack, &lines);
        assert!(summary.ends_with(": 4 lines, 1 malformed"), "{summary}");
    }

    #[test]
    fn over_long_lines_are_skipped_to_their_newline_and_reading_goes_on() {
        let long = "x".repeat(50);
        let input = format!("short\n{long}\nnext\nlast without newline");
        let mut reader = BufReader::with_capacity(8, Cursor::new(input));
        let mut buf = Vec::new();
        let mut read = |buf: &mut Vec<u8>| read_line_bounded(&mut reader, buf, 10).unwrap();
        assert_eq!(read(&mut buf), LineRead::Line);
        assert_eq!(buf, b"short");
        assert_eq!(read(&mut buf), LineRead::TooLong);
        assert!(buf.is_empty(), "nothing of the long line is kept");
        assert_eq!(read(&mut buf), LineRead::Line);
        assert_eq!(buf, b"next");
        assert_eq!(read(&mut buf), LineRead::TooLong, "20 bytes, no newline");
        assert_eq!(read(&mut buf), LineRead::End);
    }

    #[test]
    fn a_generated_run_of_fixed_length_balances_and_flushes_at_the_end() {
        configure_for_tests();
        let mut cfg = config(Source::Generator);
        cfg.generator_events = 6_000; // 300 ms of event time at 20,000/s
        let running = start(cfg, Shutdown::new()).unwrap();
        let (windows, _, totals) = collect(&running);
        let windowed: u64 = windows
            .iter()
            .flat_map(|w| w.keys.values())
            .map(|s| s.count)
            .sum();
        assert_eq!(totals.events, 6_000);
        assert_eq!((totals.malformed, totals.dropped), (0, 0));
        assert!(totals.late > 0, "one in 50 is held back: {totals:?}");
        assert_eq!(
            windowed + totals.late,
            totals.events,
            "tumbling: in one window or late"
        );
        assert_eq!(totals.windows, windows.len() as u64);
        assert!(windows.last().unwrap().flushed);
    }

    #[test]
    fn a_tcp_source_takes_lines_from_several_connections_and_stops_on_shutdown() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let mut cfg = config(Source::Tcp("127.0.0.1:0".into()));
        cfg.lateness = 0;
        let running = start(cfg, shutdown.clone()).unwrap();
        let addr = running.local_addr.unwrap();
        let clients: Vec<_> = (0..3)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    for i in 0..10 {
                        writeln!(s, r#"{{"ts":{i},"sensor":"c{c}","value":{i}}}"#).unwrap();
                    }
                    writeln!(s, "not json").unwrap();
                })
            })
            .collect();
        clients.into_iter().for_each(|c| c.join().unwrap());
        // Wait until all three connections have ended, then stop.
        let mut logs = Vec::new();
        while logs.len() < 3 {
            match running.output.recv_timeout(Duration::from_secs(10)) {
                Ok(Output::Log(line)) => logs.push(line),
                Ok(_) => panic!("nothing closes before the stop"),
                Err(e) => panic!("connections did not end: {e:?}"),
            }
        }
        assert!(logs
            .iter()
            .all(|l| l.ends_with("(closed by the client): 11 lines, 1 malformed")));
        shutdown.trigger();
        let (windows, _, totals) = collect(&running);
        assert_eq!((totals.events, totals.malformed, totals.late), (30, 3, 0));
        assert_eq!(windows.len(), 1);
        let w = &windows[0];
        assert!(w.flushed);
        for c in 0..3 {
            let s = &w.keys[&format!("c{c}")];
            assert_eq!(
                (s.count, s.sum, s.min, s.max, s.p50),
                (10, 45.0, 0.0, 9.0, 4.0)
            );
        }
    }

    #[test]
    fn a_stop_closes_open_connections_and_waits_for_them() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let mut cfg = config(Source::Tcp("127.0.0.1:0".into()));
        cfg.conn_timeout = Duration::from_secs(600); // only the stop can end it
        let running = start(cfg, shutdown.clone()).unwrap();
        let mut client = std::net::TcpStream::connect(running.local_addr.unwrap()).unwrap();
        // The second event closes the first one's window: once that window
        // arrives, the connection is being served.
        writeln!(client, r#"{{"ts":1,"sensor":"a","value":1}}"#).unwrap();
        writeln!(client, r#"{{"ts":500,"sensor":"a","value":1}}"#).unwrap();
        match running.output.recv_timeout(Duration::from_secs(10)) {
            Ok(Output::Window { window, .. }) => assert_eq!(window.start, 0),
            _ => panic!("the first window did not close"),
        }
        let stopped = Instant::now();
        shutdown.trigger();
        let (_, logs, totals) = collect(&running);
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "{:?}",
            stopped.elapsed()
        );
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].contains("ended (server stopping)"), "{logs:?}");
        // The server closed its side: the client reads end-of-file.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        assert_eq!(totals.events, 2, "{totals:?}");
    }

    #[test]
    fn a_client_beyond_max_connections_is_closed_and_logged() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let mut cfg = config(Source::Tcp("127.0.0.1:0".into()));
        cfg.max_connections = 1;
        let running = start(cfg, shutdown.clone()).unwrap();
        let addr = running.local_addr.unwrap();
        let next_log = || match running.output.recv_timeout(Duration::from_secs(10)) {
            Ok(Output::Log(line)) => line,
            Ok(_) => panic!("expected a log line, got a window or the end"),
            Err(e) => panic!("no log line: {e:?}"),
        };
        let held = std::net::TcpStream::connect(addr).unwrap();
        let mut refused = std::net::TcpStream::connect(addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(refused.read(&mut byte).unwrap(), 0, "closed by the server");
        assert!(next_log().contains(": 1 connections open"));
        drop(held);
        assert!(next_log().contains("(closed by the client)"));
        // The slot is free again: a new client is served.
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        writeln!(third, r#"{{"ts":1,"sensor":"a","value":1}}"#).unwrap();
        drop(third);
        assert!(next_log().ends_with("(closed by the client): 1 lines, 0 malformed"));
        shutdown.trigger();
        let (_, _, totals) = collect(&running);
        assert_eq!(totals.events, 1);
    }

    #[test]
    fn the_drop_policy_counts_what_a_full_buffer_refused() {
        configure_for_tests();
        let (tx, rx) = bounded::channel(2);
        let counters = Arc::new(SourceCounters::default());
        let ingest = Ingest {
            tx,
            policy: Policy::Drop,
            counters: counters.clone(),
        };
        let event = || {
            Some(Event {
                ts: 1,
                key: "a".into(),
                value: 1.0,
            })
        };
        for _ in 0..5 {
            assert!(ingest.offer(event(), Instant::now()));
        }
        assert!(ingest.offer(None, Instant::now()));
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(counters.malformed.load(Ordering::Relaxed), 1);
        drop(rx);
        assert!(
            !ingest.offer(event(), Instant::now()),
            "the window coroutine is gone"
        );
    }

    #[test]
    fn the_command_line_has_defaults_and_checks_its_values() {
        let args = Args::try_parse_from(["sp"]).unwrap();
        let cfg = args.config();
        assert_eq!(cfg.source, Source::Generator);
        assert_eq!(
            cfg.spec,
            WindowSpec {
                size: 1000,
                slide: 1000
            }
        );
        assert_eq!(
            (cfg.lateness, cfg.policy, cfg.buffer),
            (500, Policy::Block, 1024)
        );
        let args = Args::try_parse_from([
            "sp",
            "--source",
            "tcp://127.0.0.1:0",
            "--window",
            "1s",
            "--slide",
            "200ms",
            "--key",
            "host",
            "--policy",
            "drop",
        ])
        .unwrap();
        let cfg = args.config();
        assert_eq!(cfg.source, Source::Tcp("127.0.0.1:0".into()));
        assert_eq!(
            cfg.spec,
            WindowSpec {
                size: 1000,
                slide: 200
            }
        );
        assert_eq!(
            (cfg.fields.key.as_str(), cfg.policy),
            ("host", Policy::Drop)
        );
        assert!(Args::try_parse_from(["sp", "--source", "udp://x"]).is_err());
        assert!(Args::try_parse_from(["sp", "--window", "soon"]).is_err());
        assert!(Args::try_parse_from(["sp", "--buffer", "0"]).is_err());
    }

    #[test]
    fn flags_that_make_no_sense_are_refused() {
        let refused = |flags: &[&str]| {
            let args = Args::try_parse_from(["sp"].iter().chain(flags));
            args.map_or(true, |a| a.check().is_err())
        };
        for zero in [
            "--window",
            "--slide",
            "--idle",
            "--conn-timeout",
            "--duration",
        ] {
            assert!(refused(&[zero, "0s"]), "{zero} 0s");
        }
        assert!(refused(&["--window", "1500us"]), "not whole ms");
        assert!(refused(&["--lateness", "1ms 1us"]), "not whole ms");
        assert!(refused(&["--window", "1s", "--slide", "1001ms"]));
        assert!(!refused(&["--window", "1s", "--slide", "1s"]));
        assert!(!refused(&["--lateness", "0s"]), "no lateness is meaningful");
        // What may could not keep is rounded up, never dropped to "none".
        let args = Args::try_parse_from(["sp", "--conn-timeout", "500us", "--idle", "1us"]);
        let cfg = args.unwrap().config();
        assert_eq!(
            (cfg.conn_timeout, cfg.idle),
            (Duration::from_millis(1), Duration::from_millis(1))
        );
    }
}
