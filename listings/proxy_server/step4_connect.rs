//! Step 4: `CONNECT` tunnels. `CONNECT host:port` asks for a raw TCP
//! connection (an `https://` URL comes this way, its TLS handshake going to
//! the origin through the proxy): the proxy connects, answers `200`, and
//! copies bytes both ways until both sides are done, one direction on the
//! connection's coroutine and the other on a second one. A side's end of
//! stream is passed on as a half-close (`shutdown(Write)`), so a client
//! that has sent everything can still read the whole answer. A tunnel
//! whose two directions are both silent for `IDLE` is closed.
//!
//! Plain HTTP is forwarded as in step 3. Still IP addresses only (names:
//! step 5). The demo opens a tunnel to an origin that answers only after
//! the client's end of stream.

#[path = "steps_common.rs"]
mod steps_common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::net::Shutdown;

use may::go;
use may::net::TcpStream;
use may_patterns::http::{
    append_via, copy_body, read_request_head, read_response_head, remove_hop_by_hop,
    response_framing, set_framing, write_continue, write_error, write_head, Framing, Limits,
    RequestHead, ResponseHead,
};
use may_patterns::server::{Conn, ReadHalf, WriteHalf};
use steps_common::{show, Client, Service, BUF};

/// This hop's name in `Via`.
const VIA: &str = "step4";
/// How long the proxy waits for a byte from either side, and for a connect.
const IDLE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest body the proxy passes either way: a policy, not a memory
/// bound (a body never sits in memory whole).
const MAX_BODY: u64 = 1 << 30;

/// Where an absolute-form target points: `http://host[:port]/path?query`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// The origin form: path and query, `/` at least.
    path: String,
}

impl Target {
    /// Only `http://` URLs: an `https://` one comes as `CONNECT` (step 4).
    fn parse(target: &str) -> Option<Target> {
        let url = url::Url::parse(target)
            .ok()
            .filter(|u| u.scheme() == "http")?;
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path = format!("{path}?{query}");
        }
        Some(Target {
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
            path,
        })
    }

    /// The `Host` header: the port only when it is not 80.
    fn authority(&self) -> String {
        match self.port {
            80 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        }
    }
}

/// An open connection to an origin, with its buffers.
struct Upstream {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

/// How many idle connections the pool keeps per destination, and in all.
const IDLE_PER_DESTINATION: usize = 4;
const IDLE_TOTAL: usize = 256;
/// How long an idle connection is kept: less than the shortest time common
/// servers keep one (Apache's and Node.js's default is 5 s, nginx's 75 s),
/// so the pool rarely hands out one the origin has already closed. That
/// matters most for a request with a body, which is not sent twice.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Idle origin connections by destination, shared by every client
/// connection. A std `Mutex`, held for a push or a pop, never across a park.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Instant, Upstream)>>>,
    /// Connections opened to origins, for the demo's counts.
    opened: AtomicU64,
}

impl Pool {
    /// The most recently used idle connection to `addr`, if one is fresh.
    fn take(&self, addr: SocketAddr) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(&addr)?;
        list.retain(|(since, _)| since.elapsed() < POOL_IDLE);
        let upstream = list.pop().map(|(_, upstream)| upstream);
        if list.is_empty() {
            idle.remove(&addr);
        }
        upstream
    }

    /// Keep `upstream` for the next request, unless the pool is full:
    /// then it is dropped, which closes it.
    fn put(&self, upstream: Upstream) {
        let mut idle = self.idle.lock().unwrap();
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(upstream.addr).or_default();
        if total < IDLE_TOTAL && list.len() < IDLE_PER_DESTINATION {
            list.push((Instant::now(), upstream));
        }
    }

    fn connect(&self, addr: SocketAddr) -> io::Result<Upstream> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(IDLE))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Upstream {
            addr,
            writer: BufWriter::new(stream.try_clone()?),
            reader: BufReader::new(stream),
        })
    }
}

