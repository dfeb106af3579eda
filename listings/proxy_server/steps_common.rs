//! What the forward proxy's steps share, written once: the servers of each
//! demo and the scripted client. A step includes this file with
//! `#[path = "steps_common.rs"] mod steps_common;`.
//!
//! - [`Service`]: a server on `may_patterns::server::run`, on its own
//!   thread, stopped when dropped (each step's proxy, and the origins).
//! - [`start_origin`]: the HTTP origin every step talks to. It records each
//!   request head it saw, counts its connections, streams a request body
//!   into a checksum, and answers `/bytes/N` (N bytes, sized) and
//!   `/chunked/N` (N bytes, chunked) from a generated pattern, anything
//!   else with a short text.
//! - [`Client`]: a scripted client on a std socket, run on the main thread
//!   (never on a coroutine), whose reads time out.
//! - [`Checksum`] and [`send_pattern`]: bodies of any size generated and
//!   checked through one small buffer, so no side holds a whole body.

// Each step uses only some of these.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use may::net::TcpListener;
use may_patterns::http::{
    read_request_head, read_response_head, response_framing, write_head, BodyReader, ChunkedWriter,
    Limits, ResponseHead,
};
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;

/// A bound on every wait of a demo or a test: each expected byte comes in
/// microseconds, so a missing one fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// Each side's one buffer for streaming a body.
pub const BUF: usize = 16 * 1024;

// ANCHOR: service
/// A server running `handler` per connection on its own thread; dropping
/// it stops the server and waits until every connection has ended.
pub struct Service {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<io::Result<server::Report>>>,
}

