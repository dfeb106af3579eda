//! Step 6: a resolver cache and an access log. Names are still resolved
//! on `may_patterns::blocking`'s threads, now behind a cache that keeps an
//! answer for `DNS_TTL` (the system resolver does not say how long a
//! record lives) and at most `DNS_ENTRIES` names, so a burst of requests
//! to one host costs one lookup. Every request ends as one line of an
//! access log in the combined format, written by one OS thread fed
//! through a bounded queue: a request never waits for the log, and a line
//! that finds the queue full is dropped and counted.
//!
//! The demo sends three requests to `localhost`, then prints the lookups
//! and the log, with the clock fixed so its lines do not change.

#[path = "steps_common.rs"]
mod steps_common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::net::Shutdown;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use may::go;
use may::net::TcpStream;
use may_patterns::http::{
    append_via, copy_body, header, read_request_head, read_response_head, remove_hop_by_hop,
    response_framing, set_framing, write_continue, write_error, write_head, Framing, Limits,
    RequestHead, ResponseHead,
};
use may_patterns::server::{Conn, ReadHalf, WriteHalf};
use may_patterns::{blocking, bounded};
use steps_common::{show, start_origin, Client, Service, BUF};

/// This hop's name in `Via`.
const VIA: &str = "step6";
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

    /// A `CONNECT` target: `host:port`, `[v6]:port`.
    fn parse_authority(target: &str) -> Option<Target> {
        let (host, port) = target.rsplit_once(':')?;
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.is_empty() || (host.contains(':') && !bracketed) {
            return None;
        }
        Some(Target {
            host: host.to_owned(),
            port: port.parse().ok().filter(|&p| p != 0)?,
            path: String::new(),
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

    /// A new connection to the first of `addrs` that answers: a name may
    /// resolve to several, some of them unreachable.
    fn connect_any(&self, addrs: &[SocketAddr]) -> io::Result<Upstream> {
        let mut failed = io::Error::other("no address to connect to");
        for &addr in addrs {
            match self.connect(addr) {
                Ok(upstream) => return Ok(upstream),
                Err(e) => failed = e,
            }
        }
        Err(failed)
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
/// One client connection, as in step 5; each request ends as a log line.
fn handle(conn: Conn, proxy: &Shared) -> io::Result<()> {
    let peer = conn.peer().ip();
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
        let line = LogLine::new(peer, &head, (proxy.clock)());
        let policy = &proxy.policy;
        if !policy.client_allowed(peer) {
            let why = format!("{peer} may not use this proxy");
            proxy.log.record(line.done(403, why.len() as u64));
            return write_error(&mut client_out, 403, "Forbidden", &[], &why, true);
        }
        if !policy.authorized(header(&head.headers, "proxy-authorization")) {
            proxy.log.record(line.done(407, 0));
            let challenge = [("Proxy-Authenticate", "Basic realm=\"step6\"")];
            let (status, reason) = (407, "Proxy Authentication Required");
            return write_error(&mut client_out, status, reason, &challenge, "", true);
        }
        let tunnel = head.method.eq_ignore_ascii_case("CONNECT");
        let admitted = match tunnel {
            true => Target::parse_authority(&head.target),
            false => Target::parse(&head.target),
        }
        .ok_or_else(|| Failure::Refuse(400, "Bad Request", "not a target".to_owned()))
        .and_then(|target| admit(&target, policy, &proxy.resolver).map(|a| (target, a)));
        let (target, addrs) = match admitted {
            Ok(admitted) => admitted,
            Err(failure) => return refuse(&mut client_out, failure, line, &proxy.log),
        };
        if tunnel {
            return connect_tunnel(&addrs, client_in, client_out, line, &proxy.log);
        }
        let io = Io {
            client_in: &mut client_in,
            client_out: &mut client_out,
            buf: &mut buf,
        };
        match forward(head, &target, &addrs, io, &proxy.pool) {
            Ok(relayed) => {
                proxy.log.record(line.done(relayed.status, relayed.bytes));
                if !relayed.keep_alive {
                    return Ok(());
                }
            }
            Err(failure) => return refuse(&mut client_out, failure, line, &proxy.log),
        }
    }
}
// ANCHOR_END: handle

/// Answer a request that failed before its answer began, log it, close.
/// One whose answer broke off half-way is not logged: its status was sent
/// but the client may not have seen it.
fn refuse(
    client: &mut impl Write,
    failure: Failure,
    line: LogLine,
    log: &AccessLog,
) -> io::Result<()> {
    let (status, reason, why) = match failure {
        Failure::Refuse(status, reason, why) => (status, reason, why),
        Failure::Upstream(e) => (502, "Bad Gateway", e.to_string()),
        Failure::Broken(e) => return Err(e),
    };
    log.record(line.done(status, why.len() as u64));
    write_error(client, status, reason, &[], &why, true)
}

/// Where `target` may be reached: its port must be allowed, and of the
/// addresses its host resolves to, those the policy allows (none: `403`).
fn admit(
    target: &Target,
    policy: &Policy,
    resolver: &Resolver,
) -> Result<Vec<SocketAddr>, Failure> {
    let forbidden = |why: String| Failure::Refuse(403, "Forbidden", why);
    if !policy.ports.contains(&target.port) {
        return Err(forbidden(format!("port {} is not allowed", target.port)));
    }
    let resolved = resolver
        .resolve(&target.host, target.port)
        .map_err(|e| Failure::Refuse(502, "Bad Gateway", format!("{}: {e}", target.host)))?;
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|addr| policy.destination_allowed(*addr))
        .collect();
    match allowed.is_empty() {
        true => Err(forbidden(format!("{} is an internal address", target.host))),
        false => Ok(allowed),
    }
}

// ANCHOR: resolver
/// How long a resolved name is kept, and how many names at most.
const DNS_TTL: Duration = Duration::from_secs(30);
const DNS_ENTRIES: usize = 1024;

/// The system resolver behind a cache. Two requests that miss at once
/// both look up; the second answer replaces the first.
#[derive(Default)]
struct Resolver {
    /// Name -> (when it was resolved, its addresses). A std `Mutex`, never
    /// held across the lookup, which parks.
    cache: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
    /// Lookups that went to the system resolver.
    lookups: AtomicU64,
}

impl Resolver {
    /// `host`'s addresses with `port`: an IP literal as it is; a name from
    /// the cache, or looked up on a thread of the blocking pool.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = host.to_ascii_lowercase();
        let cached = self.cache.lock().unwrap().get(&name).cloned();
        let ips = match cached {
            Some((at, ips)) if at.elapsed() < DNS_TTL => ips,
            _ => self.look_up(name)?,
        };
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    fn look_up(&self, name: String) -> io::Result<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let query = name.clone();
        let found = blocking::run(move || (query.as_str(), 0).to_socket_addrs())
            .map_err(io::Error::other)??;
        let ips: Vec<IpAddr> = found.map(|addr| addr.ip()).collect();
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= DNS_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < DNS_TTL);
        }
        if cache.len() < DNS_ENTRIES {
            cache.insert(name, (Instant::now(), ips.clone()));
        }
        Ok(ips)
    }
}
// ANCHOR_END: resolver

