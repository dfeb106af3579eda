//! The connection manager: one client from its first byte to its last.
//!
//! Each client has a reader (the connection's own coroutine), a writer
//! coroutine fed by its [`Outbox`], and, only while it sends faster than
//! its flood quota, a pacer coroutine that holds its lines until their
//! turn. Every transport (plain, TLS, WebSocket) comes in through
//! [`serve`]; only the [`LineSource`] and [`LineSink`] differ. Pings and
//! timeouts are not socket timeouts but one sweeper thread for every
//! client (the way ircds run their ping check): no may timer per read, and
//! the same rule for every transport.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use may::coroutine;
use may::sync::mpsc;
use may_patterns::clock::Clock;
use may_patterns::ratelimit::{Gcra, Limiter, Reservation};
use may_patterns::server::{Closer, Conn, WriteHalf};
use may_patterns::shutdown::Shutdown;

use crate::cli::Settings;
use crate::irc::{self, Message, ParseError};
use crate::outbox::{Batch, ClientId, Drain, Incoming, Line, LineSink, LineSource, Outbox};
use crate::router::{Event, Problem, RouterHandle};

/// How the client reached us (for logs, WHO, and the router's choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
    WebSocket,
}

// ANCHOR: hub
/// Everything a connection needs from the rest of the server. Clones share.
#[derive(Clone)]
pub struct Hub {
    pub router: RouterHandle,
    pub settings: Arc<Settings>,
    /// One GCRA state per client, the flood quota (`--flood-rate`).
    flood: Arc<Limiter<ClientId, Gcra>>,
    clients: Arc<Watchlist>,
    pub stats: Arc<Stats>,
    next_id: Arc<AtomicU64>,
}
// ANCHOR_END: hub

/// Clients cut, by why, for the summary printed at exit.
#[derive(Debug, Default)]
pub struct Stats {
    pub sendq_cut: AtomicU64,
    pub flood_cut: AtomicU64,
    pub ping_timeouts: AtomicU64,
    pub registration_timeouts: AtomicU64,
}

impl Hub {
    /// `max_clients` bounds the flood limiter's memory (one state each).
    pub fn new(router: RouterHandle, settings: Arc<Settings>, max_clients: usize) -> Hub {
        let flood = Limiter::new(Gcra::new(settings.flood), max_clients);
        Hub {
            router,
            settings,
            flood: Arc::new(flood),
            clients: Arc::new(Watchlist::default()),
            stats: Arc::new(Stats::default()),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }
}

// ANCHOR: serve_tcp
/// Handler for the plain and TLS listeners.
///
/// No socket timeout is set, on reads or writes: may 0.3.51 arms a timer
/// for each, and its timers race (book/pitfalls). A client that stops
/// reading is cut by its sendq, or by the sweeper's ping timeout, which
/// shuts the socket and so frees a writer parked in a write.
pub fn serve_tcp(conn: Conn, transport: Transport, hub: &Hub) {
    let (peer, closer) = (conn.peer(), conn.closer());
    no_nagle(&conn);
    match conn.split() {
        Ok((read, write)) => serve(
            LineReader::new(read),
            PlainSink::new(write),
            closer,
            peer,
            transport,
            hub,
        ),
        Err(e) => eprintln!("connection: cannot split {peer}: {e}"),
    }
}
// ANCHOR_END: serve_tcp

/// Lines leave as soon as the writer writes them: the writer already puts
/// everything queued into one write, and with Nagle's algorithm a line
/// behind an unacknowledged one waited for the client's delayed ACK
/// (`cargo bench --bench chat_server`, the quick-ACK table).
pub fn no_nagle(conn: &Conn) {
    if let Err(e) = conn.set_nodelay(true) {
        eprintln!(
            "connection: cannot set TCP_NODELAY for {}: {e}",
            conn.peer()
        );
    }
}

/// The writer's and the pacer's stacks, in words (may's unit). The writer
/// runs the TLS encryption (rustls) of what it writes. Measured as the
/// connection's stack (main.rs): a writer at most 1,031 words in a debug
/// build (433 in release), a pacer 747 (421).
const WRITER_STACK_WORDS: usize = 0x1000;
const PACER_STACK_WORDS: usize = 0x800;

// ANCHOR: serve
/// Run one client whose lines come from `source` and go to `sink`; returns
/// when it is gone (its writer has ended too).
pub fn serve(
    mut source: impl LineSource + 'static,
    sink: impl LineSink + 'static,
    closer: Closer,
    peer: SocketAddr,
    transport: Transport,
    hub: &Hub,
) {
    let id = ClientId(hub.next_id.fetch_add(1, Ordering::Relaxed));
    let shut = closer.clone();
    let (outbox, drain) = Outbox::new(id, hub.settings.sendq, move || shut.close());
    let writer = spawn(WRITER_STACK_WORDS, {
        let closer = closer.clone();
        move || write_lines(drain, sink, closer)
    });
    let Ok(writer) = writer else {
        closer.close();
        return;
    };
    let watch = hub.clients.add(outbox.clone());
    let connected = Event::Connected {
        id,
        peer,
        outbox: outbox.clone(),
        transport,
    };
    let reason = if hub.router.send(connected).is_err() {
        "Server shutting down".to_owned()
    } else {
        read_lines(&mut source, id, &outbox, &watch, hub)
    };
    if reason == SENDQ_EXCEEDED {
        hub.stats.sendq_cut.fetch_add(1, Ordering::Relaxed);
    }
    let _ = hub.router.send(Event::Closed {
        id,
        reason: reason.clone(),
    });
    // The router has let go of it, or will; whatever is queued still goes
    // out (the ERROR line of a QUIT), then the writer closes the socket.
    outbox.close_with(None, &reason);
    drop(watch);
    let _ = writer.join();
}
// ANCHOR_END: serve

const SENDQ_EXCEEDED: &str = "SendQ exceeded";

/// Start a coroutine with a stack of `words`.
fn spawn<F>(words: usize, f: F) -> io::Result<coroutine::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // Safety: the closures spawned here use no thread-local storage and
    // hold no std lock across a park (may's rules for `spawn`).
    unsafe { coroutine::Builder::new().stack_size(words).spawn(f) }
}