impl Service {
    /// Listen on `addr` (`127.0.0.1:0` in demos and tests) and serve.
    pub fn start(addr: &str, handler: impl Fn(Conn) + Send + Sync + 'static) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread =
            std::thread::spawn(move || server::run(listener, &stop, Config::default(), handler));
        Ok(Service {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
// ANCHOR_END: service

/// FNV-1a over a stream: enough to show a body arrived byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Read `body` to its end through `buf`: how many bytes, and their sum.
    pub fn of(body: &mut impl Read, buf: &mut [u8]) -> io::Result<(u64, Checksum)> {
        let (mut total, mut sum) = (0, Checksum::default());
        loop {
            match body.read(buf)? {
                0 => return Ok((total, sum)),
                n => {
                    sum.update(&buf[..n]);
                    total += n as u64;
                }
            }
        }
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The generated body: byte `i` is `i * 31 % 251`, so a byte out of place
/// changes the checksum.
fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

/// Write `len` pattern bytes to `to` (flushed) through one `BUF` buffer;
/// their checksum.
pub fn send_pattern(to: &mut impl Write, len: u64) -> io::Result<Checksum> {
    let mut buf = vec![0u8; BUF];
    let (mut sent, mut sum) = (0u64, Checksum::default());
    while sent < len {
        let n = (len - sent).min(BUF as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(sent + i as u64);
        }
        to.write_all(&buf[..n])?;
        sum.update(&buf[..n]);
        sent += n as u64;
    }
    to.flush()?;
    Ok(sum)
}

/// The checksum of `len` pattern bytes, without sending them.
pub fn pattern_checksum(len: u64) -> Checksum {
    send_pattern(&mut io::sink(), len).expect("a sink never fails")
}

/// The origin of every demo, and what it saw.
pub struct Origin {
    pub service: Service,
    /// Each request head as it arrived: the request line, then `Name: value`.
    pub seen: Arc<Mutex<Vec<Vec<String>>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
}

impl Origin {
    pub fn addr(&self) -> SocketAddr {
        self.service.addr
    }

    /// The heads seen so far, taken.
    pub fn take_seen(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The largest request body the origin reads (it only checksums them).
pub const ORIGIN_BODY_CAP: u64 = 1 << 30;

pub fn start_origin() -> io::Result<Origin> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicU64::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    let service = Service::start("127.0.0.1:0", move |conn| {
        c.fetch_add(1, Ordering::SeqCst);
        let _ = origin_connection(conn, &s);
    })?;
    Ok(Origin {
        service,
        seen,
        connections,
    })
}

/// Serve requests on one connection until the client closes or asks to.
fn origin_connection(conn: Conn, seen: &Mutex<Vec<Vec<String>>>) -> io::Result<()> {
    conn.set_idle_timeout(Some(WAIT))?;
    let (reader, writer) = conn.split()?;
    let (mut reader, mut writer) = (BufReader::new(reader), BufWriter::new(writer));
    let limits = Limits::default();
    let mut buf = vec![0u8; BUF];
    while let Some(head) = read_request_head(&mut reader, &limits)? {
        let mut lines = vec![format!(
            "{} {} HTTP/1.{}",
            head.method, head.target, head.version
        )];
        lines.extend(head.headers.iter().map(|(n, v)| format!("{n}: {v}")));
        seen.lock().unwrap().push(lines);
        let mut body = BodyReader::new(&mut reader, head.framing()?, ORIGIN_BODY_CAP, &limits);
        let (received, sum) = Checksum::of(&mut body, &mut buf)?;
        let mut headers = vec![("Content-Type".to_owned(), "text/plain".to_owned())];
        if received > 0 {
            let got = format!("{received} bytes, checksum {sum}");
            headers.push(("X-Received".to_owned(), got));
        }
        let path = head.target.as_str();
        let generated = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(len) = generated("/bytes/") {
            headers.push(("Content-Length".to_owned(), len.to_string()));
            write_head(&mut writer, "HTTP/1.1 200 OK", &headers)?;
            send_pattern(&mut writer, len)?;
        } else if let Some(len) = generated("/chunked/") {
            headers.push(("Transfer-Encoding".to_owned(), "chunked".to_owned()));
            write_head(&mut writer, "HTTP/1.1 200 OK", &headers)?;
            let mut chunked = ChunkedWriter::new(&mut writer);
            send_pattern(&mut chunked, len)?;
            chunked.finish()?.flush()?;
        } else {
            let text = "hello from the origin\n";
            headers.push(("Content-Length".to_owned(), text.len().to_string()));
            write_head(&mut writer, "HTTP/1.1 200 OK", &headers)?;
            writer.write_all(text.as_bytes())?;
            writer.flush()?;
        }
        if !head.keep_alive() {
            break;
        }
    }
    Ok(())
}

/// A response as the client got it, its body whole (demo bodies are small).
pub struct Got {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

impl Got {
    /// The status line and headers, one per line.
    pub fn head_lines(&self) -> Vec<String> {
        let h = &self.head;
        let mut lines = vec![format!("HTTP/1.{} {} {}", h.version, h.status, h.reason)];
        lines.extend(h.headers.iter().map(|(n, v)| format!("{n}: {v}")));
        lines
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        may_patterns::http::header(&self.head.headers, name)
    }
}

/// The biggest body [`Client::response`] keeps.
pub const CLIENT_BODY_CAP: u64 = 1 << 20;

/// A scripted client on a std socket, for the main thread only.
pub struct Client {
    pub reader: BufReader<std::net::TcpStream>,
    pub writer: std::net::TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let writer = std::net::TcpStream::connect(addr)?;
        writer.set_read_timeout(Some(WAIT))?;
        writer.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// The next response head (interim `100 Continue` included).
    pub fn head(&mut self) -> io::Result<ResponseHead> {
        read_response_head(&mut self.reader, &Limits::default())
    }

    /// The body that follows `head` (the answer to a `method` request).
    pub fn body_reader(
        &mut self,
        method: &str,
        head: &ResponseHead,
        cap: u64,
    ) -> io::Result<BodyReader<'_, BufReader<std::net::TcpStream>>> {
        let framing = response_framing(method, head.status, &head.headers)?;
        Ok(BodyReader::new(
            &mut self.reader,
            framing,
            cap,
            &Limits::default(),
        ))
    }

    /// The next whole response to a `method` request.
    pub fn response(&mut self, method: &str) -> io::Result<Got> {
        let head = self.head()?;
        let mut body = Vec::new();
        self.body_reader(method, &head, CLIENT_BODY_CAP)?
            .read_to_end(&mut body)?;
        Ok(Got { head, body })
    }

    /// Send `request` and read its answer.
    pub fn exchange(&mut self, method: &str, request: &str) -> io::Result<Got> {
        self.send(request.as_bytes())?;
        self.response(method)
    }

    /// Whether the proxy has closed the connection: EOF with nothing left.
    pub fn closed(&mut self) -> io::Result<bool> {
        Ok(self.reader.fill_buf()?.is_empty())
    }
}

/// A step's `main`: with no arguments run `demo`; with `--serve ADDR` run
/// the proxy `start` makes until Ctrl-C.
pub fn main_of(name: &str, demo: impl FnOnce(), start: impl FnOnce(&str) -> io::Result<Service>) {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => demo(),
        [flag, addr] if flag == "--serve" => match start(addr) {
            Ok(proxy) => {
                println!(
                    "{name} on {}: try `curl -x http://{0} http://...`",
                    proxy.addr
                );
                let (tx, rx) = std::sync::mpsc::channel();
                ctrlc::set_handler(move || {
                    let _ = tx.send(());
                })
                .expect("a Ctrl-C handler");
                let _ = rx.recv();
            }
            Err(e) => {
                eprintln!("{name}: cannot listen on {addr}: {e}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: {name} [--serve ADDR]");
            std::process::exit(2);
        }
    }
}

/// Print `title:` and `lines` indented under it.
pub fn show(title: &str, lines: &[String]) {
    println!("{title}:");
    for line in lines {
        println!("  {line}");
    }
}