/// A client connection's two halves and its one body buffer.
struct Io<'a, R, W> {
    client_in: &'a mut R,
    client_out: &'a mut W,
    buf: &'a mut [u8],
}

/// Forward one request and its answer to the first of `addrs` that
/// answers: what was relayed, and whether the client connection can carry
/// the next request.
fn forward<R: BufRead, W: Write>(
    head: RequestHead,
    target: &Target,
    addrs: &[SocketAddr],
    io: Io<'_, R, W>,
    pool: &Pool,
) -> Result<Relayed, Failure> {
    let (asked, request) = origin_request(head, target);
    let (upstream, response) = exchange(
        pool,
        addrs,
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
    addrs: &[SocketAddr],
    asked: &Asked,
    request: &[u8],
    client_in: &mut impl BufRead,
    client_out: &mut impl Write,
    buf: &mut [u8],
) -> Result<(Upstream, ResponseHead), Failure> {
    let mut pooled = addrs.iter().find_map(|&addr| pool.take(addr));
    loop {
        let retry = pooled.is_some() && asked.body == Framing::Empty;
        let mut upstream = match pooled.take() {
            Some(upstream) => upstream,
            None => pool.connect_any(addrs).map_err(Failure::Upstream)?,
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
) -> Result<Relayed, Failure> {
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
    let bytes = copy_body(
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
    Ok(Relayed {
        keep_alive,
        status: head.status,
        bytes,
    })
}

/// What was relayed, for the log.
struct Relayed {
    keep_alive: bool,
    status: u16,
    /// The body's bytes, as the log's `%b` counts them.
    bytes: u64,
}

/// Answer an admitted `CONNECT`: connect to the first of `addrs` that
/// answers, say `200`, then run the tunnel on this connection.
fn connect_tunnel(
    addrs: &[SocketAddr],
    client_in: BufReader<ReadHalf>,
    mut client_out: BufWriter<WriteHalf>,
    line: LogLine,
    log: &AccessLog,
) -> io::Result<()> {
    let mut failed = io::Error::other("no address");
    let mut origin = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                origin = Some(stream);
                break;
            }
            Err(e) => failed = e,
        }
    }
    let Some(origin) = origin else {
        return refuse(&mut client_out, Failure::Upstream(failed), line, log);
    };
    client_out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let client_out = client_out.into_inner().map_err(|e| e.into_error())?;
    let leftover = client_in.buffer().to_vec();
    // Logged when the tunnel ends, with the bytes that came back.
    let down = tunnel(client_in.into_inner(), client_out, origin, &leftover);
    log.record(line.done(200, *down.as_ref().unwrap_or(&0)));
    down.map(drop)
}

/// Copy both ways until both sides are done: client to origin here, origin
/// to client on a second coroutine. The client's end of stream becomes the
/// origin's (`shutdown(Write)`), and the origin's answer still flows back.
/// The bytes that came back.
fn tunnel(
    mut client_in: ReadHalf,
    mut client_out: WriteHalf,
    origin: TcpStream,
    leftover: &[u8],
) -> io::Result<u64> {
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
    up.and(down)
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

/// An address range, `10.0.0.0/8` or `fc00::/7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (net, bits) = text.split_once('/')?;
        let (net, bits): (IpAddr, u8) = (net.parse().ok()?, bits.parse().ok()?);
        let width = if net.is_ipv4() { 32 } else { 128 };
        (bits <= width).then_some(Cidr { net, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.net, unmapped(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift == 128 || net >> shift == ip >> shift
    }
}

/// `::ffff:127.0.0.1` is 127.0.0.1: check it as the IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Inside the network: what a proxy must not reach because someone asked.
fn internal(ip: IpAddr) -> bool {
    match unmapped(ip) {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified()
        }
        // Unique local fc00::/7 and link-local fe80::/10.
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
        }
    }
}

/// Who may use the proxy, and where to.
struct Policy {
    clients: Vec<Cidr>,
    ports: Vec<u16>,
    /// Internal destinations allowed all the same: a range and a port.
    exceptions: Vec<(Cidr, u16)>,
    /// `user:password` pairs; none: no password is asked.
    users: Vec<String>,
}

impl Policy {
    fn client_allowed(&self, ip: IpAddr) -> bool {
        self.clients.iter().any(|net| net.contains(ip))
    }

    fn destination_allowed(&self, addr: SocketAddr) -> bool {
        !internal(addr.ip())
            || self
                .exceptions
                .iter()
                .any(|(net, port)| *port == addr.port() && net.contains(addr.ip()))
    }

    /// `Basic <base64 of user:password>`, compared in constant time so the
    /// answer's timing does not tell how much of a guess was right.
    fn authorized(&self, credentials: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let decoded = credentials
            .and_then(|c| c.strip_prefix("Basic "))
            .and_then(|b| BASE64.decode(b.trim()).ok())
            .unwrap_or_default();
        self.users
            .iter()
            .fold(false, |found, user| found | same(user.as_bytes(), &decoded))
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

impl Default for Policy {
    /// Clients on this machine, to ports 80 and 443 of public addresses.
    fn default() -> Policy {
        Policy {
            clients: ["127.0.0.1/32", "::1/128"]
                .iter()
                .filter_map(|c| Cidr::parse(c))
                .collect(),
            ports: vec![80, 443],
            exceptions: Vec::new(),
            users: Vec::new(),
        }
    }
}

// ANCHOR: log
/// Lines waiting for the log's thread; past this, lines are dropped.
const LOG_QUEUE: usize = 1024;

/// The access log: one OS thread writes, requests only queue a line.
struct AccessLog {
    queue: bounded::Sender<String>,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
}

impl AccessLog {
    /// Start the thread writing to `out`; it gives `out` back (flushed)
    /// once every sender is gone and the queue is empty.
    fn start<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
    ) -> io::Result<(AccessLog, std::thread::JoinHandle<io::Result<W>>)> {
        let (queue, lines) = bounded::channel::<String>(capacity);
        let writer = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut out = io::BufWriter::new(out);
                for line in lines.iter() {
                    writeln!(out, "{line}")?;
                    // Written in batches while lines wait, at once when
                    // the queue runs dry, so a quiet proxy's lines show.
                    if lines.is_empty() {
                        out.flush()?;
                    }
                }
                out.into_inner().map_err(|e| e.into_error())
            })?;
        let dropped = AtomicU64::new(0);
        Ok((AccessLog { queue, dropped }, writer))
    }

    /// Queue `line` if there is room; never waits.
    fn record(&self, line: String) {
        if self.queue.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The parts of a line known when the request head arrives.
struct LogLine {
    client: IpAddr,
    user: String,
    time: SystemTime,
    request: String,
    referer: String,
    agent: String,
}

impl LogLine {
    fn new(client: IpAddr, head: &RequestHead, time: SystemTime) -> LogLine {
        let quoted = |name| header(&head.headers, name).map_or("-".to_owned(), escape);
        LogLine {
            client,
            user: basic_user(header(&head.headers, "proxy-authorization")),
            time,
            request: escape(&format!(
                "{} {} HTTP/1.{}",
                head.method, head.target, head.version
            )),
            referer: quoted("referer"),
            agent: quoted("user-agent"),
        }
    }

    /// The combined format: `host - user [time] "request" status bytes
    /// "referer" "user-agent"`, `-` for an empty field.
    fn done(self, status: u16, bytes: u64) -> String {
        let bytes = match bytes {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        format!(
            "{} - {} [{}] \"{}\" {status} {bytes} \"{}\" \"{}\"",
            self.client,
            self.user,
            clf_time(self.time),
            self.request,
            self.referer,
            self.agent
        )
    }
}

/// The user a `Basic` header names (whether or not its password is right).
fn basic_user(credentials: Option<&str>) -> String {
    credentials
        .and_then(|c| c.strip_prefix("Basic "))
        .and_then(|b| BASE64.decode(b.trim()).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| d.split_once(':').map(|(user, _)| escape(user)))
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// A client's text as it may appear in a line: no quote, backslash or
/// control character, so one request cannot forge a second line.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => format!("\\x{:02x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// `03/Dec/2026:10:00:00 +0000`, in UTC.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let month = MONTHS[month as usize - 1];
    format!("{day:02}/{month}/{year}:{h:02}:{m:02}:{s:02} +0000")
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's
/// `civil_from_days`, in eras of 400 years.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
// ANCHOR_END: log

/// What every connection of the proxy shares.
struct Shared {
    policy: Policy,
    pool: Pool,
    resolver: Resolver,
    log: AccessLog,
    /// The log's clock: the system's, or a fixed one in the demo.
    clock: fn() -> SystemTime,
}

fn start_proxy(addr: &str, shared: Shared) -> io::Result<(Service, Arc<Shared>)> {
    let shared = Arc::new(shared);
    let proxy = shared.clone();
    let service = Service::start(addr, move |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn, &proxy) {
            eprintln!("{peer}: {e}");
        }
    })?;
    Ok((service, shared))
}

const USER: &str = "alice:wonderland";

/// The demo's clock: 3 December 2026, 10:00 UTC, for lines that do not change.
fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_292_000)
}

