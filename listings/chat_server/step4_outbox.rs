//! Step 4: an outbox per client. Step 3's router wrote every line to the
//! client's socket itself, so one client that stops reading (a suspended
//! laptop, `kill -STOP`, a dead link) parked the router in a write and
//! silenced everyone. Now each client gets an outbox, bounded in bytes
//! (IRC's "sendq"), and a writer coroutine that drains it; the router only
//! pushes, which never waits. A client whose outbox would pass the sendq is
//! cut ("SendQ exceeded") and its socket shut; the others see its QUIT.
//!
//! With no arguments it runs a demo that measures a frozen client against
//! step 3's direct writes and against the outbox; with `--serve ADDR` it
//! serves real clients (irssi, nc) until Ctrl-C.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpListener;
use may_patterns::bounded::{self, Sender};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Closer, Config, Conn, WriteHalf};
use may_patterns::shutdown::Shutdown;

// The step uses the parser, the numerics and the name rules of the final
// program's line module; the rest of it (tags, server-time) it leaves alone.
#[allow(dead_code)]
#[path = "chat_server/irc.rs"]
mod irc;

use irc::{numeric, Message, MAX_LINE};

// The outbox is the final program's: a queue bounded in bytes that the
// router pushes to and one writer coroutine drains (its transport traits
// are for later steps).
#[allow(dead_code)]
#[path = "chat_server/outbox.rs"]
mod outbox;

use outbox::{Batch, ClientId, Drain, Outbox};

/// The name the server gives itself in replies (`:chat.local 403 ...`).
const SERVER: &str = "chat.local";
/// The default sendq: how many bytes may wait for one client (64 KiB, as
/// the final program's `--sendq`).
const SENDQ: usize = 64 * 1024;
/// Events waiting for the router. A reader that finds the queue full parks,
/// and stops reading its socket: a fast client slows down, memory does not grow.
const ROUTER_QUEUE: usize = 1024;

// ANCHOR: event
/// What a client's reader tells the router.
enum Event {
    /// A new client, with where the router puts its lines.
    Connected {
        id: u64,
        peer: SocketAddr,
        sink: Sink,
    },
    /// One parsed line.
    Line { id: u64, message: Message },
    /// A line longer than `MAX_LINE`: refused, the client stays.
    TooLong { id: u64 },
    /// The client is gone: EOF, an error, or a cut (the reason is its QUIT's).
    Closed { id: u64, reason: String },
}

/// Where the router puts one client's lines.
enum Sink {
    /// The client's outbox: a push never waits; the client's own writer
    /// coroutine takes the lines to the socket.
    Outbox(Outbox),
    /// Step 3's way, kept so that the demo can compare the two: the router
    /// writes to the socket itself, and parks there when it is full.
    Direct(WriteHalf),
}
// ANCHOR_END: event

impl Event {
    /// The client the event is about.
    fn id(&self) -> u64 {
        match self {
            Event::Connected { id, .. }
            | Event::Line { id, .. }
            | Event::TooLong { id }
            | Event::Closed { id, .. } => *id,
        }
    }
}

// ANCHOR: state
/// Everything the router owns: who is connected, under which nick, and who
/// is in which room. Only the router coroutine touches it, so it needs no
/// lock, and it does no I/O: `handle` returns the lines to send, which
/// keeps it testable without sockets.
#[derive(Default)]
struct State {
    users: HashMap<u64, User>,
    /// Casefolded nick to its owner: `Bob[1]` and `bob{1}` are one nick.
    nicks: HashMap<String, u64>,
    /// Keyed by the casefolded name: `#Rust` and `#rust` are one room.
    rooms: HashMap<String, Room>,
}

/// A client, from its first byte: until it has sent both NICK and USER it
/// is not registered and may do nothing else (RFC 2812 3.1).
struct User {
    /// `*` until NICK, which is what replies are addressed to before it.
    nick: String,
    /// From USER; `None` until then.
    user: Option<String>,
    host: String,
    registered: bool,
}

impl User {
    /// `nick!user@host`: who a line comes from.
    fn prefix(&self) -> String {
        let user = self.user.as_deref().unwrap_or("*");
        format!("{}!{user}@{}", self.nick, self.host)
    }
}

struct Room {
    /// The name as first joined, which is what members are shown.
    name: String,
    members: BTreeSet<u64>,
}

/// A line for one client (without CRLF).
type Delivery = (u64, String);

/// NICKLEN, as the 005 line advertises: RFC 2812 says 9, servers today allow more.
const NICK_LEN: usize = 30;
// ANCHOR_END: state

