//! Exercise 2's solution: step 6 (a GCRA quota per client, fake lag) plus
//! a slow mode per room. `SLOW #room N` (the book's own command; 0 turns it
//! off) lets each member of the room post at most one line every N
//! seconds. A line too early is refused at once with 404 and the time
//! left: it is not delayed, and it does not use the member's turn. Each
//! slow room has its own `may_patterns::ratelimit::Limiter`, keyed by
//! member, with a quota of 1 per N seconds and a burst of 1.
//!
//! With no arguments it runs a demo: a flooding client beside a normal one.
//! With `--serve ADDR` it serves real clients until stopped.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::mpsc;
use may_patterns::ratelimit::{Decision, Gcra, Limiter, Quota, Reservation};
use may_patterns::runtime::{configure_once, Settings};

#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{next_line, parse, Bot};

/// Every room's members, each with its writer's channel.
type Rooms = steps_common::Rooms<mpsc::Sender<String>>;

// ANCHOR: flood
/// The flood rule: at most `quota` lines per client, and how far behind its
/// lines may fall (the fake lag) before the client is cut.
#[derive(Clone, Copy)]
struct Flood {
    quota: Quota,
    max_lag: Duration,
}

/// What every connection shares: the rooms and one GCRA state per client.
struct Hub {
    rooms: Rooms,
    flood: Flood,
    limiter: Limiter<u64, Gcra>,
    /// The slow rooms, each with one GCRA state per member. A std `Mutex`
    /// held for one `check` (which never parks), never across a yield.
    slow: Mutex<HashMap<String, Limiter<u64, Gcra>>>,
}

/// Read lines as they arrive and give each its turn in the client's quota.
/// The reader never waits for a turn itself, so a flood is seen while it
/// arrives instead of piling up in the kernel's buffer; the turns wait in
/// `turns`, and `max_lag` bounds how many can be there (rate × lag).
fn read_lines(
    stream: TcpStream,
    id: u64,
    hub: &Hub,
    turns: mpsc::Sender<(Reservation, String)>,
    out: &mpsc::Sender<String>,
    cut: &AtomicBool,
) {
    let mut reader = BufReader::new(stream);
    while let Some(line) = next_line(&mut reader) {
        match hub.limiter.reserve(&id, 1, hub.flood.max_lag) {
            Ok(turn) => {
                if turns.send((turn, line)).is_err() {
                    return; // the handler has gone (QUIT)
                }
            }
            Err(_) => {
                // Its next turn is past max_lag: what it sent already waits
                // long enough. Nothing more of it is handled.
                cut.store(true, Ordering::SeqCst);
                let _ = out.send("ERROR :Closing link: (Excess Flood)".into());
                return;
            }
        }
    }
}

/// Handle each line at its turn; the coroutine parks until then (the
/// limiter's wait is kept by `may_patterns::alarm`, not a may timer).
fn handle_lines(
    turns: mpsc::Receiver<(Reservation, String)>,
    client: &mut Client,
    hub: &Hub,
    cut: &AtomicBool,
) {
    for (turn, line) in turns {
        turn.wait(hub.limiter.clock());
        if cut.load(Ordering::SeqCst) || !handle(client, hub, &line) {
            return;
        }
    }
}
// ANCHOR_END: flood

