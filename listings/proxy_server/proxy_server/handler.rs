//! One client connection: requests read one after another (keep-alive),
//! each checked, then forwarded ([`forward`](crate::forward)) or, for
//! `CONNECT`, turned into a tunnel ([`tunnel`]), which ends the requests on
//! that connection. Every refusal is a short `text/plain` answer saying
//! which rule refused, and a close.
//!
//! Timeouts: a request head must be complete within `--header-timeout` of
//! its first byte (of the accept, for the first request), kept by the
//! alarm thread, which shuts the socket when it is due; between requests,
//! and for every read and write after the head, `--idle-timeout`.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use may::net::TcpStream;
use may_patterns::alarm;
use may_patterns::http::{header, read_request_head, write_error, Limits, RequestHead};
use may_patterns::server::{Closer, Conn, ReadHalf, WriteHalf};

use crate::access::Policy;
use crate::access_log::{AccessLog, Entry};
use crate::auth::Users;
use crate::forward::{self, Next, COPY_BUF};
use crate::resolve::Resolver;
use crate::tunnel;
use crate::upstream::Pool;

/// The client's read buffer: a request head (bounded by `Limits`, not by
/// this) usually fits whole.
const READ_BUF: usize = 8 * 1024;
/// What answers are written through: one copy buffer's piece plus its
/// chunk framing, so a re-chunked piece leaves in one write.
const WRITE_BUF: usize = COPY_BUF + 64;

/// What every connection reads.
pub struct Settings {
    pub policy: Policy,
    pub users: Option<Users>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long an origin may take to start its answer.
    pub response_timeout: Duration,
    pub header_timeout: Duration,
    /// Name lookups, cached and shared between requests.
    pub resolver: Resolver,
    /// The stack of a tunnel's second coroutine, in words
    /// ([`tunnel::COPY_STACK_WORDS`]).
    pub tunnel_stack_words: usize,
    /// Idle origin connections, shared by every client connection.
    pub pool: Arc<Pool>,
    /// `--access-log`: one [`Entry`] per answered request.
    pub access_log: Option<AccessLog>,
}

/// Counts for the summary.
#[derive(Default)]
pub struct Stats {
    pub tunnels: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub denied: AtomicU64,
    pub auth_failed: AtomicU64,
    pub upstream_failed: AtomicU64,
    pub bad_requests: AtomicU64,
    /// Plain requests answered by an origin.
    pub forwarded: AtomicU64,
    /// Requests sent on a pooled origin connection.
    pub origin_reused: AtomicU64,
    /// Pooled connections found dead by a request, sent again on a new one.
    pub origin_retried: AtomicU64,
    /// Clients that went away (or stalled) in the middle of an exchange.
    pub client_gone: AtomicU64,
}