// ANCHOR: handle
impl State {
    fn handle(&mut self, event: &Event) -> Vec<Delivery> {
        let (mut out, id) = (Vec::new(), event.id());
        match event {
            Event::Connected { peer, .. } => {
                let (nick, host) = ("*".to_string(), peer.ip().to_string());
                let user = User {
                    nick,
                    user: None,
                    host,
                    registered: false,
                };
                self.users.insert(id, user);
            }
            Event::Line { message, .. } => self.command(id, message, &mut out),
            Event::TooLong { .. } => self.reply(
                id,
                numeric::ERR_INPUTTOOLONG,
                &["Input line was too long"],
                &mut out,
            ),
            Event::Closed { reason, .. } => {
                let Some(user) = self.users.remove(&id) else {
                    return out;
                };
                self.nicks.remove(&irc::casefold(&user.nick));
                let quit = format!(":{} QUIT :{reason}", user.prefix());
                self.rooms.retain(|_, room| {
                    if room.members.remove(&id) {
                        out.extend(room.members.iter().map(|&m| (m, quit.clone())));
                    }
                    !room.members.is_empty() // an empty room is forgotten
                });
            }
        }
        out
    }
    // ANCHOR_END: handle

    // ANCHOR: command
    fn command(&mut self, id: u64, message: &Message, out: &mut Vec<Delivery>) {
        let params: Vec<&str> = message.params.iter().map(String::as_str).collect();
        let command = message.command_upper();
        let registered = self.users[&id].registered;
        match (command.as_str(), params.as_slice()) {
            ("NICK", []) => self.reply(
                id,
                numeric::ERR_NONICKNAMEGIVEN,
                &["No nickname given"],
                out,
            ),
            ("NICK", [nick, ..]) => self.nick(id, nick, out),
            ("USER", [user, _, _, _realname, ..]) => self.user(id, user, out),
            ("PING", [token, ..]) => out.push((id, format!(":{SERVER} PONG {SERVER} :{token}"))),
            // Anything else needs a registered client.
            (_, _) if !registered && command != "USER" => self.reply(
                id,
                numeric::ERR_NOTREGISTERED,
                &["You have not registered"],
                out,
            ),
            ("JOIN", [room, ..]) => self.join(id, room, out),
            ("PART", [room, ..]) => self.part(id, room, out),
            ("PRIVMSG", [target, text, ..]) => self.privmsg(id, target, text, out),
            ("PRIVMSG", [_]) => {
                self.reply(id, numeric::ERR_NOTEXTTOSEND, &["No text to send"], out)
            }
            ("USER" | "JOIN" | "PART" | "PRIVMSG" | "PING", _) => self.reply(
                id,
                numeric::ERR_NEEDMOREPARAMS,
                &[&command, "Not enough parameters"],
                out,
            ),
            (_, _) => self.reply(
                id,
                numeric::ERR_UNKNOWNCOMMAND,
                &[&message.command, "Unknown command"],
                out,
            ),
        }
    }
    // ANCHOR_END: command

    // ANCHOR: nick
    /// NICK: check the rules, then take the name, before registration or
    /// as a change that everyone sharing a room with the client sees.
    fn nick(&mut self, id: u64, nick: &str, out: &mut Vec<Delivery>) {
        if !irc::valid_nick(nick, NICK_LEN) {
            let why = "Erroneous nickname";
            return self.reply(id, numeric::ERR_ERRONEUSNICKNAME, &[nick, why], out);
        }
        let folded = irc::casefold(nick);
        match self.nicks.get(&folded) {
            Some(&owner) if owner != id => {
                let why = "Nickname is already in use";
                return self.reply(id, numeric::ERR_NICKNAMEINUSE, &[nick, why], out);
            }
            _ => {}
        }
        let user = self.users.get_mut(&id).unwrap();
        let old_prefix = user.prefix();
        let old = std::mem::replace(&mut user.nick, nick.to_string());
        self.nicks.remove(&irc::casefold(&old));
        self.nicks.insert(folded, id);
        if user.registered {
            // The client itself, and each room-mate once however many
            // rooms they share.
            let line = format!(":{old_prefix} NICK :{nick}");
            let mut told = BTreeSet::from([id]);
            for room in self.rooms.values().filter(|r| r.members.contains(&id)) {
                told.extend(&room.members);
            }
            out.extend(told.into_iter().map(|m| (m, line.clone())));
        } else {
            self.try_register(id, out);
        }
    }

    /// USER: the user name is taken once, before registration.
    fn user(&mut self, id: u64, name: &str, out: &mut Vec<Delivery>) {
        let user = self.users.get_mut(&id).unwrap();
        if user.registered {
            let why = "You may not reregister";
            return self.reply(id, numeric::ERR_ALREADYREGISTERED, &[why], out);
        }
        user.user = Some(name.to_string());
        self.try_register(id, out);
    }