// ANCHOR: connection
/// One client: this coroutine handles its lines, a second one reads them
/// and a third writes what it is sent.
fn serve(stream: TcpStream, id: u64, hub: Arc<Hub>) -> io::Result<()> {
    let (out, lines_out) = mpsc::channel::<String>();
    let mut socket = stream.try_clone()?;
    let writer = go!(move || {
        for line in lines_out {
            if socket.write_all(format!("{line}\r\n").as_bytes()).is_err() {
                break;
            }
        }
        let _ = socket.shutdown(Shutdown::Both);
    });
    let (turns, turns_in) = mpsc::channel();
    let cut = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stream, hub, out, cut) = (stream.try_clone()?, hub.clone(), out.clone(), cut.clone());
        go!(move || read_lines(stream, id, &hub, turns, &out, &cut))
    };
    let mut client = Client {
        id,
        nick: None,
        out,
        joined: BTreeSet::new(),
    };
    handle_lines(turns_in, &mut client, &hub, &cut);
    hub.rooms.leave_all(id);
    // A slow mode ends with its room: the map holds only rooms that exist.
    hub.slow
        .lock()
        .unwrap()
        .retain(|room, _| hub.rooms.exists(room));
    // Wake the reader if it is still parked in a read (after QUIT).
    let _ = stream.shutdown(Shutdown::Read);
    let _ = reader.join();
    drop(client); // its sender: the writer ends once the rooms' copies are gone
    let _ = writer.join();
    Ok(())
}
// ANCHOR_END: connection

/// A registered (or registering) client, as its handler sees it.
struct Client {
    id: u64,
    nick: Option<String>,
    out: mpsc::Sender<String>,
    /// The rooms it has joined (only a member may set a room's slow mode).
    joined: BTreeSet<String>,
}

// ANCHOR: slow
/// The longest slow mode `SLOW` accepts, in seconds.
const MAX_SLOW: u64 = 3600;

impl Hub {
    /// `SLOW room seconds`: one line per member every `seconds`; 0 turns it
    /// off. The answer for the client who asked.
    fn set_slow(&self, room: &str, seconds: &str) -> String {
        let Some(n) = seconds.parse::<u64>().ok().filter(|&n| n <= MAX_SLOW) else {
            return format!("SLOW {room} SECONDS: 0 to {MAX_SLOW}, 0 turns it off");
        };
        let mut slow = self.slow.lock().unwrap();
        if n == 0 {
            slow.remove(room);
            return format!("{room} is no longer in slow mode");
        }
        let quota = Quota::new(1, Duration::from_secs(n), 1).expect("1 per n s is valid");
        slow.insert(room.to_owned(), Limiter::new(Gcra::new(quota), 10_000));
        format!("{room} is in slow mode: one line every {n}s per member")
    }

    /// None if `id` may post in `room` now (a slow room then counts the
    /// line); otherwise how long until it may. A refused line costs nothing.
    fn slow_wait(&self, room: &str, id: u64) -> Option<Duration> {
        let slow = self.slow.lock().unwrap();
        match slow.get(room)?.check(&id, 1) {
            Decision::Denied { retry_after, .. } => Some(retry_after),
            Decision::Allowed { .. } | Decision::Queued { .. } => None,
        }
    }
}
// ANCHOR_END: slow

/// Handle one line; false when the client quit.
fn handle(client: &mut Client, hub: &Hub, line: &str) -> bool {
    let (command, params) = parse(line);
    let reply = |text: String| {
        let _ = client.out.send(text);
    };
    match (command.as_str(), client.nick.clone()) {
        ("QUIT", _) => {
            reply("ERROR :Closing link: (Quit)".into());
            return false;
        }
        ("PING", _) => reply(format!("PONG :{}", params.first().map_or("", |p| p))),
        ("NICK", None) if !params.is_empty() => {
            reply(format!(":chat.local 001 {} :Welcome", params[0]));
            client.nick = Some(params[0].clone());
        }
        ("USER", _) => {}
        (_, None) => reply(":chat.local 451 * :You have not registered".into()),
        ("JOIN", Some(nick)) if !params.is_empty() => {
            hub.rooms.join(&params[0], client.id, &nick, &client.out);
            client.joined.insert(params[0].clone());
        }
        // ANCHOR: slow_commands
        ("SLOW", Some(nick)) if params.len() == 2 => {
            let room = &params[0];
            if client.joined.contains(room) {
                let answer = hub.set_slow(room, &params[1]);
                reply(format!(":chat.local NOTICE {nick} :{answer}"));
            } else {
                reply(format!(
                    ":chat.local 442 {nick} {room} :You're not on that channel"
                ));
            }
        }
        ("PRIVMSG", Some(nick)) if params.len() == 2 && client.joined.contains(&params[0]) => {
            let room = &params[0];
            if let Some(wait) = hub.slow_wait(room, client.id) {
                // Whole seconds, rounded up: "wait 0s" would be wrong.
                let secs = wait.as_millis().div_ceil(1000);
                reply(format!(
                    ":chat.local 404 {nick} {room} :Slow mode: wait {secs}s before your next line"
                ));
            } else {
                hub.rooms.say(room, client.id, &nick, &params[1]);
            }
        }
        // ANCHOR_END: slow_commands
        ("PRIVMSG", Some(nick)) if params.len() == 2 => {
            if !hub.rooms.say(&params[0], client.id, &nick, &params[1]) {
                reply(format!(
                    ":chat.local 404 {nick} {} :Cannot send to channel",
                    params[0]
                ));
            }
        }
        (other, Some(nick)) => reply(format!(":chat.local 421 {nick} {other} :Unknown command")),
    }
    true
}

