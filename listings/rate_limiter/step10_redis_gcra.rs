//! Step 10: one limit shared by several processes, through a real Redis.
//!
//! Three copies of a service, each with its own in-process limiter, admit
//! three times the quota. Here a key's GCRA state (its theoretical arrival
//! time, one number) lives in Redis, and each decision is one Lua script
//! that Redis runs atomically: read the TAT, decide, write it back. The
//! client speaks RESP2 with `redis-protocol` over may's sockets.
//!
//! With no arguments the program starts its own `redis-server` on a free
//! port, runs three copies of itself against one key (`--hammer ADDR
//! MILLIS`), adds up what they were admitted, then kills the server to show
//! what a decision does when Redis is down.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use may::net::TcpStream;
use may_patterns::ratelimit::{Decision, Quota};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::timeout::for_may;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

// ANCHOR: script
/// GCRA for one key, as `Gcra::decide` computes it, in microseconds (the
/// resolution of Redis's clock). KEYS[1]: the key. ARGV: the emission
/// interval T, the burst, the cost and, only when a test replays a trace,
/// `now`. Returns {admitted, remaining, retry_after, reset}, times in µs,
/// retry_after -1 for "never".
const GCRA_LUA: &str = r#"
local t, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  -- Redis's clock, not the caller's: processes on machines whose clocks
  -- disagree still share one timeline.
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if cost > burst then return {0, 0, -1, tat - now} end
local new_tat = tat + cost * t
-- tau + T = burst * T: the earliest now at which new_tat is within tolerance.
local allow_at = new_tat - burst * t
if now < allow_at then return {0, 0, allow_at - now, tat - now} end
if new_tat > now then
  -- The key expires when its TAT passes: it is then a full quota again, so
  -- an idle key costs Redis nothing.
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
end
return {1, math.floor((now - allow_at) / t), 0, new_tat - now}
"#;
// ANCHOR_END: script

/// Why a command got no usable answer.
#[derive(Debug)]
pub enum RedisError {
    /// No connection, or it broke: Redis is down, stalled past the timeout,
    /// or closed it. `during` says which step failed.
    Io {
        during: &'static str,
        error: io::Error,
    },
    /// Redis answered with an error reply (`-ERR ...`).
    Reply(String),
    /// The bytes were not a reply this client accepts.
    Protocol(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Io { during, error } => write!(f, "{during}: {error}"),
            RedisError::Reply(message) => write!(f, "redis answered: {message}"),
            RedisError::Protocol(why) => write!(f, "not a reply this client accepts: {why}"),
        }
    }
}

impl std::error::Error for RedisError {}

fn io_error(during: &'static str) -> impl FnOnce(io::Error) -> RedisError {
    move |error| RedisError::Io { during, error }
}

// ANCHOR: connection
/// The longest reply accepted. Ours are a few dozen bytes (four integers, a
/// 40-character SHA, an error line); a longer one is a bug or not Redis,
/// and refusing it keeps a connection's memory fixed.
const REPLY_CAP: usize = 1024;

/// One connection to Redis: one command out, one reply in, every step
/// bounded by a timeout.
pub struct Connection {
    stream: TcpStream,
    /// Filled from the start for each reply, never grown.
    reply: Box<[u8; REPLY_CAP]>,
    /// The encoded command; as long as the longest one sent (EVAL).
    command: Vec<u8>,
}