    /// Once both NICK and USER have come, in either order: the welcome.
    fn try_register(&mut self, id: u64, out: &mut Vec<Delivery>) {
        let user = self.users.get_mut(&id).unwrap();
        if user.nick == "*" || user.user.is_none() {
            return;
        }
        user.registered = true;
        let welcome = format!("Welcome to the chat, {}", user.prefix());
        self.reply(id, numeric::RPL_WELCOME, &[&welcome], out);
        let isupport = ["CASEMAPPING=rfc1459", "CHANTYPES=#", "NICKLEN=30"];
        let mut params = isupport.to_vec();
        params.push("are supported by this server");
        self.reply(id, numeric::RPL_ISUPPORT, &params, out);
        // Clients such as irssi count the end of the MOTD as "connected".
        self.reply(
            id,
            numeric::RPL_MOTDSTART,
            &["- chat.local Message of the day -"],
            out,
        );
        self.reply(
            id,
            numeric::RPL_MOTD,
            &["- Be kind. Lines are at most 512 bytes."],
            out,
        );
        self.reply(id, numeric::RPL_ENDOFMOTD, &["End of /MOTD command"], out);
    }
    // ANCHOR_END: nick

    fn join(&mut self, id: u64, name: &str, out: &mut Vec<Delivery>) {
        if !irc::valid_channel(name, 50) {
            return self.reply(
                id,
                numeric::ERR_NOSUCHCHANNEL,
                &[name, "No such channel"],
                out,
            );
        }
        let room = self
            .rooms
            .entry(irc::casefold(name))
            .or_insert_with(|| Room {
                name: name.to_string(),
                members: BTreeSet::new(),
            });
        if !room.members.insert(id) {
            return; // already there: nothing happens, as on every ircd
        }
        let line = format!(":{} JOIN {}", self.users[&id].prefix(), room.name);
        out.extend(room.members.iter().map(|&m| (m, line.clone())));
    }

    fn part(&mut self, id: u64, name: &str, out: &mut Vec<Delivery>) {
        let key = irc::casefold(name);
        match self.rooms.get_mut(&key) {
            Some(room) if room.members.contains(&id) => {
                let line = format!(":{} PART {}", self.users[&id].prefix(), room.name);
                out.extend(room.members.iter().map(|&m| (m, line.clone())));
                room.members.remove(&id);
                if room.members.is_empty() {
                    self.rooms.remove(&key);
                }
            }
            Some(_) => self.reply(
                id,
                numeric::ERR_NOTONCHANNEL,
                &[name, "You're not on that channel"],
                out,
            ),
            None => self.reply(
                id,
                numeric::ERR_NOSUCHCHANNEL,
                &[name, "No such channel"],
                out,
            ),
        }
    }

    // ANCHOR: privmsg
    /// PRIVMSG to a room (its other members) or to a nick (that client).
    fn privmsg(&mut self, id: u64, target: &str, text: &str, out: &mut Vec<Delivery>) {
        let from = self.users[&id].prefix();
        let folded = irc::casefold(target);
        if !target.starts_with('#') {
            let Some(&to) = self.nicks.get(&folded) else {
                let why = "No such nick/channel";
                return self.reply(id, numeric::ERR_NOSUCHNICK, &[target, why], out);
            };
            let nick = &self.users[&to].nick;
            let line = Message::new("PRIVMSG", &[nick, text]).with_prefix(&from);
            return out.push((to, line.to_string()));
        }
        match self.rooms.get(&folded) {
            Some(room) if room.members.contains(&id) => {
                let line = Message::new("PRIVMSG", &[&room.name, text]).with_prefix(&from);
                let line = line.to_string();
                let others = room.members.iter().filter(|&&m| m != id);
                out.extend(others.map(|&m| (m, line.clone())));
            }
            Some(_) => self.reply(
                id,
                numeric::ERR_CANNOTSENDTOCHAN,
                &[target, "Cannot send to channel"],
                out,
            ),
            None => self.reply(
                id,
                numeric::ERR_NOSUCHCHANNEL,
                &[target, "No such channel"],
                out,
            ),
        }
    }
    // ANCHOR_END: privmsg

    /// A numeric reply, addressed to the client's nick (`*` before NICK):
    /// `:chat.local 403 alice #x :No such channel`.
    fn reply(&self, id: u64, code: &str, params: &[&str], out: &mut Vec<Delivery>) {
        let mut all = vec![self.users[&id].nick.as_str()];
        all.extend_from_slice(params);
        out.push((id, Message::new(code, &all).with_prefix(SERVER).to_string()));
    }
}

