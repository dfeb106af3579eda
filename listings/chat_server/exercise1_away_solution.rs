//! Exercise 1's solution: step 3 (registration, nick rules, PRIVMSG to a
//! nick) plus `AWAY` (RFC 2812 4.1). `AWAY :text` marks the client away
//! (306) and `AWAY` alone marks it back (305). A PRIVMSG to an away nick is
//! delivered and its sender gets 301 with the away text; a NOTICE gets no
//! automatic reply, 301 included. The away text is cut to `AWAY_LEN` bytes,
//! which the 005 line advertises as AWAYLEN.
//!
//! With no arguments it runs a demo; with `--serve ADDR` it serves real
//! clients (irssi, nc) until Ctrl-C.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use may::go;
use may::net::TcpListener;
use may_patterns::bounded::{self, Sender};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Config, Conn, WriteHalf};
use may_patterns::shutdown::Shutdown;

// The step uses the parser, the numerics and the name rules of the final
// program's line module; the rest of it (tags, server-time) it leaves alone.
#[allow(dead_code)]
#[path = "chat_server/irc.rs"]
mod irc;

use irc::{numeric, Message};

#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{read_line, Client, Line, Running};

/// The name the server gives itself in replies (`:chat.local 403 ...`).
const SERVER: &str = "chat.local";
/// Events waiting for the router. A reader that finds the queue full parks,
/// and stops reading its socket: a fast client slows down, memory does not grow.
const ROUTER_QUEUE: usize = 1024;

// ANCHOR: event
/// What a client's reader tells the router.
enum Event {
    /// A new client, with the half of its socket the router writes to.
    Connected {
        id: u64,
        peer: SocketAddr,
        writer: WriteHalf,
    },
    /// One parsed line.
    Line { id: u64, message: Message },
    /// A line longer than `MAX_LINE`: refused, the client stays.
    TooLong { id: u64 },
    /// The client is gone (EOF or an error).
    Closed { id: u64 },
}
// ANCHOR_END: event