/// Bind `addr` and serve every client in its own coroutine, forever.
fn start(addr: &str, flood: Flood) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let hub = Arc::new(Hub {
        rooms: Rooms::default(),
        flood,
        limiter: Limiter::new(Gcra::new(flood.quota), 10_000),
        slow: Mutex::new(HashMap::new()),
    });
    let ids = AtomicU64::new(1);
    go!(move || {
        for stream in listener.incoming().flatten() {
            let (id, hub) = (ids.fetch_add(1, Ordering::Relaxed), hub.clone());
            go!(move || serve(stream, id, hub));
        }
    });
    Ok(local)
}

// ANCHOR: demo
/// alice puts #lobby in slow mode (`seconds`) and sends two lines at once:
/// the second is refused. bob's line in between goes through (the turn is
/// per member). After `seconds` alice may post again; then she turns slow
/// mode off and two lines at once both go. What each of them saw.
fn demo(addr: SocketAddr, seconds: u64) -> io::Result<(Vec<String>, Vec<String>)> {
    let mut bob = Bot::join(addr, "bob", "#lobby")?;
    let mut alice = Bot::join(addr, "alice", "#lobby")?;
    let mut seen_by_alice = Vec::new();
    alice.send(&format!("SLOW #lobby {seconds}"))?;
    seen_by_alice.push(alice.wait_for("slow mode")?);
    alice.send("PRIVMSG #lobby :first\r\nPRIVMSG #lobby :second")?;
    seen_by_alice.push(alice.wait_for(" 404 ")?);
    bob.send("PRIVMSG #lobby :bob is not slowed by alice's turn")?;
    seen_by_alice.push(alice.wait_for(":bob ")?);
    std::thread::sleep(Duration::from_secs(seconds)); // on the main thread, not a coroutine
    alice.send("PRIVMSG #lobby :third")?;
    alice.send("SLOW #lobby 0")?;
    seen_by_alice.push(alice.wait_for("no longer")?);
    alice.send("PRIVMSG #lobby :fourth\r\nPRIVMSG #lobby :fifth")?;
    let mut seen_by_bob = bob.until(":fifth")?;
    seen_by_bob.retain(|line| line.contains("PRIVMSG"));
    Ok((seen_by_alice, seen_by_bob))
}
// ANCHOR_END: demo

