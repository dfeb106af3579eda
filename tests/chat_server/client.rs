//! A minimal IRC client for the tests: raw lines over a std socket (the
//! test process is not a may program), every wait bounded.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::run::STUCK;

pub struct Client {
    pub nick: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Every line received, in order (without CRLF).
    pub seen: Vec<String>,
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Client {
    /// Connect (no registration).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, STUCK).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Client {
            nick: String::new(),
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            seen: Vec::new(),
            partial: Vec::new(),
        }
    }

    /// Connect and register as `nick`; returns once 001 arrived and the
    /// end of the MOTD (376) or its absence (422) was seen.
    pub fn register(addr: SocketAddr, nick: &str) -> Client {
        let mut client = Client::connect(addr);
        client.nick = nick.to_owned();
        client.send(&format!("NICK {nick}"));
        client.send(&format!("USER {nick} 0 * :{nick} test"));
        client.expect(|m| m.command == "001");
        client.expect(|m| m.command == "376" || m.command == "422");
        client
    }

    /// Send one line (CRLF added).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("the server takes the line");
    }

    /// The next line, or None after `wait` with nothing (or at EOF).
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => return None,
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = String::from_utf8_lossy(&self.partial)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    self.partial.clear();
                    self.seen.push(line.clone());
                    return Some(line);
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Read until a line matching `pred` arrives (answering PINGs on the
    /// way); panics after [`STUCK`] with what was seen.
    pub fn expect(&mut self, pred: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + STUCK;
        while Instant::now() < deadline {
            let Some(raw) = self.line_within(Duration::from_millis(500)) else {
                if self.closed() {
                    break;
                }
                continue;
            };
            let line = Line::parse(&raw);
            if line.command == "PING" && !pred(&line) {
                let token = line.params.last().cloned().unwrap_or_default();
                self.send(&format!("PONG :{token}"));
                continue;
            }
            if pred(&line) {
                return line;
            }
        }
        panic!(
            "{}: the expected line never came; seen:\n{}",
            self.nick,
            self.seen.join("\n")
        );
    }

    /// Whether the server has closed the connection (reads return EOF or
    /// an error), checked without waiting long.
    pub fn closed(&mut self) -> bool {
        match self.reader.fill_buf() {
            Ok(buf) => buf.is_empty(),
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }

    /// Read until EOF (bounded); the lines read on the way are in `seen`.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + STUCK;
        while Instant::now() < deadline {
            if self.line_within(Duration::from_millis(200)).is_none() && self.closed() {
                return;
            }
        }
        panic!("{}: still open; seen:\n{}", self.nick, self.seen.join("\n"));
    }
}

/// One received line, split as the tests need it (tags dropped).
#[derive(Debug, Clone)]
pub struct Line {
    pub prefix: Option<String>,
    pub command: String,
    pub params: Vec<String>,
}

impl Line {
    pub fn parse(raw: &str) -> Line {
        let mut rest = raw;
        if rest.starts_with('@') {
            rest = rest.split_once(' ').map_or("", |(_, r)| r);
        }
        let mut prefix = None;
        if let Some(r) = rest.strip_prefix(':') {
            let (p, r) = r.split_once(' ').unwrap_or((r, ""));
            prefix = Some(p.to_owned());
            rest = r;
        }
        let (head, trailing) = match rest.split_once(" :") {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        let mut words = head.split(' ').filter(|w| !w.is_empty());
        let command = words.next().unwrap_or_default().to_ascii_uppercase();
        let mut params: Vec<String> = words.map(str::to_owned).collect();
        params.extend(trailing.map(str::to_owned));
        Line {
            prefix,
            command,
            params,
        }
    }

    /// The nick of the prefix (`nick!user@host` -> `nick`).
    pub fn nick(&self) -> &str {
        let prefix = self.prefix.as_deref().unwrap_or_default();
        prefix.split('!').next().unwrap_or_default()
    }
}