impl Connection {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, RedisError> {
        // may keeps socket timeouts in whole milliseconds, 0 meaning none.
        let timeout = for_may(timeout);
        let stream =
            may_patterns::net::connect_timeout(&addr, timeout).map_err(io_error("connecting"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(io_error("setting up the socket"))?;
        Ok(Connection {
            stream,
            reply: Box::new([0; REPLY_CAP]),
            command: Vec::new(),
        })
    }

    /// Send one command (an array of bulk strings; integers are written as
    /// bulk strings too, as Redis expects) and read its reply.
    pub fn call(&mut self, args: &[BorrowedFrame]) -> Result<OwnedFrame, RedisError> {
        let command = BorrowedFrame::Array(args);
        self.command.resize(command.encode_len(true), 0);
        encode_borrowed(&mut self.command, &command, true)
            .map_err(|e| RedisError::Protocol(format!("encoding the command: {e}")))?;
        self.stream
            .write_all(&self.command)
            .map_err(io_error("sending the command"))?;
        self.read_reply()
    }
    // ANCHOR_END: connection

    // ANCHOR: read_reply
    fn read_reply(&mut self) -> Result<OwnedFrame, RedisError> {
        let mut filled = 0;
        loop {
            let n = self
                .stream
                .read(&mut self.reply[filled..])
                .map_err(io_error("reading the reply"))?;
            if n == 0 {
                return Err(RedisError::Io {
                    during: "reading the reply",
                    error: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "redis closed the connection",
                    ),
                });
            }
            filled += n;
            let got = &self.reply[..filled];
            check_shape(got).map_err(RedisError::Protocol)?;
            match decode(got).map_err(|e| RedisError::Protocol(e.to_string()))? {
                // We never pipeline: bytes after the reply mean we lost track.
                Some((_, used)) if used != filled => {
                    return Err(RedisError::Protocol("bytes after the reply".into()))
                }
                Some((OwnedFrame::Error(message), _)) => return Err(RedisError::Reply(message)),
                Some((frame, _)) => return Ok(frame),
                None if filled == REPLY_CAP => {
                    return Err(RedisError::Protocol(format!(
                        "a reply longer than {REPLY_CAP} bytes"
                    )))
                }
                None => continue, // the rest is still on its way
            }
        }
    }
    // ANCHOR_END: read_reply
}

// ANCHOR: shape
/// The most items in an array reply we accept: the script's four integers.
const MAX_ITEMS: i64 = 4;

/// Refuse any reply our commands never get, before the decoder sees it:
/// accepted are a simple string, an error, an integer, a bulk string or a
/// null, or one array of at most [`MAX_ITEMS`] of those. redis-protocol's
/// decoder recurses once per nested array (6.0.0, src/resp2/decode.rs:137
/// and 168), and a reply far shorter than our 1 KiB buffer nests deep
/// enough to overflow a coroutine's stack. Only the bytes that have arrived
/// are looked at: `Ok` means "nothing wrong so far".
fn check_shape(reply: &[u8]) -> Result<(), String> {
    if reply.first() != Some(&b'*') {
        return Ok(());
    }
    let Some((items, mut at)) = number_line(reply, 1)? else {
        return Ok(());
    };
    if items > MAX_ITEMS {
        return Err(format!("an array of {items} items"));
    }
    for _ in 0..items.max(0) {
        at = match reply.get(at) {
            None => return Ok(()),
            Some(b'*') => return Err("a nested array".into()),
            Some(b'$') => match number_line(reply, at + 1)? {
                None => return Ok(()),
                // $-1 is a null; otherwise the string and its CRLF follow.
                Some((len, next)) => next.saturating_add(usize::try_from(len).map_or(0, |n| n + 2)),
            },
            Some(_) => match find_crlf(reply, at) {
                None => return Ok(()),
                Some(end) => end + 2,
            },
        };
    }
    Ok(())
}
// ANCHOR_END: shape

/// The integer on the line starting at `from`, and where the next line
/// starts; `None` while the line is incomplete.
fn number_line(reply: &[u8], from: usize) -> Result<Option<(i64, usize)>, String> {
    let Some(end) = find_crlf(reply, from) else {
        return Ok(None);
    };
    let number = std::str::from_utf8(&reply[from..end])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or("a malformed length")?;
    Ok(Some((number, end + 2)))
}

fn find_crlf(reply: &[u8], from: usize) -> Option<usize> {
    let rest = reply.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

// ANCHOR: limiter
/// GCRA with its state in Redis: every process that connects to the same
/// Redis and names the same key shares one limit.
pub struct RedisGcra {
    addr: SocketAddr,
    timeout: Duration,
    /// T in whole µs, rounded up: a rate never runs fast. (Lua's numbers
    /// are doubles, exact to 2^53 µs: now since 1970 plus burst × T stays
    /// exact for any burst × T under two centuries.)
    interval_us: i64,
    burst: i64,
    /// SHA1 of the script, from SCRIPT LOAD: each decision sends 40 bytes
    /// instead of the script.
    sha: String,
    /// `None` after a failure: the next decision reconnects.
    conn: Option<Connection>,
    /// How often Redis had lost the script (restarted, or SCRIPT FLUSH) and
    /// EVAL sent it again.
    pub reloads: u64,
}

impl RedisGcra {
    /// Connect and load the script. Fails if Redis cannot be reached now.
    pub fn connect(addr: SocketAddr, quota: Quota, timeout: Duration) -> Result<Self, RedisError> {
        let mut conn = Connection::connect(addr, timeout)?;
        let script = [bulk(b"SCRIPT"), bulk(b"LOAD"), bulk(GCRA_LUA.as_bytes())];
        let sha = match conn.call(&script)? {
            OwnedFrame::BulkString(sha) => String::from_utf8_lossy(&sha).into_owned(),
            other => return Err(RedisError::Protocol(format!("SCRIPT LOAD gave {other:?}"))),
        };
        let micros = quota.interval().as_nanos().div_ceil(1_000);
        Ok(RedisGcra {
            addr,
            timeout,
            interval_us: i64::try_from(micros).unwrap_or(i64::MAX),
            burst: i64::try_from(quota.burst()).unwrap_or(i64::MAX),
            sha,
            conn: Some(conn),
            reloads: 0,
        })
    }
    // ANCHOR_END: limiter

    /// The script's SHA1, as SCRIPT LOAD returned it.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// Decide for `cost` units of `key`, by Redis's clock.
    pub fn check(&mut self, key: &str, cost: u64) -> Result<Decision, RedisError> {
        self.run(key, cost, None)
    }

    /// The same at `now` (whole µs) from the caller's clock: only for
    /// replaying a trace, since processes do not share a clock.
    pub fn check_at(
        &mut self,
        key: &str,
        cost: u64,
        now: Duration,
    ) -> Result<Decision, RedisError> {
        self.run(key, cost, Some(now))
    }

    // ANCHOR: run
    fn run(&mut self, key: &str, cost: u64, now: Option<Duration>) -> Result<Decision, RedisError> {
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        let now = now.map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
        let mut args = [
            bulk(b"EVALSHA"),
            bulk(self.sha.as_bytes()),
            BorrowedFrame::Integer(1), // one key
            bulk(key.as_bytes()),
            BorrowedFrame::Integer(self.interval_us),
            BorrowedFrame::Integer(self.burst),
            BorrowedFrame::Integer(cost),
            BorrowedFrame::Integer(now.unwrap_or(0)),
        ];
        let used = if now.is_some() { 8 } else { 7 };
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(Connection::connect(self.addr, self.timeout)?),
        };
        let mut reply = conn.call(&args[..used]);
        if matches!(&reply, Err(RedisError::Reply(m)) if m.starts_with("NOSCRIPT")) {
            // EVAL runs the script and caches it again for the next EVALSHA.
            self.reloads += 1;
            args[0] = bulk(b"EVAL");
            args[1] = bulk(GCRA_LUA.as_bytes());
            reply = conn.call(&args[..used]);
        }
        match reply {
            Ok(frame) => decision(frame),
            // An error reply leaves the connection in step; anything else may
            // have left half a reply in it, which the next call would read.
            Err(e @ RedisError::Reply(_)) => Err(e),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
    // ANCHOR_END: run
}

fn bulk(bytes: &[u8]) -> BorrowedFrame<'_> {
    BorrowedFrame::BulkString(bytes)
}

/// The script's {admitted, remaining, retry_after, reset} as a [`Decision`].
fn decision(frame: OwnedFrame) -> Result<Decision, RedisError> {
    let us = |n: i64| Duration::from_micros(n.unsigned_abs());
    match frame {
        OwnedFrame::Array(items) => match items.as_slice() {
            [OwnedFrame::Integer(1), OwnedFrame::Integer(remaining @ 0..), _, OwnedFrame::Integer(reset @ 0..)] => {
                Ok(Decision::Allowed {
                    remaining: remaining.unsigned_abs(),
                    reset: us(*reset),
                })
            }
            [OwnedFrame::Integer(0), _, OwnedFrame::Integer(retry @ -1..), OwnedFrame::Integer(reset @ 0..)] => {
                Ok(Decision::Denied {
                    retry_after: if *retry == -1 {
                        Duration::MAX
                    } else {
                        us(*retry)
                    },
                    reset: us(*reset),
                })
            }
            _ => Err(RedisError::Protocol(format!(
                "the script returned {items:?}"
            ))),
        },
        other => Err(RedisError::Protocol(format!(
            "the script returned {other:?}"
        ))),
    }
}

// ANCHOR: when_down
/// What a decision is when Redis cannot make one: the service's choice.
#[derive(Debug, Clone, Copy)]
pub enum WhenDown {
    /// Fail open: an outage of the limiter is not an outage of the service.
    /// Claims nothing about what is left (`remaining` 0).
    Admit,
    /// Fail closed: the limit guards something that must not be overrun
    /// (a paid upstream, a login form against guessing).
    Deny,
}

/// What a client told "no" because Redis is down should wait.
const RETRY_WHEN_DOWN: Duration = Duration::from_secs(1);

impl WhenDown {
    pub fn decision(self) -> Decision {
        match self {
            WhenDown::Admit => Decision::Allowed {
                remaining: 0,
                reset: Duration::ZERO,
            },
            WhenDown::Deny => Decision::Denied {
                retry_after: RETRY_WHEN_DOWN,
                reset: RETRY_WHEN_DOWN,
            },
        }
    }
}
// ANCHOR_END: when_down

/// A redis-server of this program's own on 127.0.0.1: a free port, nothing
/// written to disk, killed when dropped.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RedisServer {
    /// Start one on a free port. Between finding the port free and
    /// redis-server binding it, another program may take it: then try
    /// another.
    pub fn start() -> Result<RedisServer, String> {
        let mut why = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|probe| probe.local_addr())
                .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
                .port();
            match RedisServer::start_on(port) {
                Ok(server) => return Ok(server),
                Err(Start::Exited(reason)) => why = reason,
                Err(Start::Failed(reason)) => return Err(reason),
            }
        }
        Err(why)
    }

    /// Start one on `port` (a test restarts a killed server where its
    /// clients expect it).
    pub fn start_on(port: u16) -> Result<RedisServer, Start> {
        // ANCHOR: spawn_server
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()) // read only if it exits at start
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Start::Failed(format!(
                    "cannot run redis-server ({e}): install it (Debian: apt-get install redis-server)"
                ))
            })?;
        // ANCHOR_END: spawn_server
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        // Ready when it answers PING; a readiness probe, not a fixed sleep.
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                let _ = child
                    .stdout
                    .take()
                    .map(|mut out| out.read_to_string(&mut log));
                // Its last two lines say why, after "pid:role date time # ".
                let why: Vec<&str> = log
                    .lines()
                    .rev()
                    .take(2)
                    .map(|line| line.split_once(" # ").map_or(line, |(_, text)| text))
                    .collect();
                let why: Vec<&str> = why.into_iter().rev().collect();
                return Err(Start::Exited(format!(
                    "redis-server exited ({status}): {}",
                    why.join(" ")
                )));
            }
            let pong = Connection::connect(addr, Duration::from_millis(200))
                .and_then(|mut c| c.call(&[bulk(b"PING")]));
            if let Ok(OwnedFrame::SimpleString(s)) = pong {
                if s == b"PONG" {
                    return Ok(RedisServer { child, addr });
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Start::Failed(format!(
                    "redis-server on {addr} did not answer PING in 10s"
                )));
            }
            may::coroutine::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill it now (SIGKILL: no goodbye to its clients) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why [`RedisServer::start_on`] failed.
