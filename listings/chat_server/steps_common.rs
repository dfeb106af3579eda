//! What the chat server's steps share, written once. A step includes this
//! file with `#[path = "steps_common.rs"] mod steps_common;` and names what
//! it uses at its top.
//!
//! - Steps 2 and 3 (one router for every client): the line reader that
//!   skips a line too long, the running server, the scripted client.
//! - Steps 6 to 10, each a small server in the manner of step 3 plus one
//!   idea (flood control, accounts, history, WebSocket, TLS): the line
//!   reader, the line parser, the rooms map and the test client.
//! - Step 7 and `pitfall_hash_on_worker`: the ticker that shows how late a
//!   coroutine runs while password hashes are checked.

// Each step uses only some of these.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::go;
use may::sync::mpsc;
use may_patterns::{alarm, server};

// Steps 6 to 10.

/// RFC 1459: 512 bytes with the CRLF.
pub const MAX_LINE: usize = 512;

// ANCHOR: next_line
/// Read one line of at most `MAX_LINE` bytes without its CRLF; None at the
/// end (EOF, an error, a line too long or not UTF-8: these steps just hang up).
pub fn next_line(reader: &mut impl BufRead) -> Option<String> {
    let mut buf = Vec::new();
    let n = Read::take(reader, MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .ok()?;
    if n == 0 || buf.last() != Some(&b'\n') {
        return None;
    }
    let line = String::from_utf8(buf).ok()?;
    Some(line.trim_end_matches(['\r', '\n']).to_owned())
}
// ANCHOR_END: next_line

/// `COMMAND a b :trailing words` → ("COMMAND", ["a", "b", "trailing words"]).
pub fn parse(line: &str) -> (String, Vec<String>) {
    let (head, trailing) = match line.split_once(" :") {
        Some((head, trailing)) => (head, Some(trailing)),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    let command = words.next().unwrap_or("").to_ascii_uppercase();
    let mut params: Vec<String> = words.map(str::to_owned).collect();
    params.extend(trailing.map(str::to_owned));
    (command, params)
}

/// Where a member's lines go: the sending end of its writer's channel.
pub trait Deliver: Clone {
    /// Queue `line` for the member; a member that is gone is skipped.
    fn deliver(&self, line: String);
}

impl Deliver for mpsc::Sender<String> {
    fn deliver(&self, line: String) {
        let _ = self.send(line);
    }
}

/// One room's members: id → (nick, where its lines go).
pub type Members<O> = BTreeMap<u64, (String, O)>;

/// Every room's members. A std `Mutex`, held only for map updates and
/// channel sends (which never park), never across a yield.
pub struct Rooms<O>(Mutex<HashMap<String, Members<O>>>);

impl<O> Default for Rooms<O> {
    fn default() -> Self {
        Rooms(Mutex::new(HashMap::new()))
    }
}

impl<O: Deliver> Rooms<O> {
    /// Add client `id` to `room` and tell every member, the joiner too.
    pub fn join(&self, room: &str, id: u64, nick: &str, out: &O) {
        let mut rooms = self.0.lock().unwrap();
        let members = rooms.entry(room.to_owned()).or_default();
        members.insert(id, (nick.to_owned(), out.clone()));
        for (_, out) in members.values() {
            out.deliver(format!(":{nick} JOIN {room}"));
        }
    }

    /// Send `text` to the other members of `room`; false if `from` is not in it.
    pub fn say(&self, room: &str, from: u64, nick: &str, text: &str) -> bool {
        let rooms = self.0.lock().unwrap();
        let Some(members) = rooms.get(room).filter(|m| m.contains_key(&from)) else {
            return false;
        };
        for (id, (_, out)) in members {
            if *id != from {
                out.deliver(format!(":{nick} PRIVMSG {room} :{text}"));
            }
        }
        true
    }

    /// Whether `room` has a member (an empty room is dropped).
    pub fn exists(&self, room: &str) -> bool {
        self.0.lock().unwrap().contains_key(room)
    }

    /// Take client `id` out of every room; drop the rooms left empty.
    pub fn leave_all(&self, id: u64) {
        let mut rooms = self.0.lock().unwrap();
        for members in rooms.values_mut() {
            members.remove(&id);
        }
        rooms.retain(|_, members| !members.is_empty());
    }
}

/// A test client on a std socket: the demos and tests run it on OS threads
/// (or the main thread), never on a coroutine. Reads time out after 10 s.
pub struct Bot {
    pub reader: BufReader<std::net::TcpStream>,
    pub writer: std::net::TcpStream,
}

impl Bot {
    pub fn connect(addr: SocketAddr) -> io::Result<Bot> {
        let writer = std::net::TcpStream::connect(addr)?;
        writer.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Bot {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// Connect, register as `nick` and join `room`.
    pub fn join(addr: SocketAddr, nick: &str, room: &str) -> io::Result<Bot> {
        let mut bot = Bot::connect(addr)?;
        bot.register(nick, room)?;
        Ok(bot)
    }

    /// NICK, USER and JOIN; back when the server echoes the JOIN.
    pub fn register(&mut self, nick: &str, room: &str) -> io::Result<()> {
        self.send(&format!(
            "NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\nJOIN {room}"
        ))?;
        self.until(&format!(":{nick} JOIN {room}")).map(drop)
    }

    /// Send `lines` (CRLF between them) and a final CRLF.
    pub fn send(&mut self, lines: &str) -> io::Result<()> {
        self.writer.write_all(format!("{lines}\r\n").as_bytes())
    }

    /// The next line, None at EOF.
    pub fn line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        Ok(match self.reader.read_line(&mut line)? {
            0 => None,
            _ => Some(line.trim_end().to_owned()),
        })
    }

    /// Lines up to and including the first that contains one of `ends`;
    /// an EOF before it is an error that lists the lines seen.
    pub fn until_any(&mut self, ends: &[&str]) -> io::Result<Vec<String>> {
        let mut seen = Vec::new();
        loop {
            let Some(line) = self.line()? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{seen:?} and no {ends:?}"),
                ));
            };
            let end = ends.iter().any(|end| line.contains(end));
            seen.push(line);
            if end {
                return Ok(seen);
            }
        }
    }

    /// Lines up to and including the first that contains `end`.
    pub fn until(&mut self, end: &str) -> io::Result<Vec<String>> {
        self.until_any(&[end])
    }

    /// The first line that contains `what`, skipping the others.
    pub fn wait_for(&mut self, what: &str) -> io::Result<String> {
        Ok(self
            .until(what)?
            .pop()
            .expect("until returns the line it stopped at"))
    }
}