// ANCHOR: reader
/// Read lines until the client is gone; each takes its turn in the flood
/// quota, and one past `--flood-max-lag` of waiting cuts the client.
/// Returns why it ended.
fn read_lines(
    source: &mut impl LineSource,
    id: ClientId,
    outbox: &Outbox,
    watch: &Watch,
    hub: &Hub,
) -> String {
    let mut pacer: Option<Pacer> = None;
    let why = loop {
        let incoming = match source.next_line() {
            Ok(Some(incoming)) => incoming,
            Ok(None) => break "Connection closed".to_owned(),
            Err(e) if e.kind() == ErrorKind::TimedOut => break ping_timeout(&hub.settings),
            Err(e) => break format!("Read error: {e}"),
        };
        watch.heard();
        // The reader never waits for a turn itself: it keeps reading, so
        // a flood is seen as it arrives, not after the kernel buffered it.
        let turn = match hub.flood.reserve(&id, 1, hub.settings.flood_max_lag) {
            Ok(turn) => turn,
            Err(_) => {
                hub.stats.flood_cut.fetch_add(1, Ordering::Relaxed);
                let last = "ERROR :Closing link: (Excess Flood)";
                outbox.close_with(Some(Line::from(last)), "Excess Flood");
                break "Excess Flood".to_owned();
            }
        };
        let Some(event) = event_for(id, incoming) else {
            continue; // an empty line: counted, not forwarded
        };
        let sent = if pacer.is_none() && turn.at() <= hub.flood.clock().now() {
            hub.router.send(event).is_ok()
        } else {
            // Behind its quota: from now on its lines keep their order
            // through the pacer.
            match &mut pacer {
                Some(p) => p.send(turn, event),
                None => match Pacer::start(outbox.clone(), hub) {
                    Ok(p) => pacer.insert(p).send(turn, event),
                    Err(_) => false,
                },
            }
        };
        if !sent {
            break "Server shutting down".to_owned();
        }
    };
    if let Some(p) = pacer {
        p.finish();
    }
    // A cut (sendq, flood, ping) or a QUIT closed the outbox first: that
    // is the reason the others see.
    outbox.close_reason().unwrap_or(why)
}
// ANCHOR_END: reader

/// What the router gets for one line; `None` for an empty line, which
/// RFC 1459 2.3.1 says to ignore.
fn event_for(id: ClientId, incoming: Incoming) -> Option<Event> {
    let problem = match incoming {
        Incoming::Line(text) => match Message::parse(&text) {
            Ok(message) => return Some(Event::Line { id, message }),
            Err(ParseError::Empty) => return None,
            Err(e) => Problem::Malformed(e),
        },
        Incoming::TooLong => Problem::TooLong,
        Incoming::NotUtf8 => Problem::NotUtf8,
    };
    Some(Event::Rejected { id, problem })
}