/// Why a request ended before its answer was relayed whole.
enum Failure {
    /// Nothing was sent to the client yet: answer this, then close.
    Refuse(u16, &'static str, String),
    /// The origin connection failed: `502`, or a retry if the request
    /// has no body and the connection was a pooled one.
    Upstream(io::Error),
    /// The client went away, or the answer broke off half-sent: close.
    Broken(io::Error),
}

/// What is kept of a request once its head has been rewritten.
struct Asked {
    method: String,
    version: u8,
    keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
    body: Framing,
}

// ANCHOR: handle
/// One client connection: requests until the client closes, asks to
/// close, stays idle for `IDLE`, or a request fails, or a `CONNECT`, which
/// turns the connection into a tunnel until both sides are done.
fn handle(conn: Conn, pool: &Pool) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    let (client_in, client_out) = conn.split()?;
    let (mut client_in, mut client_out) = (BufReader::new(client_in), BufWriter::new(client_out));
    let mut buf = vec![0u8; BUF];
    loop {
        let head = match read_request_head(&mut client_in, &Limits::default()) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()), // closed between requests
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let why = e.to_string();
                return write_error(&mut client_out, 400, "Bad Request", &[], &why, true);
            }
            Err(e) => return Err(e),
        };
        if head.method.eq_ignore_ascii_case("CONNECT") {
            return connect_tunnel(&head.target, client_in, client_out);
        }
        let io = Io {
            client_in: &mut client_in,
            client_out: &mut client_out,
            buf: &mut buf,
        };
        let (status, reason, why) = match forward(head, io, pool) {
            Ok(true) => continue,
            Ok(false) => return Ok(()),
            Err(Failure::Refuse(status, reason, why)) => (status, reason, why),
            Err(Failure::Upstream(e)) => (502, "Bad Gateway", e.to_string()),
            Err(Failure::Broken(e)) => return Err(e),
        };
        return write_error(&mut client_out, status, reason, &[], &why, true);
    }
}
// ANCHOR_END: handle

/// A client connection's two halves and its one body buffer.
struct Io<'a, R, W> {
    client_in: &'a mut R,
    client_out: &'a mut W,
    buf: &'a mut [u8],
}

/// Forward one request and its answer; whether the client connection can
/// carry the next request.
fn forward<R: BufRead, W: Write>(
    head: RequestHead,
    io: Io<'_, R, W>,
    pool: &Pool,
) -> Result<bool, Failure> {
    let target = Target::parse(&head.target)
        .ok_or_else(|| Failure::Refuse(400, "Bad Request", "not an http:// URL".to_owned()))?;
    let ip: IpAddr = target.host.trim_matches(['[', ']']).parse().map_err(|_| {
        let why = format!("{}: this step connects to IP addresses only", target.host);
        Failure::Refuse(502, "Bad Gateway", why)
    })?;
    let (asked, request) = origin_request(head, &target);
    let addr = SocketAddr::new(ip, target.port);
    let (upstream, response) = exchange(
        pool,
        addr,
        &asked,
        &request,
        io.client_in,
        io.client_out,
        io.buf,
    )?;
    relay(upstream, response, &asked, io.client_out, io.buf, pool)
}

/// The head as the origin must see it, as in step 2, with the body's
/// framing set again and `Expect` removed: the proxy meets it itself.
fn origin_request(head: RequestHead, target: &Target) -> (Asked, Vec<u8>) {
    let asked = Asked {
        body: head
            .framing()
            .expect("read_request_head checked the framing"),
        keep_alive: head.keep_alive(),
        expects_continue: head.expects_continue(),
        method: head.method,
        version: head.version,
    };
    let mut headers = head.headers;
    remove_hop_by_hop(&mut headers);
    headers.retain(|(name, _)| {
        !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("expect")
    });
    headers.insert(0, ("Host".to_owned(), target.authority()));
    append_via(&mut headers, asked.version, VIA);
    set_framing(&mut headers, asked.body);
    let mut request = Vec::new();
    let start_line = format!("{} {} HTTP/1.1", asked.method, target.path);
    write_head(&mut request, &start_line, &headers).expect("a Vec takes every write");
    (asked, request)
}

