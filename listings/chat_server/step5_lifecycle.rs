//! Step 5: the connection's lifecycle. Step 4's server noticed that a
//! client had gone only when its socket said so. This step adds the ways a
//! connection ends that a socket does not report: a client that goes
//! silent (a half-open socket, its machine gone without a FIN) is sent
//! `PING` after the ping interval and cut with `Ping timeout` after as long
//! again; a client that never registers is cut when the registration
//! timeout passes; and `QUIT :reason` ends a connection with an `ERROR`
//! line, its rooms seeing the reason. One sweeper thread keeps the time for
//! every client, as in the final program's `connection.rs`.
//!
//! With no arguments it runs a demo of every way a connection ends; with
//! `--serve ADDR [--ping-interval 90s]` it serves real clients until Ctrl-C.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpListener;
use may_patterns::bounded::{self, Sender};
use may_patterns::clock::{Clock, MonotonicClock};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Closer, Config, Conn, WriteHalf};
use may_patterns::shutdown::Shutdown;

// The step uses the parser, the numerics and the name rules of the final
// program's line module; the rest of it (tags, server-time) it leaves alone.
#[allow(dead_code)]
#[path = "chat_server/irc.rs"]
mod irc;

use irc::{numeric, Message, MAX_LINE};

// The outbox is the final program's, as in step 4; this step also uses
// its `close_with` (a last line, then close) and its registered flag.
#[allow(dead_code)]
#[path = "chat_server/outbox.rs"]
mod outbox;

use outbox::{Batch, ClientId, Drain, Outbox};

/// The name the server gives itself in replies (`:chat.local 403 ...`).
const SERVER: &str = "chat.local";
/// The sendq: how many bytes may wait for one client (step 4).
const SENDQ: usize = 64 * 1024;
/// Events waiting for the router (step 2).
const ROUTER_QUEUE: usize = 1024;

