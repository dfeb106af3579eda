//! Step 2: rooms, and a router that owns them. Clients now speak IRC:
//! `JOIN #room`, `PART #room`, `PRIVMSG #room :text` (and `PING`), parsed
//! by the final program's line module, `irc.rs`. Names are still given by
//! the server (`guest1`, ...): registration is step 3.
//!
//! One router coroutine owns every room. Each client's reader parses lines
//! and sends them to the router as events over one bounded channel; the
//! router decides who gets what and writes it. Nothing is shared, so
//! nothing is locked, and because one coroutine emits every room's lines,
//! every member of a room sees them in the same order.
//!
//! The router still writes to the sockets itself, one after the other:
//! a client that stops reading stalls it (step 4 measures that).
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
/// Everything the router owns: who is connected and who is in which room.
/// Only the router coroutine touches it, so it needs no lock, and it does
/// no I/O: `handle` returns the lines to send, which keeps it testable
/// without sockets.
#[derive(Default)]
struct State {
    users: HashMap<u64, User>,
    /// Keyed by the casefolded name: `#Rust` and `#rust` are one room.
    rooms: HashMap<String, Room>,
}

struct User {
    name: String,
    /// `guest1!guest1@127.0.0.1`: who a line comes from.
    prefix: String,
}

struct Room {
    /// The name as first joined, which is what members are shown.
    name: String,
    members: BTreeSet<u64>,
}

/// A line for one client (without CRLF).
type Delivery = (u64, String);
// ANCHOR_END: state