fn ping_timeout(settings: &Settings) -> String {
    format!(
        "Ping timeout: {} seconds",
        (settings.ping_interval * 2).as_secs()
    )
}

// ANCHOR: pacer
/// A client's lines that must wait for their turn ("fake lag"): the pacer
/// coroutine parks until each turn (on `may_patterns::alarm`, not a may
/// timer) and hands the line on.
struct Pacer {
    turns: mpsc::Sender<(Reservation, Event)>,
    handle: coroutine::JoinHandle<()>,
}

impl Pacer {
    fn start(outbox: Outbox, hub: &Hub) -> io::Result<Pacer> {
        let (turns, waiting) = mpsc::channel::<(Reservation, Event)>();
        let (flood, router) = (hub.flood.clone(), hub.router.clone());
        let handle = spawn(PACER_STACK_WORDS, move || {
            for (turn, event) in waiting {
                turn.wait(flood.clock());
                // Cut meanwhile (flood, sendq, QUIT): nothing more of it.
                if outbox.close_reason().is_some() || router.send(event).is_err() {
                    return;
                }
            }
        })?;
        Ok(Pacer { turns, handle })
    }

    fn send(&mut self, turn: Reservation, event: Event) -> bool {
        self.turns.send((turn, event)).is_ok()
    }

    /// Let the queued lines go at their turns, then end: the router must
    /// see them before the client's `Closed`.
    fn finish(self) {
        drop(self.turns);
        let _ = self.handle.join();
    }
}
// ANCHOR_END: pacer

// ANCHOR: writer
/// The writer coroutine: everything queued at each wake-up goes out in one
/// `write_lines` (for plain and TLS: one write). On close it writes the last
/// lines (a QUIT's ERROR) and shuts the socket, which also ends the reader.
fn write_lines(drain: Drain, mut sink: impl LineSink, closer: Closer) {
    loop {
        match drain.next() {
            Batch::Lines(lines) => match sink.write_lines(&lines) {
                Ok(()) => drain.written(&lines),
                Err(e) => {
                    drain.failed(&format!("Write error: {e}"));
                    break;
                }
            },
            Batch::Last(lines) => {
                if !lines.is_empty() {
                    let _ = sink.write_lines(&lines);
                }
                break;
            }
        }
    }
    sink.close();
    closer.close();
}
// ANCHOR_END: writer

// ANCHOR: line_reader
/// A bounded line reader for plain and TLS clients: LF or CRLF ends a line;
/// a line over `irc::MAX_LINE` (CRLF included) is reported as `TooLong` and
/// the rest of it is skipped as it arrives, never buffered whole.
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    skipping: bool,
}

/// Room for several lines per read: one syscall brings a burst in.
const READ_BUFFER: usize = 4096;

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> LineReader<R> {
        LineReader {
            inner,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            skipping: false,
        }
    }

    fn line(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(n) = pending.iter().position(|&b| b == b'\n') {
                let raw = &pending[..n];
                self.start += n + 1;
                if std::mem::take(&mut self.skipping) {
                    return Ok(Some(Incoming::TooLong));
                }
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                if raw.len() > irc::MAX_LINE - 2 {
                    return Ok(Some(Incoming::TooLong));
                }
                return Ok(Some(match std::str::from_utf8(raw) {
                    Ok(text) => Incoming::Line(text.to_owned()),
                    Err(_) => Incoming::NotUtf8,
                }));
            }
            if self.skipping || pending.len() >= irc::MAX_LINE {
                // No end of line within the limit: drop what is here and
                // skip to the next LF.
                self.skipping = true;
                self.start = self.end;
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            let n = match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None); // a partial last line is dropped
            }
            self.end += n;
        }
    }
}

impl<R: Read + Send> LineSource for LineReader<R> {
    fn next_line(&mut self) -> io::Result<Option<Incoming>> {
        self.line()
    }
}
// ANCHOR_END: line_reader

/// Plain and TLS: CRLF after each line, the whole batch in one write.
pub struct PlainSink {
    half: WriteHalf,
    bytes: Vec<u8>,
}

impl PlainSink {
    pub fn new(half: WriteHalf) -> PlainSink {
        PlainSink {
            half,
            bytes: Vec::new(),
        }
    }
}