impl Event {
    /// The client the event is about.
    fn id(&self) -> u64 {
        match self {
            Event::Connected { id, .. }
            | Event::Line { id, .. }
            | Event::TooLong { id }
            | Event::Closed { id } => *id,
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
    /// The away text; `None` while the client is here.
    away: Option<String>,
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
/// AWAYLEN, as the 005 line advertises: a longer away text is cut to it.
const AWAY_LEN: usize = 200;
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
                    away: None,
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
            Event::Closed { .. } => {
                let Some(user) = self.users.remove(&id) else {
                    return out;
                };
                self.nicks.remove(&irc::casefold(&user.nick));
                let quit = format!(":{} QUIT :Connection closed", user.prefix());
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
            // ANCHOR: away_command
            ("AWAY", []) => self.away(id, "", out),
            ("AWAY", [text, ..]) => self.away(id, text, out),
            ("NOTICE", [target, text, ..]) => {
                // RFC 2812 3.3.2: a NOTICE never gets an automatic reply.
                // Route it as a PRIVMSG would be, then keep only the lines
                // for others: no error, and no 301.
                let mut lines = Vec::new();
                self.privmsg(id, target, text, &mut lines);
                let notice = |line: String| line.replacen(" PRIVMSG ", " NOTICE ", 1);
                let sent = lines
                    .into_iter()
                    .filter(|(_, l)| !l.starts_with(":chat.local "));
                out.extend(sent.map(|(to, line)| (to, notice(line))));
            }
            // ANCHOR_END: away_command
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
        let isupport = [
            "AWAYLEN=200",
            "CASEMAPPING=rfc1459",
            "CHANTYPES=#",
            "NICKLEN=30",
        ];
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
            out.push((to, line.to_string()));
            // ANCHOR: rpl_away
            if let Some(away) = &self.users[&to].away {
                let nick = self.users[&to].nick.clone();
                self.reply(id, numeric::RPL_AWAY, &[&nick, away], out);
            }
            // ANCHOR_END: rpl_away
            return;
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

    // ANCHOR: away
    /// AWAY: a text marks the client away (cut to `AWAY_LEN` bytes, on a
    /// character boundary); no text, or an empty one, marks it back.
    fn away(&mut self, id: u64, text: &str, out: &mut Vec<Delivery>) {
        let user = self.users.get_mut(&id).unwrap();
        if text.is_empty() {
            user.away = None;
            let why = "You are no longer marked as being away";
            return self.reply(id, numeric::RPL_UNAWAY, &[why], out);
        }
        let mut end = text.len().min(AWAY_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        user.away = Some(text[..end].to_string());
        let why = "You have been marked as being away";
        self.reply(id, numeric::RPL_NOWAWAY, &[why], out);
    }
    // ANCHOR_END: away

    /// A numeric reply, addressed to the client's nick (`*` before NICK):
    /// `:chat.local 403 alice #x :No such channel`.
    fn reply(&self, id: u64, code: &str, params: &[&str], out: &mut Vec<Delivery>) {
        let mut all = vec![self.users[&id].nick.as_str()];
        all.extend_from_slice(params);
        out.push((id, Message::new(code, &all).with_prefix(SERVER).to_string()));
    }
}

// ANCHOR: router
/// The router coroutine: take events in arrival order, let the state decide,
/// write what it decided. The writes are still direct (a client that stops
/// reading blocks this loop: step 4). It ends when every reader and the
/// accept loop have dropped their senders.
fn router(events: bounded::Receiver<Event>) {
    let mut state = State::default();
    let mut writers: HashMap<u64, WriteHalf> = HashMap::new();
    for event in &events {
        let out = state.handle(&event);
        match event {
            Event::Connected { id, writer, .. } => drop(writers.insert(id, writer)),
            Event::Closed { id } => drop(writers.remove(&id)),
            Event::Line { .. } | Event::TooLong { .. } => {}
        }
        for (to, line) in out {
            if let Some(writer) = writers.get_mut(&to) {
                let _ = writer.write_all(format!("{line}\r\n").as_bytes());
            }
        }
    }
}
// ANCHOR_END: router

// ANCHOR: reader
/// One client's reader, on its own coroutine: parse each line and pass it on.
fn reader(conn: Conn, id: u64, router: &Sender<Event>) -> io::Result<()> {
    let peer = conn.peer();
    let (reader, writer) = conn.split()?;
    let mut lines = BufReader::new(reader);
    router
        .send(Event::Connected { id, peer, writer })
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
    let _ = router.send(Event::Closed { id });
    Ok(())
}
// ANCHOR_END: reader

// ANCHOR: serve
/// Accept clients until `shutdown` (with `may_patterns::server`, as step 1
/// does): one reader coroutine each, and one router for all of them.
fn serve(listener: TcpListener, shutdown: &Shutdown) -> io::Result<server::Report> {
    let (to_router, events) = bounded::channel(ROUTER_QUEUE);
    go!(move || router(events));
    let next_id = AtomicU64::new(1);
    server::run(listener, shutdown, Config::default(), move |conn| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let _ = reader(conn, id, &to_router);
    })
}
// ANCHOR_END: serve

/// Start `serve` on a thread of its own (`server::run` returns only when
/// the server has stopped).
fn start(addr: &str, shutdown: &Shutdown) -> io::Result<Running> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    let thread = std::thread::spawn(move || serve(listener, &shutdown));
    Ok(Running { addr, thread })
}

// ANCHOR: demo
/// The demo: bob goes away; alice's PRIVMSG gets 301, her NOTICE does not;
/// bob comes back and her next PRIVMSG gets no 301. A PING after each
/// message shows that nothing else came. Returns what each client saw.
fn demo(addr: SocketAddr) -> io::Result<Vec<(&'static str, Vec<String>)>> {
    let mut alice = Client::connect(addr);
    alice.register("alice")?;
    let mut bob = Client::connect(addr);
    bob.register("bob")?;
    // The welcome is step 3's (its 005 line now has AWAYLEN=200).
    alice.seen.clear();
    bob.seen.clear();

    bob.send("AWAY :at lunch, back at 2")?;
    bob.expect(":chat.local 306 bob :You have been marked as being away")?;
    alice.send("PRIVMSG bob :are you there?")?;
    bob.expect(":alice!alice@127.0.0.1 PRIVMSG bob :are you there?")?;
    alice.expect(":chat.local 301 alice bob :at lunch, back at 2")?;
    alice.send("NOTICE bob :no need to answer")?;
    bob.expect(":alice!alice@127.0.0.1 NOTICE bob :no need to answer")?;
    alice.send("PING after-notice")?;
    alice.expect(":chat.local PONG chat.local :after-notice")?;

    bob.send("AWAY")?;
    bob.expect(":chat.local 305 bob :You are no longer marked as being away")?;
    alice.send("PRIVMSG bob :welcome back")?;
    bob.expect(":alice!alice@127.0.0.1 PRIVMSG bob :welcome back")?;
    alice.send("PING after-privmsg")?;
    alice.expect(":chat.local PONG chat.local :after-privmsg")?;
    Ok(vec![("alice", alice.seen), ("bob", bob.seen)])
}
// ANCHOR_END: demo

/// What step 3 adds to the shared scripted client (with AWAYLEN in 005).
impl Client {
    /// NICK and USER, then the three lines of the welcome.
    fn register(&mut self, nick: &str) -> io::Result<()> {
        self.send(&format!("NICK {nick}"))?;
        self.send(&format!("USER {nick} 0 * :{nick} in the demo"))?;
        let welcome =
            format!(":chat.local 001 {nick} :Welcome to the chat, {nick}!{nick}@127.0.0.1");
        self.expect(&welcome)?;
        let isupport =
            "AWAYLEN=200 CASEMAPPING=rfc1459 CHANTYPES=# NICKLEN=30 :are supported by this server";
        self.expect(&format!(":chat.local 005 {nick} {isupport}"))?;
        self.expect(&format!(
            ":chat.local 375 {nick} :- chat.local Message of the day -"
        ))?;
        self.expect(&format!(
            ":chat.local 372 {nick} :- Be kind. Lines are at most 512 bytes."
        ))?;
        self.expect(&format!(":chat.local 376 {nick} :End of /MOTD command"))
    }
}
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let shutdown = Shutdown::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let server = start("127.0.0.1:0", &shutdown).expect("the server starts");
            let seen = demo(server.addr).expect("the demo runs");
            for (name, lines) in &seen {
                println!("{name} saw:");
                for line in lines {
                    println!("  {line}");
                }
            }
            shutdown.trigger();
            let _ = server.thread.join();
        }
        [flag, addr] if flag == "--serve" => {
            let on_ctrl_c = shutdown.clone();
            ctrlc::set_handler(move || on_ctrl_c.trigger()).expect("a Ctrl-C handler");
            match start(addr, &shutdown) {
                Ok(server) => {
                    println!(
                        "AWAY on {}: try `irssi -c 127.0.0.1 -p {}`",
                        server.addr,
                        server.addr.port()
                    );
                    let _ = server.thread.join();
                }
                Err(e) => {
                    eprintln!("exercise1_away_solution: cannot listen on {addr}: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: exercise1_away_solution [--serve ADDR]");
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
                away: None,
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

    /// Clients 1 and 2 registered as a and b.
    fn two() -> State {
        let mut s = state(2);
        register(&mut s, 1, "a");
        register(&mut s, 2, "b");
        s
    }

    fn line(text: &str) -> String {
        text.to_string()
    }

    // ANCHOR: away_tests
    #[test]
    fn a_privmsg_to_an_away_nick_is_delivered_and_answered_with_301() {
        let mut s = two();
        let marked = say(&mut s, 2, "AWAY :at lunch");
        assert_eq!(
            marked,
            [(
                2,
                line(":chat.local 306 b :You have been marked as being away")
            )]
        );
        let out = say(&mut s, 1, "PRIVMSG B :hi");
        assert_eq!(
            out,
            [
                (2, line(":a!a@127.0.0.1 PRIVMSG b hi")),
                (1, line(":chat.local 301 a b :at lunch")),
            ]
        );
    }

    #[test]
    fn a_notice_gets_no_301_and_no_error() {
        let mut s = two();
        say(&mut s, 2, "AWAY :at lunch");
        let out = say(&mut s, 1, "NOTICE b :fyi");
        assert_eq!(out, [(2, line(":a!a@127.0.0.1 NOTICE b fyi"))]);
        assert!(say(&mut s, 1, "NOTICE nobody :x").is_empty());
        assert!(say(&mut s, 1, "NOTICE #none :x").is_empty());
    }

    #[test]
    fn away_alone_or_empty_marks_the_client_back() {
        let mut s = two();
        for back in ["AWAY", "AWAY :"] {
            say(&mut s, 2, "AWAY :gone");
            let out = say(&mut s, 2, back);
            let unaway = ":chat.local 305 b :You are no longer marked as being away";
            assert_eq!(out, [(2, line(unaway))], "{back}");
            let out = say(&mut s, 1, "PRIVMSG b :hi");
            assert_eq!(out.len(), 1, "no 301 after {back:?}: {out:?}");
        }
    }

    #[test]
    fn the_away_text_is_cut_to_awaylen_on_a_char_boundary() {
        let mut s = two();
        // 199 ASCII bytes and a 2-byte 'é' that would end at byte 201.
        let text = format!("{}é and more", "x".repeat(199));
        say(&mut s, 2, &format!("AWAY :{text}"));
        let out = say(&mut s, 1, "PRIVMSG b :hi");
        // The last parameter of the 301 (no `:` before it: no space in it).
        let kept = |out: &[Delivery]| out[1].1.rsplit(' ').next().unwrap().to_string();
        assert_eq!(kept(&out), "x".repeat(199));
        say(&mut s, 2, &format!("AWAY :{}", "y".repeat(300)));
        let out = say(&mut s, 1, "PRIVMSG b :hi");
        assert_eq!(kept(&out), "y".repeat(AWAY_LEN));
        // The 005 line says so.
        let mut s = state(1);
        say(&mut s, 1, "USER c 0 * :x");
        let welcome = say(&mut s, 1, "NICK c");
        assert!(welcome[1].1.contains(" AWAYLEN=200 "), "{welcome:?}");
    }

    #[test]
    fn away_needs_registration() {
        let mut s = state(1);
        let out = say(&mut s, 1, "AWAY :x");
        assert!(out[0].1.contains(" 451 "), "{out:?}");
    }
    // ANCHOR_END: away_tests

    #[test]
    fn the_demo_runs_over_real_sockets() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown).unwrap();
        demo(server.addr).unwrap();
        shutdown.trigger();
        server.thread.join().unwrap().unwrap();
    }
}
