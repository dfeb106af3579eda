//! Step 1: one room. Every line a client sends goes to every other client,
//! prefixed with the sender's name (`guest1`, `guest2`, ... in the order they
//! connected). Any line-based client works: `nc 127.0.0.1 6667` is enough.
//!
//! The clients' sockets sit in one shared list, and the reader that got a
//! line writes it to every other socket itself, holding the list's lock.
//! That is the simplest thing that works, and it is wrong in a way step 4
//! measures: one client that stops reading stalls everyone.
//!
//! With no arguments it runs a demo: three scripted clients on loopback.
//! With `--serve ADDR` it serves real clients until Ctrl-C.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::net::TcpListener;
use may::sync::Mutex;
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Config, Conn, WriteHalf};
use may_patterns::shutdown::Shutdown;

/// RFC 1459: a line is at most 512 bytes with its CRLF. Longer ones are
/// refused, so no client decides how much the server buffers.
const MAX_LINE: usize = 512;

// ANCHOR: room
/// The writing half of every connected client's socket; each client's
/// own coroutine keeps the reading half. A may `Mutex`, because a broadcast
/// holds it across socket writes, and a write that has to wait parks the
/// coroutine: a std mutex held across that park would block every worker
/// thread that tried to take it.
#[derive(Clone, Default)]
struct Room {
    clients: Arc<Mutex<Vec<(u64, WriteHalf)>>>,
}

impl Room {
    /// Write `line` to every client but `from`.
    ///
    /// Naive on purpose: the lock is held while writing to each socket in
    /// turn, and a write blocks once the receiver's kernel buffers are
    /// full. A client that stops reading therefore stalls this call, every
    /// other broadcast waiting for the lock, and so every client (step 4).
    fn broadcast(&self, from: u64, line: &str) {
        let mut clients = self.clients.lock().unwrap();
        for (id, socket) in clients.iter_mut() {
            if *id != from {
                // A client that has gone is removed by its own coroutine.
                let _ = socket.write_all(format!("{line}\r\n").as_bytes());
            }
        }
    }

    /// Take `id` out of the room, handing back its writing half.
    fn leave(&self, id: u64) -> Option<WriteHalf> {
        let mut clients = self.clients.lock().unwrap();
        let at = clients.iter().position(|(other, _)| *other == id)?;
        Some(clients.swap_remove(at).1)
    }
}
// ANCHOR_END: room

// ANCHOR: client
/// One client, on its own coroutine: join the room, pass every line on,
/// leave when the client closes (or sends a line past `MAX_LINE`).
fn client(conn: Conn, id: u64, room: &Room) -> io::Result<()> {
    let name = format!("guest{id}");
    let (reader, mut writer) = conn.split()?;
    {
        let mut clients = room.clients.lock().unwrap();
        let others = clients.len();
        writer.write_all(format!("* you are {name}, {others} other(s) here\r\n").as_bytes())?;
        clients.push((id, writer));
    }
    room.broadcast(id, &format!("* {name} joined"));
    let mut reader = BufReader::new(reader);
    let last_words = loop {
        match read_line(&mut reader)? {
            Line::Text(text) => room.broadcast(id, &format!("{name}: {text}")),
            Line::TooLong => break Some(format!("* line longer than {MAX_LINE} bytes, closing")),
            Line::End => break None,
        }
    };
    if let (Some(mut writer), Some(line)) = (room.leave(id), last_words) {
        let _ = writer.write_all(format!("{line}\r\n").as_bytes());
        writer.close();
    }
    room.broadcast(id, &format!("* {name} left"));
    Ok(())
}
// ANCHOR_END: client