impl LineSink for PlainSink {
    fn write_lines(&mut self, lines: &[Line]) -> io::Result<()> {
        self.bytes.clear();
        for line in lines {
            self.bytes.extend_from_slice(line.as_bytes());
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.half.write_all(&self.bytes)?;
        self.half.flush()
    }

    fn close(&mut self) {
        self.half.close();
    }
}

// ANCHOR: lifecycle
/// Every connected client, as the sweeper sees it.
#[derive(Default)]
struct Watchlist {
    clients: Mutex<HashMap<ClientId, Watched>>,
    epoch: OnceInstant,
}

struct Watched {
    outbox: Outbox,
    heard: Arc<AtomicU64>,
    since: u64,
    pinged: Option<u64>,
    cut: Option<u64>,
}

/// The reader's hold on its entry: `heard` on each line, removed on drop.
struct Watch {
    list: Arc<Watchlist>,
    id: ClientId,
    heard: Arc<AtomicU64>,
}

impl Watchlist {
    /// Held for a map insert, a remove, or one sweep with no park inside
    /// (pushes never block); a plain lock is fine.
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientId, Watched>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.epoch.get().elapsed().as_millis() as u64
    }

    fn add(self: &Arc<Self>, outbox: Outbox) -> Watch {
        let (id, now) = (outbox.id(), self.now());
        let heard = Arc::new(AtomicU64::new(now));
        let watched = Watched {
            outbox,
            heard: heard.clone(),
            since: now,
            pinged: None,
            cut: None,
        };
        self.lock().insert(id, watched);
        Watch {
            list: self.clone(),
            id,
            heard,
        }
    }
}

impl Watch {
    fn heard(&self) {
        self.heard.store(self.list.now(), Ordering::Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.list.lock().remove(&self.id);
    }
}

/// The sweeper's clock starts with the first client, not at a fixed time.
#[derive(Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

/// What the sweep did to one client.
#[derive(Debug, PartialEq, Eq)]
enum Sweep {
    Nothing,
    Ping,
    PingTimeout,
    RegistrationTimeout,
    ForceClose,
}

/// The rule, at `now` (ms): after `interval` of silence a PING; after as
/// long again a cut; an unregistered client gets `registration` in all;
/// a cut client whose writer has not closed within `grace` is shut.
fn sweep_one(w: &mut Watched, now: u64, s: &Settings, grace: u64) -> Sweep {
    let interval = s.ping_interval.as_millis() as u64;
    let heard = w.heard.load(Ordering::Relaxed);
    if let Some(cut) = w.cut {
        return if now.saturating_sub(cut) >= grace {
            Sweep::ForceClose
        } else {
            Sweep::Nothing
        };
    }
    if w.pinged.is_some_and(|at| heard > at) {
        w.pinged = None; // it answered (any line counts)
    }
    let registration = s.registration_timeout.as_millis() as u64;
    if !w.outbox.is_registered() && now.saturating_sub(w.since) >= registration {
        return Sweep::RegistrationTimeout;
    }
    let silent = now.saturating_sub(heard);
    match w.pinged {
        Some(_) if silent >= 2 * interval => Sweep::PingTimeout,
        None if silent >= interval => Sweep::Ping,
        _ => Sweep::Nothing,
    }
}

/// Start the sweeper thread: a plain OS thread, so `std::thread::sleep` is
/// fine here. Ends when `stop` fires.
pub fn start_sweeper(hub: &Hub, stop: Shutdown) -> io::Result<std::thread::JoinHandle<()>> {
    let (list, settings, stats) = (hub.clients.clone(), hub.settings.clone(), hub.stats.clone());
    // A quarter interval: a ping goes out at most 25% late.
    let tick = (settings.ping_interval / 4).min(Duration::from_secs(1));
    let grace = 2 * tick.as_millis() as u64;
    let ping = Line::from(format!("PING :{}", settings.server_name));
    std::thread::Builder::new()
        .name("sweeper".into())
        .spawn(move || {
            while !stop.wait_timeout(tick) {
                let now = list.now();
                for w in list.lock().values_mut() {
                    match sweep_one(w, now, &settings, grace) {
                        Sweep::Nothing => {}
                        Sweep::Ping => {
                            w.pinged = Some(now);
                            let _ = w.outbox.push(ping.clone());
                        }
                        Sweep::PingTimeout => {
                            stats.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                            close(w, now, &ping_timeout(&settings));
                        }
                        Sweep::RegistrationTimeout => {
                            stats.registration_timeouts.fetch_add(1, Ordering::Relaxed);
                            close(w, now, "Registration timed out");
                        }
                        Sweep::ForceClose => w.outbox.shut(),
                    }
                }
            }
        })
}

fn close(w: &mut Watched, now: u64, reason: &str) {
    w.cut = Some(now);
    let last = format!("ERROR :Closing link: ({reason})");
    w.outbox.close_with(Some(Line::from(last)), reason);
}
// ANCHOR_END: lifecycle

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, as a slow network would.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn lines(input: &[u8], chunk: usize) -> Vec<String> {
        let mut reader = LineReader::new(Trickle(input, chunk));
        let mut seen = Vec::new();
        while let Some(incoming) = reader.next_line().unwrap() {
            seen.push(match incoming {
                Incoming::Line(s) => s,
                Incoming::TooLong => "<too long>".into(),
                Incoming::NotUtf8 => "<not utf-8>".into(),
            });
        }
        seen
    }