#[derive(Debug)]
pub enum Start {
    /// It ran and exited: most likely the port was taken.
    Exited(String),
    /// Trying another port would not help.
    Failed(String),
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::Exited(why) | Start::Failed(why) => f.write_str(why),
        }
    }
}

// ANCHOR: hammer
/// The demo's quota: 100 per second, 10 at once.
fn demo_quota() -> Quota {
    Quota::per_second(100, 10).expect("a valid quota")
}

const KEY: &str = "demo";

/// What one process was told over its run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub admitted: u64,
    pub denied: u64,
    pub failed: u64,
}

/// Ask for one unit of `KEY` as fast as one connection can, for `run`.
/// A failed decision counts as a denial (fail closed), and the next call
/// tries a new connection.
fn hammer(limiter: &mut RedisGcra, run: Duration) -> Tally {
    let mut tally = Tally::default();
    let started = Instant::now();
    while started.elapsed() < run {
        let decision = limiter.check(KEY, 1).unwrap_or_else(|e| {
            if tally.failed == 0 {
                eprintln!("{e}"); // the first failure; the rest are the same
            }
            tally.failed += 1;
            WhenDown::Deny.decision()
        });
        if decision.is_admitted() {
            tally.admitted += 1;
        } else {
            tally.denied += 1;
        }
    }
    tally
}
// ANCHOR_END: hammer