/// What one read of a line gave.
enum Line {
    /// A line, without its CR/LF; bytes that are not UTF-8 become U+FFFD.
    Text(String),
    /// More than `MAX_LINE` bytes without a line feed.
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
        // A reset or a shut socket ends the client like an EOF does.
        Err(e) if e.kind() != io::ErrorKind::Interrupted => return Ok(Line::End),
        Err(e) => return Err(e),
    }
    if buf.last() != Some(&b'\n') {
        // MAX_LINE bytes and no end in sight, or an EOF mid-line.
        return Ok(if buf.len() == MAX_LINE {
            Line::TooLong
        } else {
            Line::End
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Text(String::from_utf8_lossy(&buf).into_owned()))
}

// ANCHOR: serve
/// Accept clients until `shutdown`, each on its own coroutine, with the
/// book's accept loop, `may_patterns::server`: it caps connections, backs
/// off when descriptors run out, and on shutdown closes every socket and
/// returns once every client's coroutine has ended.
fn serve(listener: TcpListener, shutdown: &Shutdown) -> io::Result<server::Report> {
    let room = Room::default();
    let next_id = AtomicU64::new(1);
    server::run(listener, shutdown, Config::default(), move |conn| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let _ = client(conn, id, &room);
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
fn start(addr: &str, shutdown: &Shutdown) -> io::Result<Running> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    let thread = std::thread::spawn(move || serve(listener, &shutdown));
    Ok(Running { addr, thread })
}

// ANCHOR: demo
/// The demo: three clients connect one after the other, guest1 says hello,
/// guest3 sends a line past the limit and is closed. Returns what each saw.
fn demo(addr: SocketAddr) -> io::Result<Vec<Vec<String>>> {
    let mut one = Client::connect(addr)?;
    one.expect("* you are guest1, 0 other(s) here")?;
    let mut two = Client::connect(addr)?;
    two.expect("* you are guest2, 1 other(s) here")?;
    one.expect("* guest2 joined")?;
    let mut three = Client::connect(addr)?;
    three.expect("* you are guest3, 2 other(s) here")?;
    one.expect("* guest3 joined")?;
    two.expect("* guest3 joined")?;

    one.send("hello, room")?;
    two.expect("guest1: hello, room")?;
    three.expect("guest1: hello, room")?;

    three.send(&"x".repeat(600))?;
    three.expect(&format!("* line longer than {MAX_LINE} bytes, closing"))?;
    one.expect("* guest3 left")?;
    two.expect("* guest3 left")?;
    Ok(vec![one.seen, two.seen, three.seen])
}
// ANCHOR_END: demo

/// A scripted client on a plain OS thread (std sockets block their thread,
/// which is fine off may's workers), keeping every line it received.
struct Client {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    seen: Vec<String>,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Client> {
        let writer = std::net::TcpStream::connect(addr)?;
        // A bound, not a synchronisation: every expected line comes in
        // microseconds, and a missing one fails the demo instead of hanging.
        writer.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            reader: BufReader::new(writer.try_clone()?),
            writer,
            seen: Vec::new(),
        })
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    /// Read the next line and check it is `want`.
    fn expect(&mut self, want: &str) -> io::Result<()> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        self.seen.push(line.clone());
        if line == want {
            Ok(())
        } else {
            let msg = format!("expected {want:?}, got {line:?}");
            Err(io::Error::new(io::ErrorKind::InvalidData, msg))
        }
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
                    println!("one room on {}: try `nc {0}`", server.addr);
                    let _ = server.thread.join();
                }
                Err(e) => {
                    eprintln!("step1_one_room: cannot listen on {addr}: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: step1_one_room [--serve ADDR]");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_line_reaches_every_other_client_and_not_its_sender() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown).unwrap();
        let seen = demo(server.addr).unwrap();
        assert!(
            !seen[0].iter().any(|l| l.starts_with("guest1:")),
            "{seen:?}"
        );
        assert!(seen[1].contains(&"guest1: hello, room".to_string()));
        assert!(seen[2].contains(&"guest1: hello, room".to_string()));
        shutdown.trigger();
    }

    #[test]
    fn a_line_past_the_limit_is_refused_and_a_line_at_it_passes() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let addr = start("127.0.0.1:0", &shutdown).unwrap().addr;
        let mut one = Client::connect(addr).unwrap();
        one.expect("* you are guest1, 0 other(s) here").unwrap();
        let mut two = Client::connect(addr).unwrap();
        two.expect("* you are guest2, 1 other(s) here").unwrap();
        one.expect("* guest2 joined").unwrap();
        // 510 bytes and the CRLF: exactly the limit.
        let longest = "y".repeat(MAX_LINE - 2);
        two.send(&longest).unwrap();
        one.expect(&format!("guest2: {longest}")).unwrap();
        two.send(&"y".repeat(MAX_LINE)).unwrap();
        two.expect("* line longer than 512 bytes, closing").unwrap();
        one.expect("* guest2 left").unwrap();
        shutdown.trigger();
    }

    #[test]
    fn stopping_the_server_closes_every_client() {
        configure_for_tests();
        let shutdown = Shutdown::new();
        let server = start("127.0.0.1:0", &shutdown).unwrap();
        let mut one = Client::connect(server.addr).unwrap();
        one.expect("* you are guest1, 0 other(s) here").unwrap();
        shutdown.trigger();
        let mut rest = String::new();
        // EOF, well inside the client's 5 s read timeout.
        assert_eq!(one.reader.read_to_string(&mut rest).unwrap(), 0, "{rest:?}");
        // `run` returned: the client's coroutine has ended too.
        let report = server.thread.join().unwrap().unwrap();
        assert_eq!(report.accepted, 1);
    }
}
