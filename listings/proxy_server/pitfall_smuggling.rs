//! Pitfall: request smuggling (CL.TE). A front that finds a body's end by
//! `Content-Length` forwards to a back end that finds it by
//! `Transfer-Encoding: chunked`. A request that carries both headers is
//! one request to the front and two to the back end: the bytes the front
//! counted as body, the back end reads as a second request, which never
//! went through the front's checks. Its answer then waits on the shared
//! back-end connection and is handed to the next client.
//!
//! RFC 9112 6.3: when both headers are present, `Transfer-Encoding`
//! overrides `Content-Length` (the back end here does that), the message
//! "ought to be handled as an error", and an intermediary that forwards it
//! must drop the `Content-Length` first. `read_request_head` refuses it.
//!
//! Run it: `cargo run --example pitfall_smuggling`

#[path = "loopback_server.rs"]
mod loopback_server;

use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use may::net::TcpStream;
use may::sync::Mutex;
use may_patterns::http::{
    copy_body, read_request_head, read_response, set_framing, write_error, write_head,
    write_response, BodyReader, Framing, Limits,
};
use may_patterns::server::Conn;

use loopback_server::start;

/// A peer that sends nothing for this long is cut off.
const IDLE: Duration = Duration::from_secs(5);
/// The longest head the hand-written reader takes.
const HEAD_BYTES: u64 = 8 * 1024;
/// The longest body any server here reads.
const BODY_BYTES: u64 = 64 * 1024;

/// The request the front hides inside a body.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: shop.example\r\n\r\n";

// ANCHOR: attack
/// One request with both framings: by `Content-Length` its body is the
/// empty last chunk and the smuggled request; by `Transfer-Encoding` its
/// body ends at the empty last chunk, and the smuggled request follows.
fn attack() -> String {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    format!(
        "POST /search HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    )
}
// ANCHOR_END: attack

/// A request as the hand-written reader saw it.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        format!("{} {} HTTP/1.1\r\n{headers}\r\n", self.method, self.path)
    }
}

/// A lenient, hand-written head reader (the front's and the back end's):
/// lines up to the blank one, `Name: value` split at the first colon.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut text = String::new();
    let mut reader = reader.take(HEAD_BYTES);
    while !text.ends_with("\r\n\r\n") {
        if reader.read_line(&mut text)? == 0 {
            return match text.is_empty() {
                true => Ok(None),
                false => Err(io::Error::new(ErrorKind::UnexpectedEof, "head cut short")),
            };
        }
    }
    let mut lines = text.lines();
    let start: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let [method, path, _version] = start[..] else {
        return Err(io::Error::new(ErrorKind::InvalidData, "bad request line"));
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Some(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
    }))
}

/// Read the body `framing` delimits, at most `BODY_BYTES`.
fn read_body(reader: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let limits = Limits::default();
    BodyReader::new(reader, framing, BODY_BYTES, &limits).read_to_end(&mut body)?;
    Ok(body)
}

/// What a server read, one line per request, in order.
type Log = Arc<StdMutex<Vec<String>>>;

fn note(log: &Log, line: String) {
    log.lock()
        .expect("no one panics holding the log")
        .push(line);
}

// ANCHOR: back_end
/// The back end: `Transfer-Encoding` first, as RFC 9112 6.3 says, and
/// every request on a connection answered in turn.
fn back_end(conn: Conn, log: &Log) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let (input, mut output) = conn.split()?;
    let mut input = BufReader::new(input);
    while let Some(head) = read_head(&mut input)? {
        let chunked = head.header("transfer-encoding") == Some("chunked");
        let length = head.header("content-length").and_then(|v| v.parse().ok());
        let framing = match (chunked, length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::Empty,
        };
        let body = read_body(&mut input, framing)?;
        note(
            log,
            format!("{} {} ({} body bytes)", head.method, head.path, body.len()),
        );
        let page = match head.path.as_str() {
            "/admin" => "the admin page",
            "/account" => "your account",
            _ => "search results",
        };
        write_response(&mut output, 200, "OK", "text/plain", &[], page.as_bytes())?;
    }
    Ok(())
}
// ANCHOR_END: back_end