const PROCESSES: usize = 3;
const RUN: Duration = Duration::from_secs(1);

fn main() {
    configure_once(Settings {
        workers: 1,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [] => demo(),
        [flag, addr, millis] if flag == "--hammer" => hammer_command(addr, millis),
        _ => Err("usage: step10_redis_gcra [--hammer ADDR MILLIS]".to_owned()),
    };
    if let Err(e) = outcome {
        eprintln!("step10_redis_gcra: {e}");
        std::process::exit(1);
    }
}

/// One of the demo's processes: connect, say so on one line, hammer, then
/// print the tally on another.
fn hammer_command(addr: &str, millis: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    let millis: u64 = millis
        .parse()
        .map_err(|e| format!("milliseconds {millis:?}: {e}"))?;
    let tally = may::go!(move || {
        let mut limiter = RedisGcra::connect(addr, demo_quota(), Duration::from_millis(200))?;
        println!("hammering {KEY} on {addr}");
        Ok::<_, RedisError>(hammer(&mut limiter, Duration::from_millis(millis)))
    })
    .join()
    .map_err(|_| "the hammering coroutine panicked".to_owned())?
    .map_err(|e| format!("redis at {addr}: {e}"))?;
    println!(
        "admitted {} denied {} failed {}",
        tally.admitted, tally.denied, tally.failed
    );
    Ok(())
}

/// Parse a hammer's line back.
pub fn parse_tally(line: &str) -> Option<Tally> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["admitted", a, "denied", d, "failed", f] => Some(Tally {
            admitted: a.parse().ok()?,
            denied: d.parse().ok()?,
            failed: f.parse().ok()?,
        }),
        _ => None,
    }
}

