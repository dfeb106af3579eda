//! Step 6: flood control. Every line a client sends costs one unit of that
//! client's quota (GCRA, from `may_patterns::ratelimit`). A line within the
//! quota is handled at once; a line past it waits its turn ("fake lag", as
//! ircds call it), so a fast paste slows down instead of failing; a client
//! whose next turn would be more than `max_lag` away is cut with
//! "Excess Flood". The rest is a small server in the manner of step 3:
//! NICK and USER, JOIN, PRIVMSG to a room, PING, QUIT, a writer coroutine
//! per client; its line reader, parser, rooms and test client are in
//! `steps_common.rs`, shared by steps 6 to 10.
//!
//! With no arguments it runs a demo: a flooding client beside a normal one.
//! With `--serve ADDR` it serves real clients until stopped.

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::mpsc;
use may_patterns::ratelimit::{Gcra, Limiter, Quota, Reservation};
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
    };
    handle_lines(turns_in, &mut client, &hub, &cut);
    hub.rooms.leave_all(id);
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
}

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
            hub.rooms.join(&params[0], client.id, &nick, &client.out)
        }
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
/// What bob saw of each sender, as times since the floods were sent.
#[derive(Default)]
struct Seen {
    spam: Vec<Duration>,
    paste: Vec<Duration>,
    hello_latency: Vec<Duration>,
    mallory_last: String,
}

/// mallory sends `flood` lines at once, carol pastes `PASTE` lines, and
/// alice sends one line every 300 ms; bob, in the same room, notes when
/// each arrives.
fn demo(addr: SocketAddr, flood: usize) -> io::Result<Seen> {
    let mut bob = Bot::join(addr, "bob", "#lobby")?;
    let mut alice = Bot::join(addr, "alice", "#lobby")?;
    let mut mallory = Bot::join(addr, "mallory", "#lobby")?;
    let mut carol = Bot::join(addr, "carol", "#lobby")?;
    let lines = |word: &str, n: usize| -> String {
        (0..n)
            .map(|i| format!("PRIVMSG #lobby :{word} {i}\r\n"))
            .collect()
    };
    let start = Instant::now();
    mallory.writer.write_all(lines("spam", flood).as_bytes())?;
    carol.writer.write_all(lines("paste", PASTE).as_bytes())?;
    let sent = Arc::new(Mutex::new(Vec::new())); // alice's send times
    let alice_done = {
        let sent = sent.clone();
        std::thread::spawn(move || -> io::Result<Bot> {
            for i in 0..5 {
                sent.lock().unwrap().push(Instant::now());
                alice.send(&format!("PRIVMSG #lobby :hello {i}"))?;
                std::thread::sleep(Duration::from_millis(300)); // a person's pace, on an OS thread
            }
            Ok(alice)
        })
    };
    let mut seen = Seen {
        mallory_last: mallory.wait_for("ERROR")?,
        ..Seen::default()
    };
    while seen.paste.len() < PASTE || seen.hello_latency.len() < 5 {
        let line = bob.line()?.unwrap_or_default();
        if line.contains(":spam") {
            seen.spam.push(start.elapsed());
        } else if line.contains(":paste") {
            seen.paste.push(start.elapsed());
        } else if line.contains(":hello") {
            let at = sent.lock().unwrap()[seen.hello_latency.len()];
            seen.hello_latency.push(at.elapsed());
        }
    }
    alice_done.join().expect("alice's thread")?;
    Ok(seen)
}
// ANCHOR_END: demo

/// Lines carol pastes: more than the burst, less than 2 s of lag.
const PASTE: usize = 8;

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
                    eprintln!("step6_flood_control: cannot listen on {addr}: {e}");
                    std::process::exit(2);
                }
            }
        }
    }
    if !args.is_empty() {
        eprintln!("usage: step6_flood_control [--serve ADDR]");
        std::process::exit(2);
    }
    let addr = start("127.0.0.1:0", flood_rule()).expect("the server starts");
    println!("flood rule: {}, at most 2s of fake lag", flood_rule().quota);
    let seen = demo(addr, 100).expect("the demo runs");
    let spread = |times: &[Duration]| times.last().zip(times.first()).map(|(l, f)| *l - *f);
    println!(
        "carol pasted {PASTE} lines: bob got all {}, the last {:.1?} after the first (fake lag)",
        seen.paste.len(),
        spread(&seen.paste).unwrap_or_default()
    );
    println!(
        "mallory sent 100 lines at once: bob got ~{} of them, then mallory read:",
        seen.spam.len()
    );
    println!("  {}", seen.mallory_last);
    let worst = seen.hello_latency.iter().max().copied().unwrap_or_default();
    println!("alice sent 5 lines meanwhile: the slowest reached bob after {worst:.1?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick_rule() -> Flood {
        Flood {
            quota: Quota::per_second(20, 5).unwrap(),
            max_lag: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_paste_is_slowed_a_flood_is_cut_and_others_are_not_delayed() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", quick_rule()).unwrap();
        let seen = demo(addr, 200).unwrap();
        // The paste: all of it, at most 5 at once, then one per 50 ms.
        let spread = *seen.paste.last().unwrap() - seen.paste[0];
        assert!(
            spread >= Duration::from_millis(100),
            "fake lag spreads it: {spread:?}"
        );
        // The flood: what was due before the cut, never all 200.
        assert!(seen.spam.len() < 20, "{:?}", seen.spam);
        assert!(
            seen.mallory_last.contains("Excess Flood"),
            "{}",
            seen.mallory_last
        );
        let worst = seen.hello_latency.iter().max().unwrap();
        assert!(
            *worst < Duration::from_millis(150),
            "alice waited {worst:?}"
        );
    }

    #[test]
    fn lines_within_the_quota_are_not_delayed() {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        let addr = start("127.0.0.1:0", quick_rule()).unwrap();
        let mut bob = Bot::join(addr, "bob", "#t").unwrap();
        let mut carol = Bot::join(addr, "carol", "#t").unwrap();
        std::thread::sleep(Duration::from_millis(300)); // carol's quota refills
        let start = Instant::now();
        carol
            .send("PRIVMSG #t :a\r\nPRIVMSG #t :b\r\nPRIVMSG #t :c")
            .unwrap();
        bob.wait_for(":c").unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "{:?}",
            start.elapsed()
        );
    }
}