/// The one connection a front keeps to the back end, shared by every
/// client (a pool of one: enough to show the desync). A may `Mutex`: a
/// client's coroutine holds it while it parks on the back end's answer.
struct Upstream {
    input: BufReader<TcpStream>,
    output: TcpStream,
}

impl Upstream {
    fn connect(addr: SocketAddr) -> io::Result<Upstream> {
        let output = may_patterns::net::connect_timeout(&addr, IDLE)?;
        output.set_read_timeout(Some(IDLE))?;
        output.set_write_timeout(Some(IDLE))?;
        let input = BufReader::new(output.try_clone()?);
        Ok(Upstream { input, output })
    }
}

/// The front's rule: `/admin` is for the internal network only.
fn allowed(path: &str) -> bool {
    !path.starts_with("/admin")
}

/// Read the back end's next answer whole and pass it to the client.
fn relay_answer(from: &mut impl BufRead, to: &mut impl Write) -> io::Result<()> {
    let answer = read_response(from, &Limits::default())?;
    let (status, reason) = (answer.status, answer.reason.as_str());
    write_response(to, status, reason, "text/plain", &[], &answer.body)
}

// ANCHOR: naive_front
/// THE MISTAKE: a hand-written front that finds the body's end by
/// `Content-Length` alone and forwards the head as it came, with its
/// `Transfer-Encoding` still in it.
fn naive_front(conn: Conn, upstream: &Mutex<Upstream>, log: &Log) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let (input, mut output) = conn.split()?;
    let mut input = BufReader::new(input);
    while let Some(head) = read_head(&mut input)? {
        if !allowed(&head.path) {
            write_error(&mut output, 403, "Forbidden", &[], "internal only", true)?;
            return Ok(());
        }
        let length = head.header("content-length").and_then(|v| v.parse().ok());
        let body = read_body(&mut input, length.map_or(Framing::Empty, Framing::Length))?;
        note(
            log,
            format!("{} {} ({} body bytes)", head.method, head.path, body.len()),
        );
        let mut upstream = upstream.lock().expect("the upstream lock is not poisoned");
        let mut message = head.text().into_bytes();
        message.extend_from_slice(&body);
        upstream.output.write_all(&message)?;
        relay_answer(&mut upstream.input, &mut output)?;
    }
    Ok(())
}
// ANCHOR_END: naive_front

// ANCHOR: checked_front
/// The fix: `read_request_head` checks the framing before anything is
/// forwarded, and the body is re-framed by `set_framing` and `copy_body`.
fn checked_front(conn: Conn, upstream: &Mutex<Upstream>, log: &Log) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let (input, mut output) = conn.split()?;
    let mut input = BufReader::new(input);
    let limits = Limits::default();
    let mut buf = vec![0; 16 * 1024];
    loop {
        let mut head = match read_request_head(&mut input, &limits) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                // Where the next request starts is unknown now: close.
                return write_error(&mut output, 400, "Bad Request", &[], &e.to_string(), true);
            }
            Err(e) => return Err(e),
        };
        if !allowed(&head.target) {
            write_error(&mut output, 403, "Forbidden", &[], "internal only", true)?;
            return Ok(());
        }
        let framing = head.framing()?;
        note(log, format!("{} {}", head.method, head.target));
        set_framing(&mut head.headers, framing);
        let mut upstream = upstream.lock().expect("the upstream lock is not poisoned");
        let Upstream {
            input: from,
            output: to,
        } = &mut *upstream;
        write_head(
            to,
            &format!("{} {} HTTP/1.1", head.method, head.target),
            &head.headers,
        )?;
        copy_body(
            &mut input, framing, to, framing, BODY_BYTES, &limits, &mut buf,
        )?;
        relay_answer(from, &mut output)?;
    }
}
// ANCHOR_END: checked_front

/// A peer that left. The naive front leaves the answer to its last
/// request unread, so its close is a reset.
const PEER_LEFT: &[ErrorKind] = &[UnexpectedEof, ConnectionReset];