// ANCHOR: router
/// The router coroutine, as in step 3 but for how a line leaves: it is
/// pushed to the client's outbox, which never waits. A push that would take
/// the outbox past its sendq cuts the client instead (its socket is shut);
/// its reader then sees the end of its stream and reports `Closed`.
fn router(events: bounded::Receiver<Event>) {
    let mut state = State::default();
    let mut sinks: HashMap<u64, Sink> = HashMap::new();
    for event in &events {
        let out = state.handle(&event);
        match event {
            Event::Connected { id, sink, .. } => drop(sinks.insert(id, sink)),
            Event::Closed { id, .. } => drop(sinks.remove(&id)),
            Event::Line { .. } | Event::TooLong { .. } => {}
        }
        for (to, line) in out {
            match sinks.get_mut(&to) {
                // An error means the client is cut already: nothing to do.
                Some(Sink::Outbox(outbox)) => drop(outbox.push(line.into())),
                Some(Sink::Direct(writer)) => {
                    drop(writer.write_all(format!("{line}\r\n").as_bytes()))
                }
                None => {}
            }
        }
    }
}
// ANCHOR_END: router

// ANCHOR: writer
/// One client's writer coroutine: take everything queued, write it in one
/// write, tell the outbox, park again. It is the only coroutine that waits
/// for this client's socket.
fn write_lines(drain: Drain, mut socket: WriteHalf, closer: Closer) {
    loop {
        let (lines, last) = match drain.next() {
            Batch::Lines(lines) => (lines, false),
            Batch::Last(lines) => (lines, true),
        };
        let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
        for line in &lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        match socket.write_all(&bytes) {
            Ok(()) if !last => drain.written(&lines),
            Ok(()) => break,
            Err(e) => {
                drain.failed(&format!("Write error: {e}"));
                break;
            }
        }
    }
    closer.close();
}
// ANCHOR_END: writer

/// How the server delivers lines: step 3's way or step 4's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Design {
    /// The router writes to each socket (step 3).
    Direct,
    /// An outbox of at most `sendq` bytes per client, and a writer each.
    Outbox { sendq: usize },
}

// ANCHOR: reader
/// One client's reader, on its own coroutine: start the client's writer,
/// then parse each line and pass it on. When the stream ends it reports why
/// (an outbox cut gives its reason) and waits for the writer.
fn reader(conn: Conn, id: u64, design: Design, router: &Sender<Event>) -> io::Result<()> {
    let (peer, closer) = (conn.peer(), conn.closer());
    let (reader, writer) = conn.split()?;
    let (sink, queued) = match design {
        Design::Direct => (Sink::Direct(writer), None),
        Design::Outbox { sendq } => {
            let shut = closer.clone();
            let (outbox, drain) = Outbox::new(ClientId(id), sendq, move || shut.close());
            let handle = go!(move || write_lines(drain, writer, closer));
            (Sink::Outbox(outbox.clone()), Some((outbox, handle)))
        }
    };
    let mut lines = BufReader::new(reader);
    router
        .send(Event::Connected { id, peer, sink })
        .map_err(|_| io::ErrorKind::BrokenPipe)?;
    loop {
        let event = match read_line(&mut lines)? {
            Line::Text(text) => match Message::parse(&text) {
                Ok(message) => Event::Line { id, message },
                Err(_) => continue, // an empty line: IRC says to ignore it
            },
            Line::TooLong => Event::TooLong { id },
            Line::End => break,
        };
        if router.send(event).is_err() {
            break; // the router has stopped
        }
    }
    let reason = queued
        .as_ref()
        .and_then(|(outbox, _)| outbox.close_reason());
    let reason = reason.unwrap_or_else(|| "Connection closed".to_string());
    let _ = router.send(Event::Closed {
        id,
        reason: reason.clone(),
    });
    if let Some((outbox, writer)) = queued {
        outbox.close_with(None, &reason); // what is queued still goes out
        let _ = writer.join();
    }
    Ok(())
}
// ANCHOR_END: reader
/// What one read of a line gave.
enum Line {
    /// A line, without its CR/LF; bytes that are not UTF-8 become U+FFFD.
    Text(String),
    /// More than `MAX_LINE` bytes without a line feed: the rest of that
    /// line is skipped.
    TooLong,
    /// The client closed the connection (or it broke).
    End,
}

/// Read one line of at most `MAX_LINE` bytes, CRLF (or a bare LF) included.
fn read_line(reader: &mut impl BufRead) -> io::Result<Line> {
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

// ANCHOR: serve
/// Accept clients until `shutdown` (with `may_patterns::server`, as step 1
/// does): one reader coroutine each, and one router for all of them.
fn serve(listener: TcpListener, shutdown: &Shutdown, design: Design) -> io::Result<server::Report> {
    let (to_router, events) = bounded::channel(ROUTER_QUEUE);
    go!(move || router(events));
    let next_id = AtomicU64::new(1);
    server::run(listener, shutdown, Config::default(), move |conn| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let _ = reader(conn, id, design, &to_router);
    })
}
// ANCHOR_END: serve