// ANCHOR: demo
/// Three requests to `localhost` on one connection, and what they cost:
/// lookups, log lines, drops.
fn demo() -> io::Result<Vec<String>> {
    let web = start_origin()?;
    let port = web.addr().port();
    let loopback = Cidr::parse("127.0.0.1/32").expect("a range");
    let (log, writer) = AccessLog::start(Vec::new(), LOG_QUEUE)?;
    let shared = Shared {
        policy: Policy {
            ports: vec![port],
            exceptions: vec![(loopback, port)],
            users: vec![USER.to_owned()],
            ..Policy::default()
        },
        pool: Pool::default(),
        resolver: Resolver::default(),
        log,
        clock: fixed_clock,
    };
    let (service, shared) = start_proxy("127.0.0.1:0", shared)?;
    let mut client = Client::connect(service.addr)?;
    let auth = BASE64.encode(USER);
    for path in ["/a", "/b", "/c"] {
        let request = format!(
            "GET http://localhost:{port}{path} HTTP/1.1\r\nHost: localhost:{port}\r\n\
             Proxy-Authorization: Basic {auth}\r\nUser-Agent: demo\r\n\r\n"
        );
        client.exchange("GET", &request)?;
    }
    drop(client);
    let lookups = shared.resolver.lookups.load(Ordering::Relaxed);
    let dropped = shared.log.dropped.load(Ordering::Relaxed);
    // Stopping the proxy drops the last sender: the log's thread ends.
    drop((service, shared));
    let written = writer
        .join()
        .map_err(|_| io::Error::other("the log thread panicked"))??;
    let mut lines = vec![format!("3 requests to localhost, {lookups} lookup(s)")];
    lines.push(format!("the access log ({dropped} line(s) dropped):"));
    lines.extend(
        String::from_utf8_lossy(&written)
            .lines()
            .map(|l| format!("  {l}")),
    );
    Ok(lines)
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step6_resolver_and_log",
        || show("the demo", &demo().expect("the demo runs")),
        |addr| {
            let (log, _writer) = AccessLog::start(io::stdout(), LOG_QUEUE)?;
            let shared = Shared {
                policy: Policy::default(),
                pool: Pool::default(),
                resolver: Resolver::default(),
                log,
                clock: SystemTime::now,
            };
            start_proxy(addr, shared).map(|(service, _)| service)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn three_requests_to_one_name_cost_one_lookup_and_three_lines() {
        configure_for_tests();
        let lines = demo().unwrap();
        assert_eq!(lines[0], "3 requests to localhost, 1 lookup(s)");
        assert_eq!(lines[1], "the access log (0 line(s) dropped):");
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(
            lines[2].starts_with(
                "  127.0.0.1 - alice [03/Dec/2026:10:00:00 +0000] \"GET http://localhost:"
            ),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].ends_with("/a HTTP/1.1\" 200 22 \"-\" \"demo\""),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn an_expired_name_is_looked_up_again() {
        configure_for_tests();
        let resolver = Resolver::default();
        let stale = Instant::now().checked_sub(DNS_TTL).expect("the clock runs");
        let fake = vec![IpAddr::from([192, 0, 2, 1])];
        resolver
            .cache
            .lock()
            .unwrap()
            .insert("localhost".to_owned(), (stale, fake));
        let addrs = resolver.resolve("localhost", 80).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert_eq!(resolver.lookups.load(Ordering::Relaxed), 1);
        resolver.resolve("LocalHost", 80).unwrap();
        assert_eq!(resolver.lookups.load(Ordering::Relaxed), 1);
    }

    /// A writer that says when a write starts, then waits to be released.
    struct Gate {
        started: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Write for Gate {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let _ = self.started.send(());
            let _ = self.release.recv(); // Err once released: no more waits
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (started, writing) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let gate = Gate {
            started,
            release: released,
        };
        // A line longer than the thread's BufWriter goes straight to the
        // writer, so the first one holds the thread in the gate.
        let (log, writer) = AccessLog::start(gate, 2).unwrap();
        log.record("x".repeat(10_000)); // taken by the thread, which blocks
        writing
            .recv_timeout(steps_common::WAIT)
            .expect("the thread writes");
        for _ in 0..4 {
            log.record("y".repeat(10_000));
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 2); // two queued
        drop(release);
        drop(log);
        writer.join().unwrap().unwrap();
    }

    #[test]
    fn times_and_fields_are_written_as_the_combined_format_says() {
        assert_eq!(clf_time(fixed_clock()), "03/Dec/2026:10:00:00 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(clf_time(leap), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\x0ad");
        let basic = format!("Basic {}", BASE64.encode("bob:secret"));
        assert_eq!(basic_user(Some(&basic)), "bob");
        assert_eq!(basic_user(None), "-");
    }
}
