//! Step 5: who may go where. Before anything is forwarded or tunnelled,
//! the proxy checks, cheapest first: the client's address against the
//! allowed ranges; the `Proxy-Authorization: Basic` password (`407` with
//! `Proxy-Authenticate` without it); the destination port; and last the
//! destination's *resolved* addresses: loopback, private, link-local and
//! unspecified ones are refused unless an exception names their range and
//! port. Checking the address a name resolves to, not the name, is what
//! stops a name that points at `127.0.0.1` (DNS rebinding); an IPv4-mapped
//! IPv6 address is checked as the IPv4 address it carries.
//!
//! Names are resolved now, on `may_patterns::blocking`'s threads, since
//! `getaddrinfo` blocks its thread and must not block a may worker. The
//! demo is a table of attempts and the status each got.

#[path = "steps_common.rs"]
mod steps_common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::net::Shutdown;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use may::go;
use may::net::TcpStream;
use may_patterns::blocking;
use may_patterns::http::{
    append_via, copy_body, header, read_request_head, read_response_head, remove_hop_by_hop,
    response_framing, set_framing, write_continue, write_error, write_head, Framing, Limits,
    RequestHead, ResponseHead,
};
use may_patterns::server::{Conn, ReadHalf, WriteHalf};
use steps_common::{show, start_origin, Client, Service, BUF};

/// This hop's name in `Via`.
const VIA: &str = "step5";
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
/// One client connection, as in step 4, with the checks in front of each
/// request: the client, the password, then where it goes ([`admit`]).
fn handle(conn: Conn, policy: &Policy, pool: &Pool) -> io::Result<()> {
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
        // Refused after its head is read, so the answer is not lost to a
        // reset (closing a socket with unread bytes sends one).
        if !policy.client_allowed(peer) {
            let why = format!("{peer} may not use this proxy");
            return write_error(&mut client_out, 403, "Forbidden", &[], &why, true);
        }
        if !policy.authorized(header(&head.headers, "proxy-authorization")) {
            let challenge = [("Proxy-Authenticate", "Basic realm=\"step5\"")];
            let (status, reason) = (407, "Proxy Authentication Required");
            return write_error(&mut client_out, status, reason, &challenge, "", true);
        }
        let tunnel = head.method.eq_ignore_ascii_case("CONNECT");
        let admitted = match tunnel {
            true => Target::parse_authority(&head.target),
            false => Target::parse(&head.target),
        }
        .ok_or_else(|| Failure::Refuse(400, "Bad Request", "not a target".to_owned()))
        .and_then(|target| admit(&target, policy).map(|addrs| (target, addrs)));
        let (target, addrs) = match admitted {
            Ok(admitted) => admitted,
            Err(failure) => return refuse(&mut client_out, failure),
        };
        if tunnel {
            return connect_tunnel(&addrs, client_in, client_out);
        }
        let io = Io {
            client_in: &mut client_in,
            client_out: &mut client_out,
            buf: &mut buf,
        };
        match forward(head, &target, &addrs, io, pool) {
            Ok(true) => continue,
            Ok(false) => return Ok(()),
            Err(failure) => return refuse(&mut client_out, failure),
        }
    }
}
// ANCHOR_END: handle

/// Answer a request that failed before its answer began, and close.
fn refuse(client: &mut impl Write, failure: Failure) -> io::Result<()> {
    let (status, reason, why) = match failure {
        Failure::Refuse(status, reason, why) => (status, reason, why),
        Failure::Upstream(e) => (502, "Bad Gateway", e.to_string()),
        Failure::Broken(e) => return Err(e),
    };
    write_error(client, status, reason, &[], &why, true)
}