fn demo() -> Result<(), String> {
    let mut server = RedisServer::start()?;
    let quota = demo_quota();
    println!("redis-server on {}; quota {quota}", server.addr);
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            Command::new(&me)
                .args([
                    "--hammer",
                    &server.addr.to_string(),
                    &RUN.as_millis().to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start a copy of {}: {e}", me.display()))
        })
        .collect::<Result<_, _>>()?;
    let mut total = Tally::default();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or("");
        let tally = parse_tally(line).ok_or(format!("process {} printed {text:?}", i + 1))?;
        println!(
            "process {}: ~{} admitted, ~{} denied",
            i + 1,
            tally.admitted,
            tally.denied
        );
        total.admitted += tally.admitted;
        total.failed += tally.failed;
    }
    // ANCHOR: bound
    let wall = started.elapsed();
    // Over any span, GCRA admits at most the burst plus one per interval.
    let allowed = quota.burst() + (wall.as_nanos() / quota.interval().as_nanos()) as u64;
    println!(
        "together: ~{} admitted in {:.2?}; the quota allows at most ~{allowed}",
        total.admitted, wall
    );
    println!(
        "within the quota: {}; failed decisions: {}",
        total.admitted <= allowed,
        total.failed
    );
    // ANCHOR_END: bound
    down_and_back(&mut server)
}