// ANCHOR: event
/// What a client's reader tells the router.
enum Event {
    /// A new client, with its outbox.
    Connected {
        id: u64,
        peer: SocketAddr,
        outbox: Outbox,
    },
    /// One parsed line.
    Line { id: u64, message: Message },
    /// A line longer than `MAX_LINE`: refused, the client stays.
    TooLong { id: u64 },
    /// The client is gone, and the reason its rooms see in its `QUIT`:
    /// the cut's (a ping or registration timeout, the sendq), or else the
    /// stream's end (`Connection closed`, `Read error: ...`).
    Closed { id: u64, reason: String },
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
    /// Clients that sent QUIT, with their last line and their reason: the
    /// router closes their outboxes after delivering this event's lines.
    closing: Vec<(u64, String, String)>,
    /// Clients just sent 001: the router tells their outboxes, which is
    /// what ends the registration timeout.
    welcomed: Vec<u64>,
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
            // After a QUIT the client is gone already: nothing more to say.
            Event::Closed { reason, .. } => self.quit(id, reason, &mut out),
        }
        out
    }
    // ANCHOR_END: handle

    // ANCHOR: quit
    /// The client leaves, for `reason`: its nick is freed, and each of its
    /// rooms sees one `QUIT` with the reason. A client already gone (a
    /// `Closed` after its `QUIT`) changes nothing.
    fn quit(&mut self, id: u64, reason: &str, out: &mut Vec<Delivery>) {
        let Some(user) = self.users.remove(&id) else {
            return;
        };
        self.nicks.remove(&irc::casefold(&user.nick));
        let quit = Message::new("QUIT", &[reason]).with_prefix(&user.prefix());
        let quit = quit.to_string();
        self.rooms.retain(|_, room| {
            if room.members.remove(&id) {
                out.extend(room.members.iter().map(|&m| (m, quit.clone())));
            }
            !room.members.is_empty() // an empty room is forgotten
        });
    }
    // ANCHOR_END: quit

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
            // The answer to the sweeper's PING: that a line came is enough
            // (the reader has noted it), so it needs no reply.
            ("PONG", _) => {}
            // ANCHOR: quit_command
            // QUIT is allowed before registration too. The reason is the
            // client's, marked as such; the ERROR line is the last it gets.
            ("QUIT", params) => {
                let reason = format!("Quit: {}", params.first().unwrap_or(&""));
                let host = self.users[&id].host.clone();
                let error = format!("ERROR :Closing link: {host} ({reason})");
                self.quit(id, &reason, out);
                self.closing.push((id, error, reason));
            }
            // ANCHOR_END: quit_command
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
        self.welcomed.push(id);
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
/// The router coroutine, as in step 4, and two things more after each
/// event: a client just welcomed has its outbox marked registered (which
/// ends its registration timeout), and a client that sent `QUIT` has its
/// outbox closed with the `ERROR` line last. Its writer sends what is
/// queued, then that line, then closes the socket.
fn router(events: bounded::Receiver<Event>) {
    let mut state = State::default();
    let mut outboxes: HashMap<u64, Outbox> = HashMap::new();
    for event in &events {
        let out = state.handle(&event);
        match event {
            Event::Connected { id, outbox, .. } => drop(outboxes.insert(id, outbox)),
            Event::Closed { id, .. } => drop(outboxes.remove(&id)),
            Event::Line { .. } | Event::TooLong { .. } => {}
        }
        for (to, line) in out {
            if let Some(outbox) = outboxes.get(&to) {
                let _ = outbox.push(line.into()); // an error: cut already
            }
        }
        for id in state.welcomed.drain(..) {
            if let Some(outbox) = outboxes.get(&id) {
                outbox.set_registered();
            }
        }
        for (id, last, reason) in state.closing.drain(..) {
            if let Some(outbox) = outboxes.remove(&id) {
                outbox.close_with(Some(last.into()), &reason);
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

// ANCHOR: lifecycle
/// The two clocks of a connection.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    /// Silence before a `PING`, and as long again before the cut.
    ping_interval: Duration,
    /// From the first byte to the welcome (001), at most.
    registration: Duration,
}

/// Every connected client, as the sweeper sees it. The readers add and
/// remove entries and note each line; the sweeper thread reads the list.
struct Watchlist {
    clients: Mutex<HashMap<u64, Watched>>,
    clock: MonotonicClock,
}

/// One client's times, in milliseconds of the list's clock.
struct Watched {
    outbox: Outbox,
    /// When its last line came (its reader stores it, the sweeper loads it).
    heard: Arc<AtomicU64>,
    /// When it connected.
    since: u64,
    /// When the sweeper sent it a `PING` it has not answered yet.
    pinged: Option<u64>,
    /// When the sweeper cut it.
    cut: Option<u64>,
    /// Its address, for the `ERROR :Closing link: HOST (...)` line.
    host: String,
}

impl Watchlist {
    fn new() -> Arc<Watchlist> {
        Arc::new(Watchlist {
            clients: Mutex::new(HashMap::new()),
            clock: MonotonicClock::new(),
        })
    }

    /// Held for one insert, one remove, or one sweep, with nothing inside
    /// that parks (an outbox push never waits), so a std lock is fine.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Watched>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.clock.now().as_millis() as u64
    }

    /// Watch a new client; its entry goes when the `Watch` is dropped.
    fn add(self: &Arc<Self>, id: u64, host: String, outbox: Outbox) -> Watch {
        let now = self.now();
        let heard = Arc::new(AtomicU64::new(now));
        let watched = Watched {
            outbox,
            heard: heard.clone(),
            since: now,
            pinged: None,
            cut: None,
            host,
        };
        self.lock().insert(id, watched);
        Watch {
            list: self.clone(),
            id,
            heard,
        }
    }
}

/// A reader's hold on its entry: `heard` on every line, removed on drop.
struct Watch {
    list: Arc<Watchlist>,
    id: u64,
    heard: Arc<AtomicU64>,
}

impl Watch {
    /// A line came: any line counts as an answer to a `PING`.
    fn heard(&self) {
        self.heard.store(self.list.now(), Ordering::Relaxed);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.list.lock().remove(&self.id);
    }
}

/// What one sweep does to one client.
#[derive(Debug, PartialEq, Eq)]
enum Sweep {
    Nothing,
    Ping,
    PingTimeout,
    RegistrationTimeout,
    /// Cut `grace` ago and its writer has not closed the socket yet.
    ForceClose,
}

/// The rule at `now`, in milliseconds, as in the final program: after an
/// interval of silence a `PING`; after as long again the cut; an
/// unregistered client is cut when the registration timeout has passed,
/// whatever it sends; a cut client still there after `grace` is shut.
fn sweep_one(w: &mut Watched, now: u64, t: &Timeouts, grace: u64) -> Sweep {
    if let Some(cut) = w.cut {
        return match now.saturating_sub(cut) >= grace {
            true => Sweep::ForceClose,
            false => Sweep::Nothing,
        };
    }
    let heard = w.heard.load(Ordering::Relaxed);
    if w.pinged.is_some_and(|at| heard > at) {
        w.pinged = None; // it answered
    }
    let registration = t.registration.as_millis() as u64;
    if !w.outbox.is_registered() && now.saturating_sub(w.since) >= registration {
        return Sweep::RegistrationTimeout;
    }
    let (silent, interval) = (
        now.saturating_sub(heard),
        t.ping_interval.as_millis() as u64,
    );
    match w.pinged {
        Some(_) if silent >= 2 * interval => Sweep::PingTimeout,
        None if silent >= interval => Sweep::Ping,
        _ => Sweep::Nothing,
    }
}

/// The sweeper: one OS thread for every client (so `std::thread::sleep`
/// and a std lock are fine here), looking every quarter interval, at most
/// a second apart.
/// It ends when `stop` fires.
fn start_sweeper(list: Arc<Watchlist>, t: Timeouts, stop: Shutdown) -> std::thread::JoinHandle<()> {
    let tick = (t.ping_interval / 4).min(Duration::from_secs(1));
    let grace = 2 * tick.as_millis() as u64;
    std::thread::spawn(move || {
        while !stop.wait_timeout(tick) {
            let now = list.now();
            for w in list.lock().values_mut() {
                match sweep_one(w, now, &t, grace) {
                    Sweep::Nothing => {}
                    Sweep::Ping => {
                        w.pinged = Some(now);
                        let _ = w.outbox.push(format!("PING :{SERVER}").into());
                    }
                    Sweep::PingTimeout => close(w, now, &ping_timeout(&t)),
                    Sweep::RegistrationTimeout => close(w, now, "Registration timed out"),
                    Sweep::ForceClose => w.outbox.shut(),
                }
            }
        }
    })
}

/// Cut a client: what is queued, then the `ERROR` line, then the socket
/// is closed by its writer. The reason is what its rooms will see.
fn close(w: &mut Watched, now: u64, reason: &str) {
    w.cut = Some(now);
    let last = format!("ERROR :Closing link: {} ({reason})", w.host);
    w.outbox.close_with(Some(last.into()), reason);
}

/// `Ping timeout: 180 seconds` for a 90 s interval (the silence it took).
fn ping_timeout(t: &Timeouts) -> String {
    let secs = (2 * t.ping_interval).as_secs_f64();
    match secs.fract() == 0.0 {
        true => format!("Ping timeout: {secs} seconds"),
        false => format!("Ping timeout: {secs:.1} seconds"),
    }
}
// ANCHOR_END: lifecycle

// ANCHOR: reader
/// One client's reader, as in step 4, and it notes the time of each line
/// for the sweeper. When the stream ends it reports the cut's reason if the
/// client was cut, else the stream's own: an end-of-file or a read error.
fn reader(conn: Conn, id: u64, list: &Arc<Watchlist>, router: &Sender<Event>) -> io::Result<()> {
    let (peer, closer) = (conn.peer(), conn.closer());
    let (reader, writer) = conn.split()?;
    let shut = closer.clone();
    let (outbox, drain) = Outbox::new(ClientId(id), SENDQ, move || shut.close());
    let writing = go!(move || write_lines(drain, writer, closer));
    let watch = list.add(id, peer.ip().to_string(), outbox.clone());
    let mut lines = BufReader::new(reader);
    let connected = Event::Connected {
        id,
        peer,
        outbox: outbox.clone(),
    };
    router
        .send(connected)
        .map_err(|_| io::ErrorKind::BrokenPipe)?;
    let ended = loop {
        let line = match read_line(&mut lines)? {
            Line::End(why) => break why,
            line => line,
        };
        watch.heard(); // any line, even an empty or a refused one
        let event = match line {
            Line::Text(text) => match Message::parse(&text) {
                Ok(message) => Event::Line { id, message },
                Err(_) => continue, // an empty line: IRC says to ignore it
            },
            _ => Event::TooLong { id },
        };
        if router.send(event).is_err() {
            break "Server shutting down".to_string();
        }
    };
    drop(watch);
    let reason = outbox.close_reason().unwrap_or(ended);
    let _ = router.send(Event::Closed {
        id,
        reason: reason.clone(),
    });
    outbox.close_with(None, &reason); // what is queued still goes out
    let _ = writing.join();
    Ok(())
}
// ANCHOR_END: reader

// ANCHOR: read_line
/// What one read of a line gave.
enum Line {
    /// A line, without its CR/LF; bytes that are not UTF-8 become U+FFFD.
    Text(String),
    /// More than `MAX_LINE` bytes without a line feed: the rest of that
    /// line is skipped.
    TooLong,
    /// The stream ended, and why: an end-of-file (the peer closed, or the
    /// writer shut the socket after a cut) or a read error (a reset).
    End(String),
}

/// Read one line of at most `MAX_LINE` bytes, CRLF (or a bare LF) included.
fn read_line(reader: &mut impl BufRead) -> io::Result<Line> {
    let mut buf = Vec::new();
    match reader.take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
        Ok(0) => return Ok(Line::End("Connection closed".into())),
        Ok(_) => {}
        Err(e) if e.kind() != io::ErrorKind::Interrupted => {
            return Ok(Line::End(format!("Read error: {e}")))
        }
        Err(e) => return Err(e),
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() < MAX_LINE {
            return Ok(Line::End("Connection closed".into())); // EOF mid-line
        }
        // Skip to the end of the long line, a bounded piece at a time.
        loop {
            buf.clear();
            match reader.take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
                Ok(0) => return Ok(Line::End("Connection closed".into())),
                Err(e) => return Ok(Line::End(format!("Read error: {e}"))),
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
// ANCHOR_END: read_line

// ANCHOR: serve
/// Accept clients until `shutdown`: one reader coroutine each, one router,
/// and one sweeper thread for all of them.
fn serve(listener: TcpListener, shutdown: &Shutdown, t: Timeouts) -> io::Result<server::Report> {
    let (to_router, events) = bounded::channel(ROUTER_QUEUE);
    go!(move || router(events));
    let list = Watchlist::new();
    let sweeper = start_sweeper(list.clone(), t, shutdown.clone());
    let next_id = AtomicU64::new(1);
    let report = server::run(listener, shutdown, Config::default(), move |conn| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let _ = reader(conn, id, &list, &to_router);
    });
    let _ = sweeper.join();
    report
}
// ANCHOR_END: serve

/// The server, running on its own thread.
struct Running {
    addr: SocketAddr,
    thread: std::thread::JoinHandle<io::Result<server::Report>>,
}

/// Start `serve` on a thread of its own (`server::run` returns only when
/// the server has stopped).
fn start(addr: &str, shutdown: &Shutdown, t: Timeouts) -> io::Result<Running> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    let thread = std::thread::spawn(move || serve(listener, &shutdown, t));
    Ok(Running { addr, thread })
}

/// The demo's timeouts: short, so that it ends in about a second. (The
/// final program refuses a ping interval under 250 ms: a healthy client
/// on a slow link needs a round trip to answer.)
const DEMO: Timeouts = Timeouts {
    ping_interval: Duration::from_millis(400),
    registration: Duration::from_millis(400),
};
/// How often `bob` sends a line of his own.
const BOB_EVERY: Duration = Duration::from_millis(150);

// ANCHOR: demo
/// What the demo's clients saw.
struct Story {
    /// Every line `alice` got but the PINGs she answered, in order.
    alice_saw: Vec<String>,
    alice_pongs: usize,
    /// From `carol`'s last line to `alice` reading her QUIT.
    carol_cut_after: Duration,
    /// What `bob` got: PINGs from the server, and any ERROR.
    bob_pinged: usize,
    bob_errors: Vec<String>,
    /// What each client that was closed got last (PING and ERROR lines
    /// for `carol`), ending with `(end of stream)`.
    carol: Vec<String>,
    dave: Vec<String>,
    erin: Vec<String>,
}

/// Each way a connection ends, one client each, with `alice` in #room to
/// see the QUITs. Each step waits for `alice` to see its effect, so the
/// order she sees is the order of the script.
fn lifecycle(addr: SocketAddr) -> io::Result<Story> {
    let mut alice = Client::joined(addr, "alice")?;
    let bob = Client::joined(addr, "bob")?;
    alice.room_line()?;
    let stop_bob = Arc::new(AtomicBool::new(false));
    let stop = stop_bob.clone();
    let bob = std::thread::spawn(move || bob.keep_talking(&stop));
    // carol joins, and from then on sends nothing and reads nothing.
    let mut carol = Client::joined(addr, "carol")?;
    let carol_last = Instant::now();
    alice.room_line()?;
    // dave connects (and is answered) but never registers.
    let mut dave = Client::connect(addr);
    // erin says goodbye.
    let mut erin = Client::joined(addr, "erin")?;
    alice.room_line()?;
    erin.send("QUIT :gone fishing")?;
    // A PING (only on a very slow machine) would be noise here.
    let erin: Vec<String> = erin
        .rest()
        .into_iter()
        .filter(|l| !l.starts_with("PING"))
        .collect();
    alice.room_line()?;
    // frank closes his socket: the server reads an end-of-file.
    let frank = Client::joined(addr, "frank")?;
    alice.room_line()?;
    drop(frank);
    alice.room_line()?;
    // grace closes hers with a line unread: the kernel sends a reset.
    let mut grace = Client::joined(addr, "grace")?;
    alice.room_line()?;
    grace.send("PING unread")?;
    grace.writer.peek(&mut [0; 1])?; // the PONG is there, unread
    drop(grace);
    alice.room_line()?;
    // Now only the sweeper can act: carol's QUIT comes after two intervals.
    alice.room_line()?;
    let carol_cut_after = carol_last.elapsed();
    stop_bob.store(true, Ordering::SeqCst);
    let (bob_pinged, bob_errors) = bob.join().unwrap()?;
    let carol = carol.rest();
    let carol = carol
        .into_iter()
        .filter(|l| l.starts_with("PING") || l.starts_with("ERROR") || l.starts_with('('))
        .collect();
    Ok(Story {
        alice_saw: std::mem::take(&mut alice.seen),
        alice_pongs: alice.pongs,
        carol_cut_after,
        bob_pinged,
        bob_errors,
        carol,
        dave: dave.rest(),
        erin,
    })
}
// ANCHOR_END: demo

fn print(story: &Story) {
    let tick = DEMO.ping_interval / 4;
    println!(
        "ping interval {:?}, registration timeout {:?}; the sweeper looks every {tick:?}",
        DEMO.ping_interval, DEMO.registration
    );
    let show = |who: &str, what: &str, lines: &[String]| {
        println!("{who} {what}; {who} got:");
        for line in lines {
            println!("    {line}");
        }
    };
    show("erin", "sends `QUIT :gone fishing`", &story.erin);
    println!("frank closes his socket (the server reads an end-of-file)");
    println!("grace closes hers with a line unread (her kernel sends a reset)");
    show(
        "carol",
        "goes silent, as a half-open socket does",
        &story.carol,
    );
    show("dave", "connects and never registers", &story.dave);
    println!(
        "alice answers each PING with PONG (~{} of them): never cut",
        story.alice_pongs
    );
    match (story.bob_pinged, story.bob_errors.as_slice()) {
        (0, []) => println!(
            "bob sends a line of his own every {BOB_EVERY:?} and answers nothing: never pinged, never cut"
        ),
        (n, errors) => println!("bob was pinged {n} times and got {errors:?}"),
    }
    println!("what alice saw in #room, in order:");
    for line in &story.alice_saw {
        println!("    {line}");
    }
    println!(
        "carol's QUIT came {:.2?} after her last line",
        story.carol_cut_after
    );
}

/// A scripted client on a plain OS thread (std sockets block their thread,
/// which is fine off may's workers), keeping every line it received.
struct Client {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    seen: Vec<String>,
    /// PINGs it answered with PONG.
    pongs: usize,
}

impl Client {
    /// Connect, and wait until the router knows the client (a PING's PONG
    /// comes back through it).
    fn connect(addr: SocketAddr) -> Client {
        let writer = std::net::TcpStream::connect(addr).expect("the server accepts");
        // A bound, not a synchronisation: a missing line fails the demo
        // instead of hanging it.
        writer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            seen: Vec::new(),
            pongs: 0,
        };
        client.send("PING hello").unwrap();
        client.next().unwrap();
        client.seen.clear();
        client
    }

    /// Connect, register as `nick`, and join #room.
    fn joined(addr: SocketAddr, nick: &str) -> io::Result<Client> {
        let mut client = Client::connect(addr);
        client.send(&format!("NICK {nick}"))?;
        client.send(&format!("USER {nick} 0 * :{nick} in the demo"))?;
        while !client.next()?.contains(" 376 ") {} // the end of the welcome
        client.send("JOIN #room")?;
        // On a loaded machine a PING can come first: it is answered.
        let join = client.room_line()?;
        let want = format!(":{nick}!{nick}@127.0.0.1 JOIN #room");
        if join != want {
            let msg = format!("expected {want:?}, got {join:?}");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        client.seen.clear();
        Ok(client)
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    fn next(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        self.seen.push(line.clone());
        Ok(line)
    }

    /// The next line that is not a PING, answering each PING with PONG.
    fn room_line(&mut self) -> io::Result<String> {
        loop {
            let line = self.next()?;
            let Some(token) = line.strip_prefix("PING ") else {
                return Ok(line);
            };
            self.seen.pop();
            self.pongs += 1;
            self.send(&format!("PONG {token}"))?;
        }
    }

    /// Every line until the stream ends, then `(end of stream)`.
    fn rest(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.next() {
                Ok(line) => lines.push(line),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => {
                    lines.push(format!("(read error: {e})"));
                    return lines;
                }
            }
        }
        lines.push("(end of stream)".to_string());
        lines
    }

    /// `bob`: a line of his own every `BOB_EVERY` (a PING of his, whose
    /// PONG he ignores), never an answer, until `stop`. Returns the PINGs
    /// the server sent him and any ERROR line.
    fn keep_talking(mut self, stop: &AtomicBool) -> io::Result<(usize, Vec<String>)> {
        let poll = BOB_EVERY / 3;
        self.reader.get_ref().set_read_timeout(Some(poll))?;
        let (mut pinged, mut errors, mut last) = (0, Vec::new(), Instant::now());
        while !stop.load(Ordering::SeqCst) {
            if last.elapsed() >= BOB_EVERY {
                self.send("PING bob")?;
                last = Instant::now();
            }
            match self.next() {
                Ok(line) if line.starts_with("PING") => pinged += 1,
                Ok(line) if line.starts_with("ERROR") => errors.push(line),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((pinged, errors))
    }
}

/// `--ping-interval`: a humantime duration of at least 250 ms.
fn ping_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_millis(250) {
        return Err(format!("{text:?} is too short: at least 250ms"));
    }
    Ok(d)
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, interval) = match args.as_slice() {
        [] => {
            let shutdown = Shutdown::new();
            let story = start("127.0.0.1:0", &shutdown, DEMO).and_then(|server| {
                let story = lifecycle(server.addr);
                shutdown.trigger();
                let _ = server.thread.join();
                story
            });
            match story {
                Ok(story) => print(&story),
                Err(e) => {
                    eprintln!("step5_lifecycle: the demo failed: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        [flag, addr] if flag == "--serve" => (addr, "90s"),
        [flag, addr, p, interval] if flag == "--serve" && p == "--ping-interval" => {
            (addr, interval.as_str())
        }
        _ => {
            eprintln!("usage: step5_lifecycle [--serve ADDR [--ping-interval 90s]]");
            std::process::exit(2);
        }
    };
    let ping_interval = ping_interval(interval).unwrap_or_else(|e| {
        eprintln!("step5_lifecycle: --ping-interval {e}");
        std::process::exit(2);
    });
    let t = Timeouts {
        ping_interval,
        registration: ping_interval,
    };
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    ctrlc::set_handler(move || on_ctrl_c.trigger()).expect("a Ctrl-C handler");
    match start(addr, &shutdown, t) {
        Ok(server) => {
            println!(
                "pinging after {ping_interval:?} of silence on {}: try `irssi -c 127.0.0.1 -p {}`",
                server.addr,
                server.addr.port()
            );
            let _ = server.thread.join();
        }
        Err(e) => {
            eprintln!("step5_lifecycle: cannot listen on {addr}: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// Feed `id`'s lines to the state; the lines it answers with.
    fn say(s: &mut State, id: u64, text: &str) -> Vec<Delivery> {
        let message = Message::parse(text).unwrap();
        s.handle(&Event::Line { id, message })
    }

    /// Clients 1..=n registered as `u1`, `u2`, ..., all in #r.
    fn room(n: u64) -> State {
        let mut s = State::default();
        for id in 1..=n {
            let user = User {
                nick: "*".into(),
                user: None,
                host: "127.0.0.1".into(),
                registered: false,
            };
            s.users.insert(id, user);
            say(&mut s, id, &format!("NICK u{id}"));
            say(&mut s, id, &format!("USER u{id} 0 * :x"));
            say(&mut s, id, "JOIN #r");
        }
        assert_eq!(s.welcomed, Vec::from_iter(1..=n), "each welcome is noted");
        s.welcomed.clear();
        s
    }

    // ANCHOR: quit_test
    #[test]
    fn quit_tells_the_room_the_reason_and_ends_with_an_error_line() {
        let mut s = room(3);
        let out = say(&mut s, 1, "QUIT :gone fishing");
        let quit = ":u1!u1@127.0.0.1 QUIT :Quit: gone fishing".to_string();
        assert_eq!(out, [(2, quit.clone()), (3, quit)]);
        let error = "ERROR :Closing link: 127.0.0.1 (Quit: gone fishing)";
        let closing = [(1, error.to_string(), "Quit: gone fishing".to_string())];
        assert_eq!(s.closing, closing);
        // Its reader's `Closed` comes later, and changes nothing.
        let reason = "Connection closed".to_string();
        assert!(s.handle(&Event::Closed { id: 1, reason }).is_empty());
        // The nick is free again.
        assert!(!s.nicks.contains_key("u1"));
    }
    // ANCHOR_END: quit_test

    #[test]
    fn a_closed_stream_tells_the_room_its_reason() {
        let mut s = room(2);
        let reason = "Read error: Connection reset by peer (os error 104)".to_string();
        let out = s.handle(&Event::Closed { id: 2, reason });
        let quit = ":u2!u2@127.0.0.1 QUIT :Read error: Connection reset by peer (os error 104)";
        assert_eq!(out, [(1, quit.to_string())]);
        assert!(s.closing.is_empty(), "no ERROR line: the socket is gone");
    }

    /// A reader whose peer reset the connection.
    struct Reset;
    impl Read for Reset {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::ConnectionReset.into())
        }
    }

    #[test]
    fn an_end_of_file_and_a_reset_are_told_apart() {
        let Line::End(eof) = read_line(&mut BufReader::new(&b"half a li"[..])).unwrap() else {
            panic!("an end-of-file mid-line ends the stream");
        };
        assert_eq!(eof, "Connection closed");
        let Line::End(reset) = read_line(&mut BufReader::new(Reset)).unwrap() else {
            panic!("a reset ends the stream");
        };
        assert!(reset.starts_with("Read error: "), "{reset}");
    }

    /// A watched client that connected at 0 ms, with `registered` set or
    /// not, and the outbox it pushes to.
    fn watched(registered: bool) -> (Watched, Drain) {
        let (outbox, drain) = Outbox::new(ClientId(1), SENDQ, || {});
        if registered {
            outbox.set_registered();
        }
        let w = Watched {
            outbox,
            heard: Arc::new(AtomicU64::new(0)),
            since: 0,
            pinged: None,
            cut: None,
            host: "127.0.0.1".into(),
        };
        (w, drain)
    }

    // ANCHOR: sweep_test
    #[test]
    fn silence_brings_a_ping_then_a_timeout_and_any_line_answers() {
        let t = Timeouts {
            ping_interval: Duration::from_millis(1000),
            registration: Duration::from_millis(3000),
        };
        let (mut w, _drain) = watched(true);
        assert_eq!(sweep_one(&mut w, 999, &t, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 1000, &t, 500), Sweep::Ping);
        w.pinged = Some(1000); // what the sweeper records with the PING
        assert_eq!(sweep_one(&mut w, 1500, &t, 500), Sweep::Nothing);
        w.heard.store(1600, Ordering::Relaxed); // a line: the answer
        assert_eq!(sweep_one(&mut w, 1700, &t, 500), Sweep::Nothing);
        assert_eq!(w.pinged, None);
        assert_eq!(sweep_one(&mut w, 2600, &t, 500), Sweep::Ping);
        w.pinged = Some(2600);
        assert_eq!(sweep_one(&mut w, 3599, &t, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 3600, &t, 500), Sweep::PingTimeout);
        w.cut = Some(3600);
        assert_eq!(sweep_one(&mut w, 4099, &t, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 4100, &t, 500), Sweep::ForceClose);
        assert_eq!(ping_timeout(&t), "Ping timeout: 2 seconds");
    }

    #[test]
    fn registration_has_its_own_deadline_whatever_the_client_sends() {
        let t = Timeouts {
            ping_interval: Duration::from_millis(1000),
            registration: Duration::from_millis(1500),
        };
        let (mut w, _drain) = watched(false);
        w.heard.store(1400, Ordering::Relaxed); // it talks, but does not register
        assert_eq!(sweep_one(&mut w, 1499, &t, 500), Sweep::Nothing);
        assert_eq!(sweep_one(&mut w, 1500, &t, 500), Sweep::RegistrationTimeout);
        let (mut w, _drain) = watched(true);
        w.heard.store(1400, Ordering::Relaxed);
        assert_eq!(sweep_one(&mut w, 1500, &t, 500), Sweep::Nothing);
    }
    // ANCHOR_END: sweep_test

    #[test]
    fn every_way_a_connection_ends_on_a_real_server() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown, DEMO).unwrap();
        let story = lifecycle(server.addr).unwrap();
        shutdown.trigger();
        server.thread.join().unwrap().unwrap();
        let quits: Vec<&str> = story
            .alice_saw
            .iter()
            .filter_map(|l| l.split_once(" QUIT :"))
            .map(|(_, reason)| reason)
            .collect();
        assert_eq!(
            quits,
            [
                "Quit: gone fishing",
                "Connection closed",
                "Read error: Connection reset by peer (os error 104)",
                "Ping timeout: 0.8 seconds",
            ]
        );
        assert!(story.alice_saw.last().unwrap().starts_with(":carol!"));
        let cut = story.carol_cut_after;
        assert!(cut >= 2 * DEMO.ping_interval, "carol cut early: {cut:?}");
        // No upper bound here but the clients' 5 s read timeout: on a
        // loaded machine the sweeper's thread can be late.
        let error = |why: &str| format!("ERROR :Closing link: 127.0.0.1 ({why})");
        let end = "(end of stream)".to_string();
        assert_eq!(story.erin, [error("Quit: gone fishing"), end.clone()]);
        assert_eq!(story.dave, [error("Registration timed out"), end.clone()]);
        let carol = [
            "PING :chat.local".into(),
            error("Ping timeout: 0.8 seconds"),
            end,
        ];
        assert_eq!(story.carol, carol);
        assert!(story.alice_pongs >= 1, "alice was pinged and answered");
        assert_eq!((story.bob_pinged, story.bob_errors.len()), (0, 0));
    }
}
