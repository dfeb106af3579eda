//! A client that stops reading, for real: an `nc` process joins a room and
//! is frozen with `kill -STOP`. The server must cut it when its outbox
//! passes `--sendq` ("SendQ exceeded") and keep every other client's lines
//! flowing; nobody waits for the frozen one.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Client, Line};
use crate::run::{signal, ChatServer};

/// Lines the flooder sends and bytes of text in each: 25,000 x ~450 bytes
/// relayed is about 11 MB, more than the frozen client's kernel buffers
/// (a few MB on Linux loopback) plus its 64 KiB sendq.
const LINES: usize = 25_000;
const TEXT: usize = 400;
/// The flooder sends this many lines, then waits until the reading member
/// has them all: the member never lags, so only the frozen client can fill
/// an outbox.
const WINDOW: usize = 50;
/// The longest the member may wait for any one line.
const LINE_WAIT: Duration = Duration::from_secs(5);
/// The whole flood must be through by then.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);

/// `nc`, killed (SIGKILL works on a stopped process too) when dropped, so a
/// failing test leaves no stopped process behind.
struct Nc {
    child: Child,
    /// Held open: `nc` would end at the end of its input.
    stdin: ChildStdin,
}

impl Nc {
    fn connect(server: &ChatServer) -> Nc {
        let port = server.irc.port().to_string();
        let mut child = Command::new("nc")
            .args(["127.0.0.1", &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nc runs (Debian's netcat-openbsd; .ci/run installs it)");
        let stdin = child.stdin.take().unwrap();
        Nc { child, stdin }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}\r").expect("nc takes its input");
    }
}

impl Drop for Nc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_frozen_client_is_cut_with_sendq_exceeded_and_the_room_gets_every_line() {
    let mut server = ChatServer::start(&[
        "--sendq",
        "65536",
        // Far above the flood: the flooder must not be cut by flood control.
        "--flood-rate",
        "1000000/1s",
        "--history",
        "0",
    ]);
    let mut member = Client::register(server.irc, "member");
    member.send("JOIN #room");
    member.expect(|l| l.command == "JOIN" && l.nick() == "member");

    let mut frozen = Nc::connect(&server);
    frozen.send("NICK frozen");
    frozen.send("USER frozen 0 * :frozen by kill -STOP");
    frozen.send("JOIN #room");
    member.expect(|l| l.command == "JOIN" && l.nick() == "frozen");
    signal(frozen.child.id(), "STOP");

    let mut flooder = Client::register(server.irc, "flooder");
    flooder.send("JOIN #room");
    flooder.expect(|l| l.command == "JOIN" && l.nick() == "flooder");
    member.expect(|l| l.command == "JOIN" && l.nick() == "flooder");

    let padding = "x".repeat(TEXT - 7);
    let started = Instant::now();
    let mut quit: Option<String> = None;
    let mut next = 0;
    while next < LINES {
        assert!(started.elapsed() < FLOOD_LIMIT, "flood not through");
        let end = (next + WINDOW).min(LINES);
        for n in next..end {
            flooder.send(&format!("PRIVMSG #room :{n:06} {padding}"));
        }
        while next < end {
            let Some(raw) = member.line_within(LINE_WAIT) else {
                panic!("member waited {LINE_WAIT:?} for line {next} of {LINES}");
            };
            let line = Line::parse(&raw);
            match (line.command.as_str(), line.nick()) {
                ("PRIVMSG", "flooder") => {
                    let text = line.params.last().unwrap();
                    assert_eq!(&text[..6], format!("{next:06}"), "in order, none lost");
                    next += 1;
                }
                ("QUIT", "frozen") => quit = line.params.last().cloned(),
                ("PING", _) => member.send(&format!("PONG :{}", line.params[0])),
                _ => panic!("member got {raw:?}"),
            }
        }
    }
    let took = started.elapsed();
    if quit.is_none() {
        // The QUIT may come right after the last flood line.
        let line = member.expect(|l| l.command == "QUIT" && l.nick() == "frozen");
        quit = line.params.last().cloned();
    }
    assert_eq!(
        quit.as_deref(),
        Some("SendQ exceeded"),
        "member saw the cut"
    );
    let line = flooder.expect(|l| l.command == "QUIT" && l.nick() == "frozen");
    assert_eq!(
        line.params.last().map(String::as_str),
        Some("SendQ exceeded")
    );

    signal(frozen.child.id(), "CONT");
    drop(frozen);
    let report = server.stop();
    assert_eq!(report["sendq_cut"], 1, "only the frozen client: {report}");
    eprintln!("{LINES} lines of {TEXT} bytes through the room in {took:.1?}");
}