// ANCHOR: admit
/// Where `target` may be reached: its port must be allowed, and of the
/// addresses its host resolves to, those the policy allows (none: `403`).
fn admit(target: &Target, policy: &Policy) -> Result<Vec<SocketAddr>, Failure> {
    let forbidden = |why: String| Failure::Refuse(403, "Forbidden", why);
    if !policy.ports.contains(&target.port) {
        return Err(forbidden(format!("port {} is not allowed", target.port)));
    }
    let resolved = resolve(&target.host, target.port)
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

/// `host`'s addresses: an IP literal as it is; a name through the system
/// resolver, on a thread of the blocking pool, since `getaddrinfo`
/// blocks its thread.
fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let host = host.to_owned();
    blocking::run(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter))
        .map_err(io::Error::other)?
}
// ANCHOR_END: admit

/// A client connection's two halves and its one body buffer.
struct Io<'a, R, W> {
    client_in: &'a mut R,
    client_out: &'a mut W,
    buf: &'a mut [u8],
}

/// Forward one request and its answer to the first of `addrs` that
/// answers; whether the client connection can carry the next request.
fn forward<R: BufRead, W: Write>(
    head: RequestHead,
    target: &Target,
    addrs: &[SocketAddr],
    io: Io<'_, R, W>,
    pool: &Pool,
) -> Result<bool, Failure> {
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

/// Answer an admitted `CONNECT`: connect to the first of `addrs` that
/// answers, say `200`, then run the tunnel on this connection.
fn connect_tunnel(
    addrs: &[SocketAddr],
    client_in: BufReader<ReadHalf>,
    mut client_out: BufWriter<WriteHalf>,
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
        return refuse(&mut client_out, Failure::Upstream(failed));
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

// ANCHOR: policy
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
// ANCHOR_END: policy

/// The proxy: `policy` decides, `pool` keeps origin connections.
fn start_proxy(addr: &str, policy: Policy, pool: Arc<Pool>) -> io::Result<Service> {
    Service::start(addr, move |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn, &policy, &pool) {
            eprintln!("{peer}: {e}");
        }
    })
}

const USER: &str = "alice:wonderland";

// ANCHOR: demo
/// One attempt of the table: what it is, the request, and whether it
/// carries the right password, a wrong one, or none.
struct Attempt {
    what: String,
    request: String,
}