/// The server, running on its own thread.
struct Running {
    addr: SocketAddr,
    thread: std::thread::JoinHandle<io::Result<server::Report>>,
}

/// Start `serve` on a thread of its own (`server::run` returns only when
/// the server has stopped).
fn start(addr: &str, shutdown: &Shutdown, design: Design) -> io::Result<Running> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    let thread = std::thread::spawn(move || serve(listener, &shutdown, design));
    Ok(Running { addr, thread })
}

// ANCHOR: demo
/// Lines the flooder sends, 8.9 MB relayed to each member: about twice
/// what the frozen client's socket buffers held in step 3's run (the
/// reading member got some 8,000 lines before the stall, on Linux loopback).
const FLOOD_LINES: usize = 20_000;
/// Bytes of text in each flood line, its number and time stamp included:
/// a fixed width, so every line costs the same in an outbox.
const TEXT: usize = 400;
/// The flood's pace: the flooder keeps at most `WINDOW` lines (22 KB) ahead
/// of what `member` has read, so `member` reads as fast as lines come and
/// its own outbox stays far under the sendq, however slow the machine.
const WINDOW: usize = 50;
/// How long the reading member waits for a line before it calls the
/// server stalled: a bound, so the demo ends even when step 3's router
/// never writes again.
const STALL: Duration = Duration::from_secs(1);

/// What the reading member saw while the room was flooded.
struct Seen {
    /// Flood lines it got (checked to come in order), and how long each
    /// took from the flooder's write to its read, sorted.
    delivered: usize,
    latencies: Vec<Duration>,
    /// It waited `STALL` for a line that did not come.
    stalled: bool,
    /// When it saw the frozen client's QUIT (since the flood began), and why.
    quit: Option<(Duration, String)>,
}

/// The demo: `frozen` joins #room and then never reads (what `kill -STOP`
/// does to a real client); `member` joins and reads; `flooder` sends
/// `FLOOD_LINES` lines to the room, each stamped with when it was written.
fn frozen_client(addr: SocketAddr) -> io::Result<Seen> {
    let mut clients = Vec::new();
    for nick in ["frozen", "member", "flooder"] {
        let mut client = Client::connect(addr);
        client.register(nick)?;
        client.send("JOIN #room")?;
        client.expect(&format!(":{nick}!{nick}@127.0.0.1 JOIN #room"))?;
        clients.push(client);
    }
    let (flooder, mut member, frozen) = (clients.pop(), clients.pop(), clients.pop());
    let (flooder, member) = (flooder.unwrap(), member.as_mut().unwrap());
    member.expect(":flooder!flooder@127.0.0.1 JOIN #room")?;
    // From here on `frozen` reads nothing: its socket buffers fill up.
    let start = Instant::now();
    let (ack, read) = mpsc::channel();
    let sending = std::thread::spawn(move || flood(flooder, start, read));
    let seen = member.time_the_flood(start, &ack);
    // Gone, both: this frees step 3's router from its parked write.
    drop((member, frozen));
    drop(sending.join());
    seen
}

/// Write the flood, one line per write, each with its number and the
/// microseconds since `start` when it was written, at most `WINDOW` lines
/// ahead of the acknowledgements `member` sends for each line it reads.
fn flood(mut flooder: Client, start: Instant, read: mpsc::Receiver<()>) -> Client {
    // Each line leaves at once (no Nagle delay): the latency is the server's.
    let _ = flooder.writer.set_nodelay(true);
    let padding = "x".repeat(TEXT - 20);
    for n in 0..FLOOD_LINES {
        if n >= WINDOW && read.recv_timeout(STALL).is_err() {
            break; // `member` gets nothing: the server is stalled
        }
        let sent = start.elapsed().as_micros();
        let line = format!("PRIVMSG #room :{n:06} {sent:012} {padding}");
        if flooder.send(&line).is_err() {
            break;
        }
    }
    // Kept open until `member` is done: closing a socket with unread lines
    // in it (the frozen client's QUIT) resets it, and the server would
    // lose the flood's last lines.
    flooder
}
// ANCHOR_END: demo

/// The demo's rows: each design, and what the reading member saw.
fn compare() -> io::Result<Vec<(Design, Seen)>> {
    let mut rows = Vec::new();
    for design in [Design::Direct, Design::Outbox { sendq: SENDQ }] {
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown, design)?;
        let seen = frozen_client(server.addr);
        shutdown.trigger();
        let _ = server.thread.join();
        rows.push((design, seen?));
    }
    Ok(rows)
}