/// Send `bytes` on a new connection and read one answer: status and body.
fn ask(addr: SocketAddr, bytes: &str) -> io::Result<(u16, String)> {
    let mut stream = may_patterns::net::connect(addr)?;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    stream.write_all(bytes.as_bytes())?;
    let answer = read_response(&mut BufReader::new(&mut stream), &Limits::default())?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

/// What each side saw in one run.
#[derive(Debug)]
struct Seen {
    direct_admin: (u16, String),
    sender: (u16, String),
    next_client: (u16, String),
    front_forwarded: Vec<String>,
    back_end_read: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Front {
    Naive,
    Checked,
}

/// Start a back end and a front of `kind`; send a direct `/admin`, the
/// attack, then an ordinary request from another client.
fn run(kind: Front) -> io::Result<Seen> {
    let (back_log, front_log) = (Log::default(), Log::default());
    let back = {
        let log = back_log.clone();
        start("pitfall_smuggling: a back-end", PEER_LEFT, move |conn| {
            back_end(conn, &log)
        })?
    };
    let upstream = Arc::new(Mutex::new(Upstream::connect(back.addr)?));
    let front = {
        let log = front_log.clone();
        start(
            "pitfall_smuggling: a front",
            PEER_LEFT,
            move |conn| match kind {
                Front::Naive => naive_front(conn, &upstream, &log),
                Front::Checked => checked_front(conn, &upstream, &log),
            },
        )?
    };
    let direct_admin = ask(front.addr, SMUGGLED)?;
    let sender = ask(front.addr, &attack())?;
    let next_client = ask(
        front.addr,
        "GET /account HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )?;
    front.stop()?; // drops the front's upstream connection: the back end ends too
    back.stop()?;
    let taken = |log: Log| std::mem::take(&mut *log.lock().expect("not poisoned"));
    Ok(Seen {
        direct_admin,
        sender,
        next_client,
        front_forwarded: taken(front_log),
        back_end_read: taken(back_log),
    })
}

fn print(title: &str, seen: &Seen) {
    println!("{title}");
    let (status, body) = &seen.direct_admin;
    println!("  GET /admin sent directly: {status} {body:?}");
    let (status, body) = &seen.sender;
    println!("  the request above got: {status} {body:?}");
    let (status, body) = &seen.next_client;
    println!("  then another client's GET /account got: {status} {body:?}");
    println!("  the front forwarded: {}", seen.front_forwarded.join(", "));
    println!("  the back end read:   {}", seen.back_end_read.join(", "));
}

fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!("one client sends, on one connection:");
    for line in attack().split_inclusive("\r\n") {
        println!("  {line:?}");
    }
    for (title, kind) in [
        ("a front that frames by Content-Length:", Front::Naive),
        ("a front on read_request_head:", Front::Checked),
    ] {
        match run(kind) {
            Ok(seen) => print(title, &seen),
            Err(e) => {
                eprintln!("pitfall_smuggling: the demo failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_length_front_lets_a_second_request_reach_the_back_end() {
        may_patterns::runtime::configure_for_tests();
        let seen = run(Front::Naive).unwrap();
        assert_eq!(seen.direct_admin.0, 403, "{seen:?}");
        // The front never forwarded /admin, yet the back end served it.
        let admin = |line: &String| line.contains("/admin");
        assert!(!seen.front_forwarded.iter().any(admin), "{seen:?}");
        assert!(seen.back_end_read.iter().any(admin), "{seen:?}");
        // The smuggled request's answer went to the next client.
        assert_eq!(seen.next_client, (200, "the admin page".to_owned()));
    }

    #[test]
    fn read_request_head_refuses_the_same_bytes_and_forwards_nothing() {
        may_patterns::runtime::configure_for_tests();
        let seen = run(Front::Checked).unwrap();
        assert_eq!(seen.direct_admin.0, 403, "{seen:?}");
        assert_eq!(seen.sender.0, 400, "{seen:?}");
        assert!(seen
            .sender
            .1
            .contains("both Transfer-Encoding and Content-Length"));
        assert_eq!(seen.back_end_read, ["GET /account (0 body bytes)"]);
        assert_eq!(seen.next_client, (200, "your account".to_owned()));
    }
}
