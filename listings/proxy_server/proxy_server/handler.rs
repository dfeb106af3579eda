//! One client connection: its request head, the access checks, then a
//! CONNECT tunnel. Every refusal is a short response and a close.

use std::io::{self, BufReader, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use may::net::TcpStream;
use may_patterns::http::{header, read_request_head, Limits, RequestHead};
use may_patterns::server::Conn;

use crate::access::Policy;
use crate::access_log::{AccessLog, Entry};
use crate::auth::Users;
use crate::resolve::Resolver;
use crate::tunnel;

/// What every connection reads.
pub struct Settings {
    pub policy: Policy,
    pub users: Option<Users>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    /// Name lookups, cached and shared between requests.
    pub resolver: Resolver,
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
}

/// A refusal: status, reason, and extra header lines.
struct Refusal(u16, &'static str, &'static str);

const FORBIDDEN: Refusal = Refusal(403, "Forbidden", "");
const PROXY_AUTH: Refusal = Refusal(
    407,
    "Proxy Authentication Required",
    "Proxy-Authenticate: Basic realm=\"proxy_server\"\r\n",
);

pub fn serve(conn: Conn, settings: &Settings, stats: &Stats) {
    let peer = conn.peer();
    match serve_inner(conn, settings, stats) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => eprintln!("{peer}: {e}"),
    }
}

fn serve_inner(conn: Conn, settings: &Settings, stats: &Stats) -> io::Result<()> {
    let peer = conn.peer();
    let mut reader = BufReader::with_capacity(8 * 1024, conn);
    if !settings.policy.client_allowed(peer.ip()) {
        stats.denied.fetch_add(1, Ordering::Relaxed);
        return refuse(reader.get_mut(), FORBIDDEN);
    }
    reader
        .get_ref()
        .set_idle_timeout(Some(settings.header_timeout))?;
    // Only the head is read: CONNECT has no body (what follows it is the
    // tunnel's), and plain requests are refused before any body is read.
    let start = SystemTime::now();
    let request = match read_request_head(&mut reader, &Limits::default()) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return refuse(reader.get_mut(), Refusal(400, "Bad Request", ""));
        }
        Err(e) => return Err(e),
    };
    if let Some(users) = &settings.users {
        if !users.check(header(&request.headers, "proxy-authorization")) {
            stats.auth_failed.fetch_add(1, Ordering::Relaxed);
            return refuse(reader.get_mut(), PROXY_AUTH);
        }
    }
    if !request.method.eq_ignore_ascii_case("CONNECT") {
        stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        log(settings, peer, &request, 501, 0, start);
        return refuse(reader.get_mut(), Refusal(501, "Not Implemented", ""));
    }
    let Some((host, port)) = authority(&request.target) else {
        stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        return refuse(reader.get_mut(), Refusal(400, "Bad Request", ""));
    };
    if !settings.policy.port_allowed(port, true) {
        stats.denied.fetch_add(1, Ordering::Relaxed);
        return refuse(reader.get_mut(), FORBIDDEN);
    }
    let origin = match connect(host, port, settings) {
        Ok(origin) => origin,
        Err(refusal) => {
            let counter = if refusal.0 == 403 {
                &stats.denied
            } else {
                &stats.upstream_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return refuse(reader.get_mut(), refusal);
        }
    };
    reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    reader.get_mut().flush()?;
    let leftover = reader.buffer().to_vec();
    stats.tunnels.fetch_add(1, Ordering::Relaxed);
    let moved = tunnel::run(
        reader.into_inner(),
        origin,
        &leftover,
        settings.idle_timeout,
    )?;
    stats.bytes_up.fetch_add(moved.up, Ordering::Relaxed);
    stats.bytes_down.fetch_add(moved.down, Ordering::Relaxed);
    log(settings, peer, &request, 200, moved.down, start);
    Ok(())
}

/// One access log line, if `--access-log` is on.
fn log(
    settings: &Settings,
    client: SocketAddr,
    request: &RequestHead,
    status: u16,
    bytes_sent: u64,
    start: SystemTime,
) {
    let Some(access_log) = &settings.access_log else {
        return;
    };
    let text = |name| header(&request.headers, name).map(str::to_owned);
    access_log.log(Entry {
        client,
        user: None,
        method: request.method.clone(),
        target: request.target.clone(),
        version: request.version,
        status,
        bytes_sent,
        referer: text("referer"),
        user_agent: text("user-agent"),
        start,
    });
}

/// Resolve, keep only allowed addresses (checked after resolution, so a
/// name pointing at 127.0.0.1 is refused: DNS rebinding), connect to the
/// first that answers.
fn connect(host: &str, port: u16, settings: &Settings) -> Result<TcpStream, Refusal> {
    let addrs: Vec<SocketAddr> = settings
        .resolver
        .resolve(host, port)
        .map_err(|_| Refusal(502, "Bad Gateway", ""))?
        .into_iter()
        .filter(|a| settings.policy.dest_allowed(a.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(FORBIDDEN);
    }
    let mut timed_out = false;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, settings.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => timed_out |= e.kind() == ErrorKind::TimedOut,
        }
    }
    Err(if timed_out {
        Refusal(504, "Gateway Timeout", "")
    } else {
        Refusal(502, "Bad Gateway", "")
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

fn refuse(w: &mut impl Write, Refusal(status, reason, extra): Refusal) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    w.flush()
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
    fn refusals_are_complete_responses() {
        let mut out = Vec::new();
        refuse(&mut out, PROXY_AUTH).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 407 "));
        assert!(text.contains("Proxy-Authenticate: Basic realm=\"proxy_server\"\r\n"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }
}