    #[test]
    fn crlf_and_lf_end_lines_and_a_partial_last_line_is_dropped() {
        for chunk in [1, 3, 4096] {
            let seen = lines(b"NICK a\r\nUSER a 0 * :A\nPING x\r\nPART", chunk);
            assert_eq!(seen, ["NICK a", "USER a 0 * :A", "PING x"], "chunk {chunk}");
        }
    }

    #[test]
    fn the_longest_line_passes_one_more_byte_is_too_long_and_skipped() {
        let longest = format!("PRIVMSG #a :{}", "x".repeat(510 - 12));
        assert_eq!(longest.len(), 510);
        let longer = format!("{longest}y");
        // Far longer than the buffer: skipped as it arrives.
        let huge = "z".repeat(100_000);
        let input = format!("{longest}\r\n{longer}\r\n{huge}\nPING after\r\n");
        for chunk in [7, 4096] {
            let seen = lines(input.as_bytes(), chunk);
            assert_eq!(
                seen,
                [longest.as_str(), "<too long>", "<too long>", "PING after"]
            );
        }
    }

    #[test]
    fn invalid_utf8_is_reported_and_the_next_line_still_read() {
        let seen = lines(b"PRIVMSG #a :\xff\xfe\r\nPING ok\r\n", 4096);
        assert_eq!(seen, ["<not utf-8>", "PING ok"]);
    }

    fn settings() -> Settings {
        crate::cli::Config::from_args(clap::Parser::parse_from([
            "chat_server",
            "--ping-interval",
            "1s",
        ]))
        .unwrap()
        .settings
    }

    fn watched(outbox: Outbox) -> Watched {
        Watched {
            outbox,
            heard: Arc::new(AtomicU64::new(0)),
            since: 0,
            pinged: None,
            cut: None,
        }
    }

    #[test]
    fn silence_brings_a_ping_then_a_ping_timeout_and_an_answer_resets_it() {
        let s = settings();
        let (outbox, _drain) = Outbox::new(ClientId(1), 1024, || {});
        outbox.set_registered();
        let mut w = watched(outbox);
        assert_eq!(sweep_one(&mut w, 999, &s, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 1000, &s, 500), Sweep::Ping);
        w.pinged = Some(1000);
        assert_eq!(sweep_one(&mut w, 1999, &s, 500), Sweep::Nothing);
        w.heard.store(1500, Ordering::Relaxed); // PONG
        assert_eq!(sweep_one(&mut w, 2000, &s, 500), Sweep::Nothing);
        assert_eq!(w.pinged, None);
        assert_eq!(sweep_one(&mut w, 2500, &s, 500), Sweep::Ping);
        w.pinged = Some(2500);
        assert_eq!(sweep_one(&mut w, 3500, &s, 500), Sweep::PingTimeout);
        w.cut = Some(3500);
        assert_eq!(sweep_one(&mut w, 3999, &s, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 4000, &s, 500), Sweep::ForceClose);
    }

    #[test]
    fn a_client_that_never_registers_is_cut() {
        let s = settings();
        let (outbox, _drain) = Outbox::new(ClientId(1), 1024, || {});
        let mut w = watched(outbox);
        w.heard.store(900, Ordering::Relaxed); // chatty, but no NICK/USER
        assert_eq!(sweep_one(&mut w, 999, &s, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 1000, &s, 500), Sweep::RegistrationTimeout);
    }
}