/// Send the request on a pooled connection or a new one, its body streamed
/// from the client, and read the answer's head. `100 Continue` goes to
/// the client once there is a connection to send its body on. A failed
/// pooled connection is replaced only for a request without a body: a
/// body, once read from the client, cannot be sent again.
fn exchange(
    pool: &Pool,
    addr: SocketAddr,
    asked: &Asked,
    request: &[u8],
    client_in: &mut impl BufRead,
    client_out: &mut impl Write,
    buf: &mut [u8],
) -> Result<(Upstream, ResponseHead), Failure> {
    let mut pooled = pool.take(addr);
    loop {
        let retry = pooled.is_some() && asked.body == Framing::Empty;
        let mut upstream = match pooled.take() {
            Some(upstream) => upstream,
            None => pool.connect(addr).map_err(Failure::Upstream)?,
        };
        if asked.expects_continue {
            write_continue(client_out).map_err(Failure::Broken)?;
        }
        match send(&mut upstream, request, asked.body, client_in, buf) {
            Ok(head) => return Ok((upstream, head)),
            Err(Failure::Upstream(e)) if retry && closed_before_answer(&e) => continue,
            Err(failure) => return Err(failure),
        }
    }
}

/// Write the head, stream the body, read the answer's head.
fn send(
    upstream: &mut Upstream,
    request: &[u8],
    body: Framing,
    client_in: &mut impl BufRead,
    buf: &mut [u8],
) -> Result<ResponseHead, Failure> {
    let limits = Limits::default();
    upstream
        .writer
        .write_all(request)
        .map_err(Failure::Upstream)?;
    let copied = copy_body(
        client_in,
        body,
        &mut upstream.writer,
        body,
        MAX_BODY,
        &limits,
        buf,
    );
    match copied {
        // A malformed or oversized body from the client (bad chunk, over
        // the cap): nothing has gone back to it yet.
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return Err(Failure::Refuse(400, "Bad Request", e.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(Failure::Broken(e)),
        Err(e) => return Err(Failure::Upstream(e)),
        Ok(_) => {}
    }
    upstream.writer.flush().map_err(Failure::Upstream)?;
    read_response_head(&mut upstream.reader, &limits).map_err(Failure::Upstream)
}

fn closed_before_answer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}

/// Stream the answer to the client, re-framed: sized stays sized, chunked
/// or until-close goes out chunked, or raw until close to an HTTP/1.0
/// client, which knows no chunks. The origin connection goes back to the
/// pool if the answer ended cleanly and the origin keeps it open.
fn relay(
    mut upstream: Upstream,
    head: ResponseHead,
    asked: &Asked,
    client: &mut impl Write,
    buf: &mut [u8],
    pool: &Pool,
) -> Result<bool, Failure> {
    let from =
        response_framing(&asked.method, head.status, &head.headers).map_err(Failure::Upstream)?;
    let to = match from {
        Framing::Chunked | Framing::UntilClose if asked.version == 0 => Framing::UntilClose,
        Framing::UntilClose => Framing::Chunked,
        other => other,
    };
    let origin_keeps = head.keep_alive() && from != Framing::UntilClose;
    let keep_alive = asked.keep_alive && to != Framing::UntilClose;
    let mut headers = head.headers;
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, head.version, VIA);
    // A HEAD answer's Content-Length describes the body it did not send.
    if !asked.method.eq_ignore_ascii_case("HEAD") {
        let announced = match to {
            Framing::UntilClose => Framing::Empty,
            other => other,
        };
        set_framing(&mut headers, announced);
    }
    if !keep_alive {
        headers.push(("Connection".to_owned(), "close".to_owned()));
    }
    let status_line = format!("HTTP/1.1 {} {}", head.status, head.reason);
    write_head(client, &status_line, &headers).map_err(Failure::Broken)?;
    let limits = Limits::default();
    copy_body(
        &mut upstream.reader,
        from,
        client,
        to,
        MAX_BODY,
        &limits,
        buf,
    )
    .map_err(Failure::Broken)?;
    client.flush().map_err(Failure::Broken)?;
    if origin_keeps {
        pool.put(upstream);
    }
    Ok(keep_alive)
}