/// The `q` quantile of sorted `durations`.
fn quantile(durations: &[Duration], q: f64) -> Duration {
    let last = durations.len().saturating_sub(1);
    durations
        .get((last as f64 * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn print(rows: &[(Design, Seen)]) {
    println!(
        "#room: `frozen` stops reading, `flooder` sends {FLOOD_LINES} lines of {TEXT} bytes \
         (at most {WINDOW} ahead of `member`, who reads them)"
    );
    for (design, seen) in rows {
        match design {
            Design::Direct => println!("  step 3, the router writes to every socket:"),
            Design::Outbox { sendq } => {
                println!("  step 4, an outbox of {sendq} bytes and a writer per client:")
            }
        }
        if seen.stalled {
            println!("    member got part of the lines, then none for {STALL:.1?}");
        } else {
            println!("    member got all {} lines, in order", seen.delivered);
        }
        let l = &seen.latencies;
        println!(
            "    latency of the lines it got: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            quantile(l, 0.5),
            quantile(l, 0.99),
            quantile(l, 1.0)
        );
        match &seen.quit {
            Some((at, reason)) => {
                println!("    frozen: cut {at:.1?} into the flood, others saw QUIT :{reason}")
            }
            None => println!("    frozen: never cut"),
        }
    }
}

/// A scripted client on a plain OS thread (std sockets block their thread,
/// which is fine off may's workers), keeping every line it received.
struct Client {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    seen: Vec<String>,
}

impl Client {
    /// Connect, and wait until the router knows the client (a PING's PONG
    /// comes back through it), so ids follow the order of the calls.
    fn connect(addr: SocketAddr) -> Client {
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

    fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    /// NICK and USER, then the three lines of the welcome.
    fn register(&mut self, nick: &str) -> io::Result<()> {
        self.send(&format!("NICK {nick}"))?;
        self.send(&format!("USER {nick} 0 * :{nick} in the demo"))?;
        let welcome =
            format!(":chat.local 001 {nick} :Welcome to the chat, {nick}!{nick}@127.0.0.1");
        self.expect(&welcome)?;
        let isupport = "CASEMAPPING=rfc1459 CHANTYPES=# NICKLEN=30 :are supported by this server";
        self.expect(&format!(":chat.local 005 {nick} {isupport}"))?;
        self.expect(&format!(
            ":chat.local 375 {nick} :- chat.local Message of the day -"
        ))?;
        self.expect(&format!(
            ":chat.local 372 {nick} :- Be kind. Lines are at most 512 bytes."
        ))?;
        self.expect(&format!(":chat.local 376 {nick} :End of /MOTD command"))
    }

    /// Read flood lines, acknowledging each, until all have come and the
    /// frozen client's QUIT too, or until none comes for `STALL`.
    fn time_the_flood(&mut self, start: Instant, ack: &mpsc::Sender<()>) -> io::Result<Seen> {
        self.reader.get_ref().set_read_timeout(Some(STALL))?;
        let mut seen = Seen {
            delivered: 0,
            latencies: Vec::with_capacity(FLOOD_LINES),
            stalled: false,
            quit: None,
        };
        let flood = ":flooder!flooder@127.0.0.1 PRIVMSG #room :";
        let quit = ":frozen!frozen@127.0.0.1 QUIT :";
        while seen.delivered < FLOOD_LINES || seen.quit.is_none() {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
            let at = start.elapsed();
            let line = line.trim_end();
            if let Some(text) = line.strip_prefix(flood) {
                let n: usize = text[..6].parse().map_err(|_| bad(line))?;
                let sent: u64 = text[7..19].parse().map_err(|_| bad(line))?;
                if n != seen.delivered {
                    return Err(bad(line)); // out of order, or a line lost
                }
                seen.delivered += 1;
                let _ = ack.send(());
                seen.latencies
                    .push(at.saturating_sub(Duration::from_micros(sent)));
            } else if let Some(reason) = line.strip_prefix(quit) {
                seen.quit = Some((at, reason.to_string()));
            }
        }
        seen.stalled = seen.delivered < FLOOD_LINES;
        seen.latencies.sort();
        Ok(seen)
    }

    fn next(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        self.seen.push(line.clone());
        Ok(line)
    }

    /// Read the next line and check it is `want`.
    fn expect(&mut self, want: &str) -> io::Result<()> {
        let line = self.next()?;
        if line == want {
            Ok(())
        } else {
            let msg = format!("expected {want:?}, got {line:?}");
            Err(io::Error::new(io::ErrorKind::InvalidData, msg))
        }
    }
}

/// An error naming the line that was not what the demo expected.
fn bad(line: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected line {line:?}"),
    )
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let shutdown = Shutdown::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => match compare() {
            Ok(rows) => print(&rows),
            Err(e) => {
                eprintln!("step4_outbox: the demo failed: {e}");
                std::process::exit(1);
            }
        },
        [flag, addr] if flag == "--serve" => {
            let on_ctrl_c = shutdown.clone();
            ctrlc::set_handler(move || on_ctrl_c.trigger()).expect("a Ctrl-C handler");
            match start(addr, &shutdown, Design::Outbox { sendq: SENDQ }) {
                Ok(server) => {
                    println!(
                        "outboxes on {}: try `irssi -c 127.0.0.1 -p {}`",
                        server.addr,
                        server.addr.port()
                    );
                    let _ = server.thread.join();
                }
                Err(e) => {
                    eprintln!("step4_outbox: cannot listen on {addr}: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: step4_outbox [--serve ADDR]");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Feed `id`'s lines to the state; the lines it answers with.
    fn say(s: &mut State, id: u64, text: &str) -> Vec<Delivery> {
        let message = Message::parse(text).unwrap();
        s.handle(&Event::Line { id, message })
    }

    /// A state with clients 1..=n connected, none registered.
    fn state(n: u64) -> State {
        let mut state = State::default();
        for id in 1..=n {
            let host = "127.0.0.1".to_string();
            let user = User {
                nick: "*".into(),
                user: None,
                host,
                registered: false,
            };
            state.users.insert(id, user);
        }
        state
    }

    fn register(s: &mut State, id: u64, nick: &str) {
        say(s, id, &format!("USER {nick} 0 * :x"));
        let welcome = say(s, id, &format!("NICK {nick}"));
        assert!(welcome[0].1.contains(" 001 "), "{welcome:?}");
    }

    #[test]
    fn nothing_but_registration_before_the_welcome() {
        let mut s = state(1);
        for line in ["JOIN #a", "PRIVMSG #a :hi", "PART #a", "WHO"] {
            let out = say(&mut s, 1, line);
            assert_eq!(
                out[0].1, ":chat.local 451 * :You have not registered",
                "{line}"
            );
        }
        assert!(say(&mut s, 1, "PING x")[0].1.contains("PONG"));
        // USER first, then NICK: the welcome comes with the second.
        assert!(say(&mut s, 1, "USER u 0 * :real").is_empty());
        let welcome = say(&mut s, 1, "NICK n");
        let codes: Vec<&str> = welcome.iter().map(|(_, l)| &l[12..15]).collect();
        assert_eq!(codes, ["001", "005", "375", "372", "376"]);
        assert!(say(&mut s, 1, "USER u 0 * :again")[0].1.contains(" 462 "));
    }

    #[test]
    fn nicks_collide_casefolded_and_are_freed_on_close() {
        let mut s = state(3);
        register(&mut s, 1, "Bob[1]");
        let taken = say(&mut s, 2, "NICK bob{1}");
        assert!(taken[0].1.contains(" 433 * bob{1} "), "{taken:?}");
        s.handle(&Event::Closed {
            id: 1,
            reason: "Connection closed".into(),
        });
        register(&mut s, 2, "bob{1}");
        // A client may change the case of its own nick.
        let changed = say(&mut s, 2, "NICK BOB{1}");
        assert_eq!(changed[0].1, ":bob{1}!bob{1}@127.0.0.1 NICK :BOB{1}");
        for bad in ["9x", "a b", "-x", &"x".repeat(31)] {
            let out = say(&mut s, 3, &format!("NICK :{bad}"));
            assert!(out[0].1.contains(" 432 "), "{bad}: {out:?}");
        }
    }

    #[test]
    fn a_nick_change_reaches_each_room_mate_once() {
        let mut s = state(3);
        for (id, nick) in [(1, "a"), (2, "b"), (3, "c")] {
            register(&mut s, id, nick);
        }
        for room in ["#one", "#two"] {
            say(&mut s, 1, &format!("JOIN {room}"));
            say(&mut s, 2, &format!("JOIN {room}"));
        }
        let out = say(&mut s, 1, "NICK aa");
        let to: Vec<u64> = out.iter().map(|(to, _)| *to).collect();
        assert_eq!(to, [1, 2], "c shares no room with a: {out:?}");
    }

    #[test]
    fn a_private_message_goes_to_its_nick_only() {
        let mut s = state(3);
        for (id, nick) in [(1, "a"), (2, "b"), (3, "c")] {
            register(&mut s, id, nick);
        }
        let out = say(&mut s, 1, "PRIVMSG B :hi");
        assert_eq!(out, [(2, ":a!a@127.0.0.1 PRIVMSG b hi".to_string())]);
        let out = say(&mut s, 1, "PRIVMSG nobody :hi");
        assert!(out[0].1.contains(" 401 a nobody "), "{out:?}");
    }

    #[test]
    fn a_frozen_client_is_cut_and_the_others_get_every_line() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown, Design::Outbox { sendq: SENDQ }).unwrap();
        let seen = frozen_client(server.addr).unwrap();
        shutdown.trigger();
        server.thread.join().unwrap().unwrap();
        assert!(!seen.stalled, "the member waited {STALL:?} for a line");
        assert_eq!(seen.delivered, FLOOD_LINES, "every line, in order");
        let (_, reason) = seen.quit.expect("the frozen client's QUIT");
        assert_eq!(reason, "SendQ exceeded");
    }

    #[test]
    fn with_step_3s_direct_writes_a_frozen_client_stalls_the_room() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown, Design::Direct).unwrap();
        let seen = frozen_client(server.addr).unwrap();
        shutdown.trigger();
        server.thread.join().unwrap().unwrap();
        assert!(seen.stalled, "got {} lines", seen.delivered);
        assert!(seen.quit.is_none(), "nobody cuts the frozen client");
    }

    /// An outbox for client `id` whose socket "shut" is a flag.
    fn outbox(id: u64, sendq: usize) -> (Outbox, Drain, Arc<AtomicBool>) {
        let shut = Arc::new(AtomicBool::new(false));
        let flag = shut.clone();
        let (outbox, drain) = Outbox::new(ClientId(id), sendq, move || {
            flag.store(true, Ordering::SeqCst)
        });
        (outbox, drain, shut)
    }

    #[test]
    fn the_router_cuts_a_frozen_outbox_at_its_sendq_and_not_a_slow_reader() {
        configure_for_tests();
        let text = "x".repeat(100);
        // Ten flood lines, CRLFs included, as the router relays them.
        let sendq = 10 * (":f!f@127.0.0.1 PRIVMSG #r :".len() + text.len() + 2);
        let (to_router, events) = bounded::channel(ROUTER_QUEUE);
        let routing = go!(move || router(events));
        // 1 stops reading, 2 reads slowly, 3 floods (and reads nothing:
        // nobody echoes a room line to its sender).
        let mut boxes = Vec::new();
        for (id, nick) in [(1, "z"), (2, "s"), (3, "f")] {
            let (outbox, drain, shut) = outbox(id, sendq);
            let peer = "127.0.0.1:1".parse().unwrap();
            let sink = Sink::Outbox(outbox.clone());
            to_router.send(Event::Connected { id, peer, sink }).ok();
            for line in [
                format!("NICK {nick}"),
                format!("USER {nick} 0 * :x"),
                "JOIN #r".into(),
            ] {
                let message = Message::parse(&line).unwrap();
                to_router.send(Event::Line { id, message }).ok();
            }
            boxes.push((outbox, Some(drain), shut));
        }
        // The slow reader takes a batch every 2 ms, the flood comes at one
        // line a millisecond: its outbox stays far under the sendq.
        let slow = boxes[1].1.take().unwrap();
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 200 {
                let Batch::Lines(lines) = slow.next() else {
                    break;
                };
                slow.written(&lines);
                got.extend(
                    lines
                        .iter()
                        .filter(|l| l.contains("PRIVMSG"))
                        .map(|l| l.to_string()),
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            got
        });
        let frozen = boxes[0].0.clone();
        let mut most = 0;
        for n in 0..200 {
            let message = Message::parse(&format!("PRIVMSG #r :{n:03}{}", &text[3..])).unwrap();
            to_router.send(Event::Line { id: 3, message }).ok();
            most = most.max(frozen.queued_bytes());
            std::thread::sleep(Duration::from_millis(1));
        }
        let got = reading.join().unwrap();
        drop(to_router);
        routing.join().unwrap();
        assert!(
            most <= sendq,
            "the frozen outbox held {most} > {sendq} bytes"
        );
        // Nobody drains it after the cut: what it holds is what it held then,
        // within one flood line of the limit (its welcome lines are shorter).
        let line = sendq / 10;
        let at_cut = frozen.queued_bytes();
        assert!(
            sendq - line < at_cut && at_cut <= sendq,
            "{at_cut} at the cut"
        );
        assert_eq!(frozen.close_reason().as_deref(), Some("SendQ exceeded"));
        assert!(boxes[0].2.load(Ordering::SeqCst), "its socket was shut");
        let want: Vec<String> = (0..200)
            .map(|n| format!(":f!f@127.0.0.1 PRIVMSG #r {n:03}{}", &text[3..]))
            .collect();
        assert_eq!(got, want, "the slow reader got every line, in order");
        assert_eq!(boxes[1].0.close_reason(), None, "and was not cut");
    }
}