// Steps 2 and 3: the router's line reader, the running server and the
// scripted client of their demos and tests.

/// What one read of a line gave.
pub enum Line {
    /// A line, without its CR/LF; bytes that are not UTF-8 become U+FFFD.
    Text(String),
    /// More than `MAX_LINE` bytes without a line feed: the rest of that
    /// line is skipped.
    TooLong,
    /// The client closed the connection (or it broke).
    End,
}

/// Read one line of at most `MAX_LINE` bytes, CRLF (or a bare LF) included.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<Line> {
    let mut buf = Vec::new();
    match reader.take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
        Ok(0) => return Ok(Line::End),
        Ok(_) => {}
        Err(e) if e.kind() != io::ErrorKind::Interrupted => return Ok(Line::End),
        Err(e) => return Err(e),
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() < MAX_LINE {
            return Ok(Line::End); // an EOF in the middle of a line
        }
        // Skip to the end of the long line, a bounded piece at a time.
        loop {
            buf.clear();
            match reader.take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return Ok(Line::End),
                Ok(_) if buf.last() == Some(&b'\n') => return Ok(Line::TooLong),
                Ok(_) => {}
            }
        }
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Text(String::from_utf8_lossy(&buf).into_owned()))
}

/// The server, running on its own thread.
pub struct Running {
    pub addr: SocketAddr,
    pub thread: std::thread::JoinHandle<io::Result<server::Report>>,
}

/// A scripted client on a plain OS thread (std sockets block their thread,
/// which is fine off may's workers), keeping every line it received.
pub struct Client {
    pub reader: BufReader<std::net::TcpStream>,
    pub writer: std::net::TcpStream,
    pub seen: Vec<String>,
}

impl Client {
    /// Connect, and wait until the router knows the client (a PING's PONG
    /// comes back through it), so ids follow the order of the calls.
    pub fn connect(addr: SocketAddr) -> Client {
        let writer = std::net::TcpStream::connect(addr).expect("the server accepts");
        // A bound, not a synchronisation: every expected line comes in
        // microseconds, and a missing one fails the demo instead of hanging.
        writer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            seen: Vec::new(),
        };
        client.send("PING hello").unwrap();
        client.next().unwrap();
        client.seen.clear();
        client
    }

    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    pub fn next(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        self.seen.push(line.clone());
        Ok(line)
    }

    /// Read the next line and check it is `want`.
    pub fn expect(&mut self, want: &str) -> io::Result<()> {
        let line = self.next()?;
        if line == want {
            Ok(())
        } else {
            let msg = format!("expected {want:?}, got {line:?}");
            Err(io::Error::new(io::ErrorKind::InvalidData, msg))
        }
    }
}

// Step 7 and the pitfall of a hash on a worker.

/// How often the ticker wants to run.
pub const TICK: Duration = Duration::from_millis(5);

// ANCHOR: ticker
/// Run `work` while a coroutine wants to tick every `TICK` (5 ms); how long `work`
/// took and the ticker's worst lateness (kept by `may_patterns::alarm`).
pub fn with_ticker<T>(work: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        go!(move || {
            let (mut next, mut worst) = (Instant::now(), Duration::ZERO);
            while !done.load(Ordering::SeqCst) {
                next += TICK;
                alarm::shared().sleep(next.saturating_duration_since(Instant::now()));
                worst = worst.max(Instant::now() - next);
            }
            worst
        })
    };
    let start = Instant::now();
    let result = work();
    let took = start.elapsed();
    done.store(true, Ordering::SeqCst);
    (result, took, ticker.join().expect("the ticker"))
}
// ANCHOR_END: ticker