// ANCHOR: tunnel
/// Answer a `CONNECT ip:port`: connect, say `200`, then run the tunnel on
/// this connection. Whatever the client sent right behind its head is
/// already in `client_in`'s buffer: it is the tunnel's first bytes.
fn connect_tunnel(
    target: &str,
    client_in: BufReader<ReadHalf>,
    mut client_out: BufWriter<WriteHalf>,
) -> io::Result<()> {
    let Ok(addr) = target.parse::<SocketAddr>() else {
        let why = format!("{target}: this step tunnels to ip:port only");
        return write_error(&mut client_out, 400, "Bad Request", &[], &why, true);
    };
    let origin = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(origin) => origin,
        Err(e) => {
            return write_error(
                &mut client_out,
                502,
                "Bad Gateway",
                &[],
                &e.to_string(),
                true,
            )
        }
    };
    client_out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let client_out = client_out.into_inner().map_err(|e| e.into_error())?;
    let leftover = client_in.buffer().to_vec();
    tunnel(client_in.into_inner(), client_out, origin, &leftover)
}

/// Copy both ways until both sides are done: client to origin here, origin
/// to client on a second coroutine. The client's end of stream becomes the
/// origin's (`shutdown(Write)`), and the origin's answer still flows back.
fn tunnel(
    mut client_in: ReadHalf,
    mut client_out: WriteHalf,
    origin: TcpStream,
    leftover: &[u8],
) -> io::Result<()> {
    origin.set_read_timeout(Some(IDLE))?;
    let mut origin_out = origin.try_clone()?;
    origin_out.write_all(leftover)?;
    let mut origin_in = origin;
    let activity = Arc::new(Activity::new());
    let down = {
        let activity = activity.clone();
        go!(move || {
            let moved = pipe(&mut origin_in, &mut client_out, &activity);
            // Nothing more will come for the client. The server layer's
            // halves close whole (no half-close): the client has said all
            // it had to by the time a request-and-answer origin closes.
            client_out.close();
            moved
        })
    };
    let up = pipe(&mut client_in, &mut origin_out, &activity);
    // The client has finished sending: pass that on, and keep reading the
    // answer. If it broke off instead, stop the other direction too.
    let how = if up.is_ok() {
        Shutdown::Write
    } else {
        Shutdown::Both
    };
    let _ = origin_out.shutdown(how);
    let down = down
        .join()
        .map_err(|_| io::Error::other("the tunnel's second coroutine panicked"))?;
    up.and(down).map(drop)
}

/// Copy `from` to `to` until end of stream, through a heap buffer. A read
/// that times out ends the copy only if the other direction has been
/// silent as long: a download to a client that sends nothing lives on.
fn pipe(from: &mut impl Read, to: &mut impl Write, activity: &Activity) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if is_timeout(&e) && activity.idle_for() < IDLE => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}
// ANCHOR_END: tunnel

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

/// When either direction of a tunnel last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The proxy, its origin connections pooled in `pool`.
fn start_proxy(addr: &str, pool: Arc<Pool>) -> io::Result<Service> {
    Service::start(addr, move |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn, &pool) {
            eprintln!("{peer}: {e}");
        }
    })
}

/// The most the demo's origin reads, and its client.
const DEMO_BYTES: u64 = 64 * 1024;