impl Stats {
    /// Count a refusal under the rule it broke.
    pub fn count_refusal(&self, status: u16) {
        let counter = match status {
            403 => &self.denied,
            407 => &self.auth_failed,
            502 | 504 => &self.upstream_failed,
            _ => &self.bad_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A refusal: the status, and the sentence the client reads as its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: String,
}

impl Refusal {
    pub fn new(status: u16, why: impl Into<String>) -> Refusal {
        Refusal {
            status,
            why: why.into(),
        }
    }

    /// The `text/plain` body the client gets (and the access log counts).
    pub fn body(&self) -> String {
        format!("{}\n", self.why)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Answer `refusal`: status, `text/plain` body, `Connection: close`, and a
/// flush. A `407` also says which scheme to use.
pub fn refuse(w: &mut impl Write, refusal: &Refusal) -> io::Result<()> {
    let extra: &[(&str, &str)] = match refusal.status {
        407 => &[("Proxy-Authenticate", "Basic realm=\"proxy_server\"")],
        _ => &[],
    };
    write_error(
        w,
        refusal.status,
        reason(refusal.status),
        extra,
        &refusal.body(),
        true,
    )
}

/// A client connection's two halves and its copy buffer, made once and
/// reused for every request on it.
pub struct Client {
    pub reader: BufReader<ReadHalf>,
    pub writer: BufWriter<WriteHalf>,
    /// Empty until the first body: an idle keep-alive connection, or one
    /// that becomes a tunnel (which has buffers of its own), never needs it.
    pub buf: Vec<u8>,
}

/// The copy buffer, made at its first use.
pub fn copy_buffer(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(COPY_BUF, 0);
    }
    buf
}

pub fn serve(conn: Conn, settings: &Settings, stats: &Stats) {
    let peer = conn.peer();
    match serve_inner(conn, settings, stats) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => eprintln!("{peer}: {e}"),
    }
}

fn serve_inner(mut conn: Conn, settings: &Settings, stats: &Stats) -> io::Result<()> {
    let peer = conn.peer();
    if !settings.policy.client_allowed(peer.ip()) {
        let why = format!(
            "client address {} is not in the allowed ranges (--allow-client)",
            peer.ip()
        );
        let refusal = Refusal::new(403, why);
        stats.count_refusal(refusal.status);
        return refuse(&mut conn, &refusal);
    }
    conn.set_idle_timeout(Some(settings.idle_timeout))?;
    conn.set_write_timeout(Some(settings.idle_timeout))?;
    let (closer, stopping) = (conn.closer(), conn.stopping().clone());
    let (reader, writer) = conn.split()?;
    let mut client = Client {
        reader: BufReader::with_capacity(READ_BUF, reader),
        writer: BufWriter::with_capacity(WRITE_BUF, writer),
        buf: Vec::new(),
    };
    let mut first = true;
    loop {
        if !first && !another_request(&mut client.reader)? {
            return Ok(());
        }
        first = false;
        let start = SystemTime::now();
        let read = {
            let _deadline = head_deadline(&closer, settings.header_timeout);
            read_request_head(&mut client.reader, &Limits::default())
        };
        let head = match read {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let refusal = Refusal::new(400, format!("bad request head: {e}"));
                stats.count_refusal(refusal.status);
                return refuse(&mut client.writer, &refusal);
            }
            Err(e) => return Err(e),
        };
        let mut logged = Logged {
            settings,
            peer,
            head: &head,
            user: None,
            start,
        };
        if let Some(users) = &settings.users {
            match users.check(header(&head.headers, "proxy-authorization")) {
                Some(user) => logged.user = Some(user.to_owned()),
                None => {
                    let why = "this proxy needs a user and password (Proxy-Authorization: Basic)";
                    return logged.refuse(&mut client, stats, Refusal::new(407, why));
                }
            }
        }
        if head.method.eq_ignore_ascii_case("CONNECT") {
            return open_tunnel(client, settings, stats, &logged);
        }
        let served = forward::forward(&head, &mut client, settings, stats)?;
        if let Some(status) = served.status {
            logged.log(status, served.bytes_down);
        }
        if served.next == Next::Close || stopping.is_triggered() {
            return Ok(());
        }
    }
}

/// Wait for the first byte of another request, up to the idle timeout
/// (the socket's read timeout). `false`: the client closed, reset or went
/// quiet, and the connection ends without a word.
fn another_request(reader: &mut BufReader<ReadHalf>) -> io::Result<bool> {
    match reader.fill_buf() {
        Ok(bytes) => Ok(!bytes.is_empty()),
        Err(e) => match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::ConnectionReset => Ok(false),
            _ => Err(e),
        },
    }
}

/// Shut the connection at `now + timeout` unless the returned call is
/// dropped first: the whole head must come by then, however slowly its
/// bytes trickle in (a socket read timeout is per read, and a client
/// sending a byte a second would never trip it).
fn head_deadline(closer: &Closer, timeout: Duration) -> alarm::Call {
    let closer = closer.clone();
    alarm::shared().call_at(Instant::now() + timeout, move || closer.close())
}

/// What an access log line needs of a request.
struct Logged<'a> {
    settings: &'a Settings,
    peer: SocketAddr,
    head: &'a RequestHead,
    /// Who `Proxy-Authorization` named, once checked (`--auth-file`).
    user: Option<String>,
    start: SystemTime,
}

impl Logged<'_> {
    /// One access log line, if `--access-log` is on.
    fn log(&self, status: u16, bytes_sent: u64) {
        let Some(access_log) = &self.settings.access_log else {
            return;
        };
        let text = |name| header(&self.head.headers, name).map(str::to_owned);
        access_log.log(Entry {
            client: self.peer,
            user: self.user.clone(),
            method: self.head.method.clone(),
            target: self.head.target.clone(),
            version: self.head.version,
            status,
            bytes_sent,
            referer: text("referer"),
            user_agent: text("user-agent"),
            start: self.start,
        });
    }

    /// Count, log and answer `refusal`; the connection then closes.
    fn refuse(&self, client: &mut Client, stats: &Stats, refusal: Refusal) -> io::Result<()> {
        stats.count_refusal(refusal.status);
        self.log(refusal.status, refusal.body().len() as u64);
        refuse(&mut client.writer, &refusal)
    }
}