/// 5 lines a second, 5 at once, and at most 2 s of fake lag.
fn flood_rule() -> Flood {
    Flood {
        quota: Quota::per_second(5, 5).expect("a valid quota"),
        max_lag: Duration::from_secs(2),
    }
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, addr] = args.as_slice() {
        if flag == "--serve" {
            match start(addr, flood_rule()) {
                Ok(local) => {
                    println!("serving on {local}, flood rule {}", flood_rule().quota);
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    eprintln!("exercise2_slow_mode_solution: cannot listen on {addr}: {e}");
                    std::process::exit(2);
                }
            }
        }
    }
    if !args.is_empty() {
        eprintln!("usage: exercise2_slow_mode_solution [--serve ADDR]");
        std::process::exit(2);
    }
    let addr = start("127.0.0.1:0", flood_rule()).expect("the server starts");
    let (alice, bob) = demo(addr, 2).expect("the demo runs");
    println!("alice saw:");
    for line in alice {
        println!("  {line}");
    }
    println!("bob saw:");
    for line in bob {
        println!("  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ANCHOR: slow_tests
    #[test]
    fn a_line_too_early_is_refused_and_others_are_not_slowed() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", flood_rule()).unwrap();
        let (alice, bob) = demo(addr, 1).unwrap();
        assert!(
            alice[1].contains(" 404 alice #lobby :Slow mode: wait 1s"),
            "{alice:?}"
        );
        let said: Vec<&str> = bob.iter().map(|l| l.rsplit(':').next().unwrap()).collect();
        // "second" was refused, not delayed: bob never gets it.
        assert_eq!(said, ["first", "third", "fourth", "fifth"], "{bob:?}");
        assert!(alice[2].contains("bob is not slowed"), "{alice:?}");
    }

    #[test]
    fn only_a_member_sets_slow_mode_and_the_number_is_checked() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", flood_rule()).unwrap();
        let mut bob = Bot::join(addr, "bob", "#a").unwrap();
        bob.send("SLOW #b 5").unwrap();
        assert!(bob.wait_for("#b").unwrap().contains(" 442 bob #b "));
        for bad in ["-1", "x", "3601"] {
            bob.send(&format!("SLOW #a {bad}")).unwrap();
            let answer = bob.wait_for("NOTICE").unwrap();
            assert!(answer.contains("SECONDS: 0 to 3600"), "{bad}: {answer}");
        }
        // Not slow after all that: two lines at once both go.
        let mut carol = Bot::join(addr, "carol", "#a").unwrap();
        bob.send("PRIVMSG #a :one\r\nPRIVMSG #a :two").unwrap();
        carol.wait_for(":one").unwrap();
        carol.wait_for(":two").unwrap();
    }

    #[test]
    fn a_refused_line_does_not_use_the_turn() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", flood_rule()).unwrap();
        let mut bob = Bot::join(addr, "bob", "#a").unwrap();
        let mut carol = Bot::join(addr, "carol", "#a").unwrap();
        bob.send("SLOW #a 1\r\nPRIVMSG #a :one").unwrap();
        carol.wait_for(":one").unwrap();
        // Refused at 0.5 s; if that had counted, 1.1 s would be refused too.
        std::thread::sleep(Duration::from_millis(500));
        bob.send("PRIVMSG #a :early").unwrap();
        assert!(bob.wait_for(" 404 ").unwrap().contains("wait 1s"));
        std::thread::sleep(Duration::from_millis(600));
        bob.send("PRIVMSG #a :on time").unwrap();
        let next = carol.line().unwrap().unwrap();
        assert!(next.ends_with(":on time"), "{next}");
    }
    // ANCHOR_END: slow_tests

    #[test]
    fn a_slow_mode_ends_with_its_room() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", flood_rule()).unwrap();
        let mut bob = Bot::join(addr, "bob", "#a").unwrap();
        bob.send("SLOW #a 3600\r\nQUIT").unwrap();
        // The server closes bob's socket after it has taken him out of his
        // rooms: #a is gone then, and its slow mode must be gone with it
        // (anyone may set one, so one kept per room ever made would grow).
        while bob.line().unwrap().is_some() {}
        let mut carol = Bot::join(addr, "carol", "#a").unwrap();
        let mut dave = Bot::join(addr, "dave", "#a").unwrap();
        carol.send("PRIVMSG #a :one\r\nPRIVMSG #a :two").unwrap();
        dave.wait_for(":one").unwrap();
        dave.wait_for(":two").unwrap();
    }
}