// ANCHOR: demo
/// An origin that reads until end of stream, then answers and closes:
/// it works through the tunnel only if the client's half-close arrives.
fn start_origin_after_eof(seen: Arc<Mutex<Vec<String>>>) -> io::Result<Service> {
    Service::start("127.0.0.1:0", move |mut conn| {
        let _ = conn.set_idle_timeout(Some(steps_common::WAIT));
        let mut got = Vec::new();
        if Read::take(&mut conn, DEMO_BYTES)
            .read_to_end(&mut got)
            .is_err()
        {
            return;
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let mut seen = seen.lock().unwrap();
        seen.push(format!(
            "read {} bytes, then end of stream: {text:?}",
            got.len()
        ));
        let answer = format!("the origin got {} bytes: {text}", got.len());
        if conn.write_all(answer.as_bytes()).is_ok() {
            seen.push("answered, and closed".to_owned());
        }
    })
}

/// A tunnel: (what the client did and saw, what the origin did and saw).
fn demo() -> io::Result<(Vec<String>, Vec<String>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = start_origin_after_eof(seen.clone())?;
    let proxy = start_proxy("127.0.0.1:0", Arc::default())?;
    let mut client = Client::connect(proxy.addr)?;
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr);
    client.send(connect.as_bytes())?;
    let head = client.head()?;
    let text = "hello through the tunnel";
    client.send(text.as_bytes())?;
    client.writer.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    Read::take(&mut client.reader, DEMO_BYTES).read_to_string(&mut answer)?;
    let said = vec![
        format!("sent {}", connect.lines().next().unwrap_or_default()),
        format!("got HTTP/1.1 {} {}", head.status, head.reason),
        format!("sent {} bytes, then shut its write side", text.len()),
        format!("read {answer:?}, then end of stream"),
    ];
    let seen = seen.lock().unwrap().clone();
    Ok((said, seen))
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step4_connect",
        || {
            let (said, seen) = demo().expect("the demo runs");
            show("the client", &said);
            show("the origin", &seen);
        },
        |addr| start_proxy(addr, Arc::default()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use steps_common::start_origin;

    #[test]
    fn the_answer_comes_back_after_the_clients_half_close() {
        configure_for_tests();
        let (said, seen) = demo().unwrap();
        assert_eq!(said[1], "got HTTP/1.1 200 Connection established");
        assert_eq!(
            said[3],
            "read \"the origin got 24 bytes: hello through the tunnel\", then end of stream"
        );
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn bytes_right_behind_the_connect_head_are_not_lost() {
        configure_for_tests();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin = start_origin_after_eof(seen.clone()).unwrap();
        let proxy = start_proxy("127.0.0.1:0", Arc::default()).unwrap();
        let mut client = Client::connect(proxy.addr).unwrap();
        let o = origin.addr;
        client
            .send(format!("CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\nearly").as_bytes())
            .unwrap();
        client.send(b" and late").unwrap();
        client.writer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(client.head().unwrap().status, 200);
        let mut answer = String::new();
        client.reader.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "the origin got 14 bytes: early and late");
    }

    #[test]
    fn a_connect_that_cannot_be_made_is_refused() {
        configure_for_tests();
        let proxy = start_proxy("127.0.0.1:0", Arc::default()).unwrap();
        for (target, status) in [("example.com:443", 400), ("127.0.0.1:1", 502)] {
            let mut client = Client::connect(proxy.addr).unwrap();
            let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            assert_eq!(
                client.exchange("GET", &request).unwrap().head.status,
                status
            );
            assert!(client.closed().unwrap());
        }
    }

    #[test]
    fn plain_http_is_still_forwarded() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let pool = Arc::new(Pool::default());
        let proxy = start_proxy("127.0.0.1:0", pool.clone()).unwrap();
        let mut client = Client::connect(proxy.addr).unwrap();
        let o = origin.addr();
        let got = client
            .exchange(
                "GET",
                &format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"),
            )
            .unwrap();
        assert_eq!(got.body, b"hello from the origin\n");
        assert_eq!(pool.opened.load(Ordering::Relaxed), 1);
    }
}