/// `CONNECT host:port`: the checks, the connect, the `200`, the tunnel.
fn open_tunnel(
    mut client: Client,
    settings: &Settings,
    stats: &Stats,
    logged: &Logged,
) -> io::Result<()> {
    let Some((host, port)) = authority(&logged.head.target) else {
        let why = format!("CONNECT needs host:port, not {:?}", logged.head.target);
        return logged.refuse(&mut client, stats, Refusal::new(400, why));
    };
    if !settings.policy.port_allowed(port, true) {
        let why = format!("CONNECT to port {port} is not allowed (--allow-connect-port)");
        return logged.refuse(&mut client, stats, Refusal::new(403, why));
    }
    let connected =
        destinations(host, port, settings).and_then(|addrs| connect_any(&addrs, settings));
    let origin = match connected {
        Ok((origin, _)) => origin,
        Err(refusal) => return logged.refuse(&mut client, stats, refusal),
    };
    client
        .writer
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    client.writer.flush()?;
    // What the client sent after its head belongs to the origin.
    let leftover = client.reader.buffer().to_vec();
    let client_out = client.writer.into_inner().map_err(|e| e.into_error())?;
    stats.tunnels.fetch_add(1, Ordering::Relaxed);
    let moved = tunnel::run(
        client.reader.into_inner(),
        client_out,
        origin,
        &leftover,
        settings.idle_timeout,
        settings.tunnel_stack_words,
    )?;
    stats.bytes_up.fetch_add(moved.up, Ordering::Relaxed);
    stats.bytes_down.fetch_add(moved.down, Ordering::Relaxed);
    logged.log(200, moved.down);
    Ok(())
}

/// Resolve `host` and keep the addresses the policy allows. They are
/// checked after resolution, so a name that points at 127.0.0.1 is refused
/// like 127.0.0.1 itself (DNS rebinding).
pub fn destinations(
    host: &str,
    port: u16,
    settings: &Settings,
) -> Result<Vec<SocketAddr>, Refusal> {
    let resolved = settings
        .resolver
        .resolve(host, port)
        // The resolver's error names the host.
        .map_err(|e| Refusal::new(502, format!("cannot resolve {e}")))?;
    let (allowed, internal): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|a| settings.policy.dest_allowed(a.ip()));
    if allowed.is_empty() {
        let ips: Vec<String> = internal.iter().map(|a| a.ip().to_string()).collect();
        let ips = ips.join(", ");
        let named = match ips == host.trim_start_matches('[').trim_end_matches(']') {
            true => String::new(),
            false => format!(" ({host})"),
        };
        let why = format!(
            "destination address {ips}{named} is internal (loopback, private, link-local) \
             and not allowed (--allow-dest)"
        );
        return Err(Refusal::new(403, why));
    }
    Ok(allowed)
}

/// Connect to the first of `addrs` that answers within the connect timeout.
pub fn connect_any(
    addrs: &[SocketAddr],
    settings: &Settings,
) -> Result<(TcpStream, SocketAddr), Refusal> {
    let mut failures = Vec::new();
    let mut timed_out = false;
    for addr in addrs {
        match may_patterns::net::connect_timeout(addr, settings.connect_timeout) {
            Ok(stream) => return Ok((stream, *addr)),
            Err(e) => {
                timed_out |= e.kind() == ErrorKind::TimedOut;
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    let tried = failures.join("; ");
    Err(match timed_out {
        true => Refusal::new(
            504,
            format!(
                "connecting took over {} s ({tried})",
                settings.connect_timeout.as_secs()
            ),
        ),
        false => Refusal::new(502, format!("cannot connect ({tried})")),
    })
}

/// `host:port` or `[v6]:port`.
fn authority(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p != 0)?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(authority("example.com:443"), Some(("example.com", 443)));
        assert_eq!(authority("[::1]:8443"), Some(("[::1]", 8443)));
        assert_eq!(authority("example.com"), None);
        assert_eq!(authority("::1:443"), None);
        assert_eq!(authority("h:0"), None);
        assert_eq!(authority(":443"), None);
    }

    #[test]
    fn refusals_are_complete_responses_that_say_why() {
        let mut out = Vec::new();
        refuse(&mut out, &Refusal::new(407, "a password, please")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(text.contains("Proxy-Authenticate: Basic realm=\"proxy_server\"\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\na password, please\n"), "{text:?}");
        let mut out = Vec::new();
        refuse(&mut out, &Refusal::new(403, "port 25")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("Content-Length: 8\r\n"));
        assert!(!text.contains("Proxy-Authenticate"));
    }

    #[test]
    fn refusals_are_counted_under_their_rule() {
        let stats = Stats::default();
        for status in [400, 403, 403, 407, 502, 504] {
            stats.count_refusal(status);
        }
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(n(&stats.bad_requests), 1);
        assert_eq!(n(&stats.denied), 2);
        assert_eq!(n(&stats.auth_failed), 1);
        assert_eq!(n(&stats.upstream_failed), 2);
    }
}