fn attempt(what: &str, request_line: &str, credentials: Option<&str>) -> Attempt {
    let auth = credentials
        .map(|c| format!("Proxy-Authorization: Basic {}\r\n", BASE64.encode(c)))
        .unwrap_or_default();
    Attempt {
        what: what.to_owned(),
        request: format!("{request_line} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    }
}

/// The table: each attempt on a new connection, and the status it got.
fn demo() -> io::Result<Vec<String>> {
    let web = start_origin()?;
    let admin = start_origin()?; // the internal service nobody may reach
    let (w, a) = (web.addr().port(), admin.addr().port());
    let loopback = Cidr::parse("127.0.0.1/32").expect("a range");
    let policy = Policy {
        ports: vec![80, 443, w, a],
        exceptions: vec![(loopback, w)],
        users: vec![USER.to_owned()],
        ..Policy::default()
    };
    let proxy = start_proxy("127.0.0.1:0", policy, Arc::default())?;
    let ok = Some(USER);
    let attempts = [
        attempt(
            "GET http://127.0.0.1:WEB/, the exception",
            &format!("GET http://127.0.0.1:{w}/"),
            ok,
        ),
        attempt(
            "the same without a password",
            &format!("GET http://127.0.0.1:{w}/"),
            None,
        ),
        attempt(
            "the same with a wrong one",
            &format!("GET http://127.0.0.1:{w}/"),
            Some("alice:guess"),
        ),
        attempt(
            "GET http://127.0.0.1:25/, a port not allowed",
            "GET http://127.0.0.1:25/",
            ok,
        ),
        attempt(
            "GET http://127.0.0.1:ADMIN/, loopback",
            &format!("GET http://127.0.0.1:{a}/"),
            ok,
        ),
        attempt(
            "GET http://localhost:ADMIN/, a name for it",
            &format!("GET http://localhost:{a}/"),
            ok,
        ),
        attempt(
            "GET http://[::ffff:127.0.0.1]:ADMIN/, mapped",
            &format!("GET http://[::ffff:127.0.0.1]:{a}/"),
            ok,
        ),
        attempt(
            "GET http://10.1.2.3/, a private address",
            "GET http://10.1.2.3/",
            ok,
        ),
        attempt(
            "CONNECT localhost:ADMIN",
            &format!("CONNECT localhost:{a}"),
            ok,
        ),
        attempt(
            "CONNECT 127.0.0.1:WEB, the exception",
            &format!("CONNECT 127.0.0.1:{w}"),
            ok,
        ),
    ];
    let mut table = Vec::new();
    for Attempt { what, request } in attempts {
        let mut client = Client::connect(proxy.addr)?;
        client.send(request.as_bytes())?;
        let head = client.head()?;
        table.push(format!("{what:<48} {} {}", head.status, head.reason));
    }
    // A proxy for 10.0.0.0/8 only, asked from 127.0.0.1.
    let office = Policy {
        clients: vec![Cidr::parse("10.0.0.0/8").expect("a range")],
        ..Policy::default()
    };
    let elsewhere = start_proxy("127.0.0.1:0", office, Arc::default())?;
    let mut client = Client::connect(elsewhere.addr)?;
    client.send(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")?;
    let head = client.head()?;
    let what = "a client outside 10.0.0.0/8, its only range";
    table.push(format!("{what:<48} {} {}", head.status, head.reason));
    Ok(table)
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step5_access_control",
        || {
            show(
                "attempt, and the status it got",
                &demo().expect("the demo runs"),
            )
        },
        |addr| start_proxy(addr, Policy::default(), Arc::default()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_match_by_prefix_and_mapped_addresses_as_ipv4() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")) && !net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(Cidr::parse("fc00::/7").unwrap().contains(ip("fd12::1")));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("10.0.0.0"), None);
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(internal(ip(inside)), "{inside}");
        }
        for outside in ["93.184.216.34", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!internal(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        let policy = Policy {
            users: vec![USER.to_owned()],
            ..Policy::default()
        };
        let basic = |c: &str| format!("Basic {}", BASE64.encode(c));
        assert!(policy.authorized(Some(&basic(USER))));
        for wrong in ["alice:wonderlan", "alice:wonderland!", "bob:wonderland", ""] {
            assert!(!policy.authorized(Some(&basic(wrong))), "{wrong}");
        }
        assert!(!policy.authorized(None));
        assert!(!policy.authorized(Some("Bearer x")));
        assert!(Policy::default().authorized(None));
    }

    #[test]
    fn the_table_refuses_every_way_in_but_the_exception() {
        configure_for_tests();
        let table = demo().unwrap();
        let statuses: Vec<&str> = table
            .iter()
            .map(|row| {
                row.split_whitespace()
                    .rev()
                    .find(|w| w.parse::<u16>().is_ok())
                    .unwrap()
            })
            .collect();
        assert_eq!(
            statuses,
            ["200", "407", "407", "403", "403", "403", "403", "403", "403", "200", "403"],
            "{table:#?}"
        );
    }

    #[test]
    fn an_unreachable_address_is_passed_over_for_the_next() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pool = Pool::default();
        let upstream = pool.connect_any(&[closed, origin.addr()]).unwrap();
        assert_eq!(upstream.addr, origin.addr());
        assert!(pool.connect_any(&[closed]).is_err());
    }

    #[test]
    fn a_name_is_resolved_off_the_workers_and_checked_after() {
        configure_for_tests();
        // On a coroutine: the lookup parks it, and its worker runs others.
        let addrs = may::go!(|| resolve("localhost", 80))
            .join()
            .unwrap()
            .unwrap();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| internal(a.ip())),
            "{addrs:?}"
        );
        let target = Target::parse("http://localhost/").unwrap();
        let refused = admit(&target, &Policy::default());
        assert!(matches!(refused, Err(Failure::Refuse(403, _, _))));
    }
}