// ANCHOR: handle
impl State {
    fn handle(&mut self, event: &Event) -> Vec<Delivery> {
        let (mut out, id) = (Vec::new(), event.id());
        match event {
            Event::Connected { peer, .. } => {
                let name = format!("guest{id}");
                let prefix = format!("{name}!{name}@{}", peer.ip());
                self.users.insert(id, User { name, prefix });
            }
            Event::Line { message, .. } => self.command(id, message, &mut out),
            Event::TooLong { .. } => self.reply(
                id,
                numeric::ERR_INPUTTOOLONG,
                &["Input line was too long"],
                &mut out,
            ),
            Event::Closed { .. } => {
                let Some(client) = self.users.remove(&id) else {
                    return out;
                };
                let quit = format!(":{} QUIT :Connection closed", client.prefix);
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

    fn command(&mut self, id: u64, message: &Message, out: &mut Vec<Delivery>) {
        let params: Vec<&str> = message.params.iter().map(String::as_str).collect();
        match (message.command_upper().as_str(), params.as_slice()) {
            ("JOIN", [room, ..]) => self.join(id, room, out),
            ("PART", [room, ..]) => self.part(id, room, out),
            ("PRIVMSG", [room, text, ..]) => self.privmsg(id, room, text, out),
            ("PRIVMSG", [_]) => {
                self.reply(id, numeric::ERR_NOTEXTTOSEND, &["No text to send"], out)
            }
            ("PING", [token, ..]) => out.push((id, format!(":{SERVER} PONG {SERVER} :{token}"))),
            ("JOIN" | "PART" | "PRIVMSG" | "PING", _) => {
                let command = message.command_upper();
                self.reply(
                    id,
                    numeric::ERR_NEEDMOREPARAMS,
                    &[&command, "Not enough parameters"],
                    out,
                )
            }
            (_, _) => self.reply(
                id,
                numeric::ERR_UNKNOWNCOMMAND,
                &[&message.command, "Unknown command"],
                out,
            ),
        }
    }

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
        let line = format!(":{} JOIN {}", self.users[&id].prefix, room.name);
        out.extend(room.members.iter().map(|&m| (m, line.clone())));
    }

    fn part(&mut self, id: u64, name: &str, out: &mut Vec<Delivery>) {
        let key = irc::casefold(name);
        match self.rooms.get_mut(&key) {
            Some(room) if room.members.contains(&id) => {
                let line = format!(":{} PART {}", self.users[&id].prefix, room.name);
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

    fn privmsg(&mut self, id: u64, name: &str, text: &str, out: &mut Vec<Delivery>) {
        match self.rooms.get(&irc::casefold(name)) {
            Some(room) if room.members.contains(&id) => {
                let from = &self.users[&id].prefix;
                let line = Message::new("PRIVMSG", &[&room.name, text]).with_prefix(from);
                let line = line.to_string();
                let others = room.members.iter().filter(|&&m| m != id);
                out.extend(others.map(|&m| (m, line.clone())));
            }
            Some(_) => self.reply(
                id,
                numeric::ERR_CANNOTSENDTOCHAN,
                &[name, "Cannot send to channel"],
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

    /// A numeric reply: `:chat.local 403 guest1 #x :No such channel`.
    fn reply(&self, id: u64, code: &str, params: &[&str], out: &mut Vec<Delivery>) {
        let mut all = vec![self.users[&id].name.as_str()];
        all.extend_from_slice(params);
        out.push((id, Message::new(code, &all).with_prefix(SERVER).to_string()));
    }
}
// ANCHOR_END: handle

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
/// The demo: guest1 and guest2 meet in #rust, guest3 sits in #go and tries
/// to talk into #rust, guest2 leaves. Returns what each client saw.
fn demo(addr: SocketAddr) -> io::Result<Vec<Vec<String>>> {
    let mut one = Client::connect(addr);
    let mut two = Client::connect(addr);
    let mut three = Client::connect(addr);
    one.send("JOIN #rust")?;
    one.expect(":guest1!guest1@127.0.0.1 JOIN #rust")?;
    two.send("JOIN #Rust")?; // the same room: names are casefolded
    two.expect(":guest2!guest2@127.0.0.1 JOIN #rust")?;
    one.expect(":guest2!guest2@127.0.0.1 JOIN #rust")?;
    three.send("JOIN #go")?;
    three.expect(":guest3!guest3@127.0.0.1 JOIN #go")?;

    one.send("PRIVMSG #rust :hello, rustaceans")?;
    two.expect(":guest1!guest1@127.0.0.1 PRIVMSG #rust :hello, rustaceans")?;
    three.send("PRIVMSG #rust :can I join in?")?;
    three.expect(":chat.local 404 guest3 #rust :Cannot send to channel")?;
    two.send("PART #rust")?;
    two.expect(":guest2!guest2@127.0.0.1 PART #rust")?;
    one.expect(":guest2!guest2@127.0.0.1 PART #rust")?;
    two.send("PRIVMSG #rust :still here?")?;
    two.expect(":chat.local 404 guest2 #rust :Cannot send to channel")?;
    three.send("HELLO")?;
    three.expect(":chat.local 421 guest3 HELLO :Unknown command")?;
    Ok(vec![one.seen, two.seen, three.seen])
}
// ANCHOR_END: demo

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
            for (i, lines) in seen.iter().enumerate() {
                println!("guest{} saw:", i + 1);
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
                    println!("rooms on {}: try `nc {0}`, then JOIN #test", server.addr);
                    let _ = server.thread.join();
                }
                Err(e) => {
                    eprintln!("step2_rooms_router: cannot listen on {addr}: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: step2_rooms_router [--serve ADDR]");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn line(text: &str) -> Message {
        Message::parse(text).unwrap()
    }

    /// A state with clients 1..=n connected from 127.0.0.1.
    fn state(n: u64) -> State {
        let mut state = State::default();
        for id in 1..=n {
            let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let (name, prefix) = (format!("guest{id}"), format!("guest{id}!guest{id}@{peer}"));
            state.users.insert(id, User { name, prefix });
        }
        state
    }

    #[test]
    fn a_room_line_reaches_its_members_only() {
        let mut s = state(3);
        s.handle(&Event::Line {
            id: 1,
            message: line("JOIN #a"),
        });
        s.handle(&Event::Line {
            id: 2,
            message: line("JOIN #A"),
        });
        s.handle(&Event::Line {
            id: 3,
            message: line("JOIN #b"),
        });
        let out = s.handle(&Event::Line {
            id: 1,
            message: line("PRIVMSG #a :hi there"),
        });
        let to: Vec<u64> = out.iter().map(|(to, _)| *to).collect();
        assert_eq!(to, [2]);
        assert!(out[0].1.ends_with("PRIVMSG #a :hi there"), "{out:?}");
    }

    #[test]
    fn leaving_tells_the_room_and_an_empty_room_is_forgotten() {
        let mut s = state(2);
        s.handle(&Event::Line {
            id: 1,
            message: line("JOIN #a"),
        });
        s.handle(&Event::Line {
            id: 2,
            message: line("JOIN #a"),
        });
        let out = s.handle(&Event::Closed { id: 2 });
        assert_eq!(out.len(), 1);
        assert!(out[0].1.ends_with("QUIT :Connection closed"), "{out:?}");
        s.handle(&Event::Line {
            id: 1,
            message: line("PART #a"),
        });
        assert!(s.rooms.is_empty());
        let out = s.handle(&Event::Line {
            id: 1,
            message: line("PART #a"),
        });
        assert!(out[0].1.contains(" 403 guest1 #a "), "{out:?}");
    }

    #[test]
    fn misuse_gets_its_numeric() {
        let mut s = state(1);
        let reply = |s: &mut State, text: &str| {
            s.handle(&Event::Line {
                id: 1,
                message: line(text),
            })[0]
                .1
                .clone()
        };
        assert!(reply(&mut s, "JOIN nohash").contains(" 403 "));
        assert!(reply(&mut s, "JOIN").contains(" 461 guest1 JOIN "));
        assert!(reply(&mut s, "PRIVMSG #a").contains(" 412 "));
        assert!(reply(&mut s, "WHOIS x").contains(" 421 guest1 WHOIS "));
        let too_long = s.handle(&Event::TooLong { id: 1 });
        assert!(too_long[0].1.contains(" 417 "), "{too_long:?}");
    }

    // ANCHOR: order_test
    /// Two clients talk into one room at once: both listeners see the same
    /// interleaving, because one router emits every line of the room.
    #[test]
    fn every_member_sees_a_room_in_the_same_order() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let addr = start("127.0.0.1:0", &shutdown).unwrap().addr;
        let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
        for i in 0..4 {
            clients[i].send("JOIN #race").unwrap();
            // The JOIN reaches the joiner and everyone already there.
            for c in &mut clients[..=i] {
                c.next().unwrap();
            }
        }
        let mut talkers = clients.split_off(2);
        let threads: Vec<_> = talkers
            .iter_mut()
            .map(|t| t.writer.try_clone().unwrap())
            .enumerate()
            .map(|(n, mut w)| {
                std::thread::spawn(move || {
                    for i in 0..200 {
                        w.write_all(format!("PRIVMSG #race :{n}-{i}\r\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let heard: Vec<Vec<String>> = clients
            .iter_mut()
            .map(|c| (0..400).map(|_| c.next().unwrap()).collect())
            .collect();
        assert_eq!(heard[0], heard[1]);
        shutdown.trigger();
    }
    // ANCHOR_END: order_test
}