/// Kill the server under a connected limiter, then start it again.
fn down_and_back(server: &mut RedisServer) -> Result<(), String> {
    let addr = server.addr;
    let mut limiter =
        may::go!(move || RedisGcra::connect(addr, demo_quota(), Duration::from_millis(200)))
            .join()
            .unwrap()
            .map_err(|e| e.to_string())?;
    server.kill();
    println!("redis-server killed");
    let (mut limiter, lines) = may::go!(move || {
        let mut lines = Vec::new();
        for what in [
            "a check on the open connection",
            "the next check, reconnecting",
        ] {
            let asked = Instant::now();
            let outcome = match limiter.check("down", 1) {
                Ok(decision) => format!("decided {decision:?}"),
                Err(e) => format!("failed in {:.1?}: {e}", asked.elapsed()),
            };
            lines.push(format!("  {what}: {outcome}"));
        }
        (limiter, lines)
    })
    .join()
    .unwrap();
    lines.iter().for_each(|line| println!("{line}"));
    println!("  fail open answers {:?}", WhenDown::Admit.decision());
    println!("  fail closed answers {:?}", WhenDown::Deny.decision());
    *server = RedisServer::start_on(addr.port()).map_err(|e| e.to_string())?;
    println!("redis-server restarted on the same port, empty");
    let (decision, reloads) = may::go!(move || (limiter.check("down", 1), limiter.reloads))
        .join()
        .unwrap();
    let decision = decision.map_err(|e| e.to_string())?;
    println!("  the next check reconnects: {decision:?}");
    println!("  EVALSHA found no script there, so EVAL sent it: {reloads} time");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use may::net::TcpListener;
    use may_patterns::ratelimit::{Algorithm, Gcra};
    use may_patterns::runtime::configure_for_tests;

    fn server() -> RedisServer {
        configure_for_tests();
        RedisServer::start().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"))
    }

    fn on_coroutine<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        may::go!(f).join().unwrap()
    }

    fn connect(addr: SocketAddr, quota: Quota, timeout: Duration) -> RedisGcra {
        on_coroutine(move || RedisGcra::connect(addr, quota, timeout).unwrap())
    }

    /// One command on a connection of its own, for a test to look at Redis.
    fn command(addr: SocketAddr, args: &'static [&'static str]) -> OwnedFrame {
        on_coroutine(move || {
            let frames: Vec<BorrowedFrame> = args.iter().map(|a| bulk(a.as_bytes())).collect();
            let mut conn = Connection::connect(addr, Duration::from_secs(2)).unwrap();
            conn.call(&frames).unwrap()
        })
    }

    const S: Duration = Duration::from_secs(1);
    const US: Duration = Duration::from_micros(1);

    /// 6 per minute (T = 10 s), 5 at once. The key's expiry runs on Redis's
    /// real clock while a replayed trace runs on its own: with every time a
    /// whole second, a key that must still exist has seconds left to live.
    fn slow_quota() -> Quota {
        Quota::new(6, Duration::from_secs(60), 5).unwrap()
    }

    #[test]
    fn the_script_decides_exactly_as_the_in_process_gcra() {
        let redis = server();
        let mut remote = connect(redis.addr, slow_quota(), S);
        let (gcra, mut rng) = (Gcra::new(slow_quota()), fastrand::Rng::with_seed(10));
        let mut state = gcra.new_state(Duration::ZERO);
        let (mut now, mut admitted, mut denied) = (Duration::from_secs(1_000), 0, 0);
        for _ in 0..2_000 {
            now += S * rng.u32(0..=15);
            let cost = rng.u64(0..=6); // 0 and 6 (more than the burst) too
            let local = gcra.decide(&mut state, now, cost);
            let (back, there) = on_coroutine(move || {
                let d = remote.check_at("trace", cost, now);
                (remote, d)
            });
            remote = back;
            assert_eq!(there.unwrap(), local, "cost {cost} at {now:?}");
            if local.is_admitted() {
                admitted += 1
            } else {
                denied += 1
            }
        }
        assert!(
            admitted > 500 && denied > 500,
            "{admitted} admitted, {denied} denied"
        );
    }

    #[test]
    fn retry_after_is_exact_to_the_microsecond() {
        let redis = server();
        let mut limiter = connect(redis.addr, slow_quota(), S);
        let t = Duration::from_secs(100);
        on_coroutine(move || {
            assert!(limiter.check_at("k", 5, t).unwrap().is_admitted());
            let later = t + Duration::from_micros(1_234_567);
            let Decision::Denied { retry_after, reset } = limiter.check_at("k", 2, later).unwrap()
            else {
                panic!("the burst is used up")
            };
            assert_eq!(
                retry_after,
                Duration::from_secs(20) - Duration::from_micros(1_234_567)
            );
            assert_eq!(
                reset,
                Duration::from_secs(50) - Duration::from_micros(1_234_567)
            );
            assert!(!limiter
                .check_at("k", 2, later + retry_after - US)
                .unwrap()
                .is_admitted());
            assert_eq!(
                limiter.check_at("k", 2, later + retry_after).unwrap(),
                Decision::Allowed {
                    remaining: 0,
                    reset: Duration::from_secs(50)
                }
            );
            assert_eq!(
                limiter.check_at("k", 6, later + retry_after).unwrap(),
                Decision::Denied {
                    retry_after: Duration::MAX,
                    reset: Duration::from_secs(50)
                }
            );
        });
    }

    #[test]
    fn an_interval_that_is_not_whole_microseconds_is_rounded_up() {
        let redis = server();
        // 1 s / 3 = 333,333,333 ns: Redis counts 333,334 µs.
        let limiter = connect(redis.addr, Quota::per_second(3, 1).unwrap(), S);
        assert_eq!(limiter.interval_us, 333_334);
    }

    #[test]
    fn idle_keys_vanish_from_redis() {
        let redis = server();
        let mut limiter = connect(redis.addr, Quota::per_second(1_000, 1).unwrap(), S);
        on_coroutine(move || {
            for i in 0..1_000 {
                assert!(limiter
                    .check(&format!("client-{i}"), 1)
                    .unwrap()
                    .is_admitted());
            }
        });
        // Each key lives 1 ms after its decision; Redis's own expiry cycle
        // removes them within about a second.
        let started = Instant::now();
        while command(redis.addr, &["DBSIZE"]) != OwnedFrame::Integer(0) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "keys are still there"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_key_lives_until_its_quota_is_full_again() {
        let redis = server();
        let mut limiter = connect(redis.addr, Quota::per_second(10, 5).unwrap(), S);
        let decision = on_coroutine(move || limiter.check("k", 5).unwrap());
        assert!(decision.is_admitted());
        let OwnedFrame::Integer(ttl) = command(redis.addr, &["PTTL", "k"]) else {
            panic!()
        };
        assert!(
            (1..=500).contains(&ttl),
            "PTTL {ttl} ms for a reset of 500 ms"
        );
    }

    #[test]
    fn after_script_flush_eval_sends_the_script_again() {
        let redis = server();
        let mut limiter = connect(redis.addr, slow_quota(), S);
        limiter = on_coroutine(move || {
            assert!(limiter.check("k", 1).unwrap().is_admitted());
            limiter
        });
        assert_eq!(
            command(redis.addr, &["SCRIPT", "FLUSH"]),
            OwnedFrame::SimpleString(b"OK".to_vec())
        );
        let (second, third, reloads) = on_coroutine(move || {
            (
                limiter.check("k", 1).unwrap(),
                limiter.check("k", 1).unwrap(),
                limiter.reloads,
            )
        });
        assert!(
            matches!(second, Decision::Allowed { remaining: 3, .. }),
            "{second:?}"
        );
        assert!(
            matches!(third, Decision::Allowed { remaining: 2, .. }),
            "{third:?}"
        );
        assert_eq!(reloads, 1, "EVALSHA works again once EVAL has cached it");
    }

    #[test]
    fn redis_killed_mid_run_fails_fast_and_the_limiter_reconnects_when_it_is_back() {
        let mut redis = server();
        let addr = redis.addr;
        let mut limiter = connect(addr, slow_quota(), S);
        let (ready_tx, ready_rx) = may::sync::mpsc::channel();
        let (killed_tx, killed_rx) = may::sync::mpsc::channel::<Instant>();
        let hammer = may::go!(move || {
            let mut ok = 0;
            let error = loop {
                match limiter.check("k", 1) {
                    Ok(_) => ok += 1,
                    Err(e) => break e,
                }
                if ok == 10 {
                    ready_tx.send(()).unwrap();
                }
            };
            let killed_at = killed_rx.recv().unwrap();
            let next = Instant::now();
            let again = limiter.check("k", 1).unwrap_err();
            (limiter, error, killed_at.elapsed(), again, next.elapsed())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the hammer runs");
        let killed_at = Instant::now();
        redis.kill();
        killed_tx.send(killed_at).unwrap();
        let (mut limiter, error, since_kill, again, retry_took) = hammer.join().unwrap();
        assert!(matches!(error, RedisError::Io { .. }), "{error}");
        assert!(
            since_kill < Duration::from_secs(1),
            "noticed after {since_kill:?}"
        );
        assert_eq!(
            again.to_string(),
            "connecting: Connection refused (os error 111)"
        );
        assert!(retry_took < Duration::from_secs(1), "{retry_took:?}");
        assert!(WhenDown::Admit.decision().is_admitted());
        assert!(!WhenDown::Deny.decision().is_admitted());

        let _redis = RedisServer::start_on(addr.port()).expect("the port is free again");
        let (back, reloads) = on_coroutine(move || (limiter.check("k", 1), limiter.reloads));
        // A new, empty Redis: a full quota, and no script until EVAL.
        let full = Decision::Allowed {
            remaining: 4,
            reset: Duration::from_secs(10),
        };
        assert_eq!(back.unwrap(), full);
        assert_eq!(reloads, 1);
    }

    #[test]
    fn a_stalled_redis_times_out_and_the_request_may_still_count() {
        let redis = server();
        let timeout = Duration::from_millis(100);
        let mut limiter = connect(redis.addr, slow_quota(), timeout);
        limiter = on_coroutine(move || {
            assert!(matches!(
                limiter.check("k", 1).unwrap(),
                Decision::Allowed { remaining: 4, .. }
            ));
            limiter
        });
        let signal = |sig: &str| {
            let ok = Command::new("kill")
                .args([sig, &redis.pid().to_string()])
                .status()
                .unwrap();
            assert!(ok.success(), "kill {sig}");
        };
        signal("-STOP");
        let (back, error, took) = on_coroutine(move || {
            let asked = Instant::now();
            let error = limiter.check("k", 1).unwrap_err();
            (limiter, error, asked.elapsed())
        });
        signal("-CONT");
        limiter = back;
        let RedisError::Io { during, error } = &error else {
            panic!("{error}")
        };
        assert_eq!(
            (*during, error.kind()),
            ("reading the reply", io::ErrorKind::TimedOut)
        );
        assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
        // The command had reached Redis: woken up, it ran it. The limiter
        // dropped that connection, so the late reply is never mistaken for
        // the answer to the next command.
        let next = on_coroutine(move || limiter.check("k", 1).unwrap());
        assert!(
            matches!(next, Decision::Allowed { remaining: 2, .. }),
            "{next:?}"
        );
    }

    /// A server that answers any command with `reply`.
    fn fake_redis(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        may::go!(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut command = [0; 256];
            let _ = conn.read(&mut command);
            let _ = conn.write_all(reply);
        });
        addr
    }

    fn ping(addr: SocketAddr) -> Result<OwnedFrame, RedisError> {
        on_coroutine(move || Connection::connect(addr, S)?.call(&[bulk(b"PING")]))
    }

    #[test]
    fn replies_of_a_shape_we_never_ask_for_are_refused() {
        configure_for_tests();
        let nested: &'static [u8] = "*1\r\n".repeat(5_000).leak().as_bytes();
        let huge: &'static [u8] = format!("${}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20))
            .leak()
            .as_bytes();
        for (reply, why) in [
            (nested, "a nested array"),
            (&b"*2\r\n:1\r\n*1\r\n:2\r\n"[..], "a nested array"),
            (&b"*9\r\n"[..], "an array of 9 items"),
            (huge, "a reply longer than 1024 bytes"),
            (&b"+PONG\r\n+PONG\r\n"[..], "bytes after the reply"),
            (&b"*x\r\n"[..], "a malformed length"),
        ] {
            match ping(fake_redis(reply)) {
                Err(RedisError::Protocol(got)) => assert_eq!(got, why),
                other => panic!("expected {why:?}, got {other:?}"),
            }
        }
        assert_eq!(
            ping(fake_redis(b"+PONG\r\n")).unwrap(),
            OwnedFrame::SimpleString(b"PONG".to_vec())
        );
        let Err(RedisError::Reply(e)) = ping(fake_redis(b"-ERR no\r\n")) else {
            panic!()
        };
        assert_eq!(e, "ERR no");
    }

    #[test]
    fn the_shape_check_looks_only_at_what_has_arrived() {
        for fine in [
            &b""[..],
            b"*",
            b"*4\r",
            b"*4\r\n:1\r\n$3\r\nab",
            b"*4\r\n$-1\r\n:1",
            b"*-1\r\n",
            b":5\r\n",
        ] {
            assert_eq!(
                check_shape(fine),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(fine)
            );
        }
        assert!(
            check_shape(b"*2\r\n$3\r\n*ab\r\n*1\r\n").is_err(),
            "a star inside a string is data"
        );
        assert_eq!(check_shape(b"*2\r\n$3\r\n*ab\r\n:1\r\n"), Ok(()));
    }

    #[test]
    fn a_script_result_of_another_shape_is_an_error_not_a_decision() {
        let int = OwnedFrame::Integer;
        assert!(decision(OwnedFrame::Array(vec![int(2), int(0), int(0), int(0)])).is_err());
        assert!(decision(OwnedFrame::Array(vec![int(1), int(-1), int(0), int(0)])).is_err());
        assert!(decision(OwnedFrame::Array(vec![int(0), int(0), int(-2), int(0)])).is_err());
        assert!(decision(int(1)).is_err());
    }

    #[test]
    fn nothing_listens_at_start_is_a_clear_error() {
        configure_for_tests();
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = on_coroutine(move || RedisGcra::connect(free, slow_quota(), S).err().unwrap());
        assert_eq!(
            error.to_string(),
            "connecting: Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_port_already_taken_is_reported_with_redis_servers_reason() {
        configure_for_tests();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        match RedisServer::start_on(port) {
            Err(Start::Exited(why)) => assert_eq!(
                why,
                format!(
                    "redis-server exited (exit status: 1): Warning: Could not create server \
                     TCP listening socket 127.0.0.1:{port}: bind: Address already in use \
                     Failed listening on port {port} (TCP), aborting."
                )
            ),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("redis-server started on a port that was taken"),
        }
    }

    #[test]
    fn a_hammer_line_parses_back() {
        let t = Tally {
            admitted: 3,
            denied: 40,
            failed: 1,
        };
        assert_eq!(parse_tally("admitted 3 denied 40 failed 1"), Some(t));
        assert_eq!(parse_tally("hammering demo on 127.0.0.1:1"), None);
    }
}
