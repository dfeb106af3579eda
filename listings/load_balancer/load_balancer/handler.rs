//! One client connection: request after request (keep-alive), each one
//! either an admin request answered here or forwarded to a backend.
//!
//! Timeouts: between requests the connection may stay silent for
//! `--idle-timeout`; once a request has begun, its head must arrive within
//! `--header-timeout` (each read, and the head as a whole, so a client
//! sending a byte now and then cannot hold the connection: Slowloris).
//! Writes to a client that stops reading fail after `--idle-timeout`.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::balance::Pool;
use may_patterns::http::{
    header, read_request_head, write_error, write_response, Framing, RequestHead,
};
use may_patterns::server::Conn;

use crate::admin;
use crate::buffers::Buffers;
use crate::forward::{self, Forwarded, LIMITS, REQUEST_BODY_CAP};
use crate::rewrite::{self, Outgoing};
use crate::upstream::Upstreams;

/// A client connection's read buffer: most request heads fit.
const CLIENT_BUFFER: usize = 8 * 1024;

/// What every connection reads.
pub struct Settings {
    pub pool: Arc<Pool>,
    pub upstreams: Upstreams,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub stats_path: String,
}

/// Counts for the summary.
#[derive(Default)]
pub struct Stats {
    /// Request heads read.
    pub requests: AtomicU64,
    /// Requests sent to another backend after a failure.
    pub retried: AtomicU64,
    /// Requests answered 502, 503 or 504 by the balancer itself.
    pub failed: AtomicU64,
    /// Requests refused as malformed (400, 413).
    pub bad_requests: AtomicU64,
}

/// The client connection under a deadline: a read after it fails with
/// `TimedOut`. It bounds a request head as a whole, which the socket's
/// per-read timeout alone does not.
pub struct Client {
    conn: Conn,
    deadline: Option<Instant>,
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "the request head took too long",
            ));
        }
        self.conn.read(buf)
    }
}

impl Write for Client {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.flush()
    }
}

/// Serve one client connection until it closes, times out, breaks or asks
/// to close. Its errors end only this connection: they are not logged, as
/// clients that go away are ordinary.
pub fn serve(conn: Conn, settings: &Settings, stats: &Stats) {
    let _ = serve_inner(conn, settings, stats);
}

fn serve_inner(conn: Conn, settings: &Settings, stats: &Stats) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_write_timeout(Some(settings.idle_timeout))?;
    let (peer, local) = (conn.peer(), conn.local());
    let mut client = BufReader::with_capacity(
        CLIENT_BUFFER,
        Client {
            conn,
            deadline: None,
        },
    );
    let mut bufs = Buffers::new();
    // The socket's read timeout, changed only when it must: each change is
    // a `setsockopt`.
    let mut timeout = ReadTimeout::default();
    loop {
        // Idle until the next request's first byte.
        timeout.set(&client, settings.idle_timeout)?;
        if client.fill_buf()?.is_empty() {
            return Ok(());
        }
        // A head that came whole with its first bytes needs no more reads,
        // so no read can outlast --header-timeout: most requests.
        if !holds_whole_head(client.buffer()) {
            timeout.set(&client, settings.header_timeout)?;
            client.get_mut().deadline = Some(Instant::now() + settings.header_timeout);
        }
        let head = match read_request_head(&mut client, &LIMITS) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                let why = format!("{e}\n");
                return write_error(client.get_mut(), 400, "Bad Request", &[], &why, true);
            }
            Err(e) => return Err(e),
        };
        client.get_mut().deadline = None;
        timeout.set(&client, settings.idle_timeout)?;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let keep = handle(&mut client, &head, peer, local, settings, stats, &mut bufs)?;
        if !keep || client.get_ref().conn.stopping().is_triggered() {
            return Ok(());
        }
    }
}

/// The read timeout last set on a client socket.
#[derive(Default)]
struct ReadTimeout(Option<Duration>);

impl ReadTimeout {
    fn set(&mut self, client: &BufReader<Client>, timeout: Duration) -> io::Result<()> {
        if self.0 != Some(timeout) {
            client.get_ref().conn.set_idle_timeout(Some(timeout))?;
            self.0 = Some(timeout);
        }
        Ok(())
    }
}

/// Whether `buffered` holds a whole request head: an empty line ends it
/// (`read_request_head` stops at the first one, or fails before it,
/// without reading further).
fn holds_whole_head(buffered: &[u8]) -> bool {
    buffered.starts_with(b"\n")
        || buffered.starts_with(b"\r\n")
        || buffered.windows(2).any(|w| w == b"\n\n")
        || buffered.windows(3).any(|w| w == b"\n\r\n")
}

/// Answer one request whose head has been read; `Ok(keep)`: whether the
/// connection can carry the next one.
fn handle(
    client: &mut BufReader<Client>,
    head: &RequestHead,
    peer: SocketAddr,
    local: SocketAddr,
    settings: &Settings,
    stats: &Stats,
    bufs: &mut Buffers,
) -> io::Result<bool> {
    let framing = head.framing()?;
    // A refusal leaves an unread body in the stream: then close.
    let keep = head.keep_alive() && framing == Framing::Empty;
    let refuse = |client: &mut BufReader<Client>, status, reason, why: &str| {
        stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        error(client.get_mut(), head, status, reason, why, keep).map(|()| keep)
    };
    if head.version >= 1 && header(&head.headers, "host").is_none() {
        return refuse(
            client,
            400,
            "Bad Request",
            "an HTTP/1.1 request needs Host\n",
        );
    }
    let Some(target) = rewrite::origin_form(&head.method, &head.target) else {
        return refuse(client, 400, "Bad Request", "the target must be a path\n");
    };
    if matches!(framing, Framing::Length(n) if n > REQUEST_BODY_CAP) {
        let why = format!("a body is at most {REQUEST_BODY_CAP} bytes\n");
        return refuse(client, 413, "Content Too Large", &why);
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target.as_str(), None),
    };
    if let Some(which) = admin::route(path, &settings.stats_path) {
        if !admin::allowed(peer.ip()) {
            let why = "admin paths are answered only to loopback clients\n";
            return error(client.get_mut(), head, 403, "Forbidden", why, keep).map(|()| keep);
        }
        let answer = admin::answer(which, &head.method, query, &settings.pool);
        let mut extra = connection_header(head, keep);
        if let Some(allow) = answer.allow {
            extra.push(("Allow", allow));
        }
        let (status, reason, body) = (answer.status, answer.reason, answer.body.as_bytes());
        let out = client.get_mut();
        write_response(out, status, reason, answer.content_type, &extra, body)?;
        return Ok(keep);
    }
    let request = Outgoing::new(head, &target, peer, local)?;
    match forward::forward(client, &request, settings, stats, bufs)? {
        Forwarded::Relayed { keep } => Ok(keep),
        Forwarded::Failed {
            status,
            reason,
            body,
        } => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            error(client.get_mut(), head, status, reason, &body, keep)?;
            Ok(keep)
        }
    }
}

/// `Connection: close` when closing; `keep-alive` to an HTTP/1.0 client
/// that asked for it (it assumes a close otherwise).
fn connection_header(head: &RequestHead, keep: bool) -> Vec<(&'static str, &'static str)> {
    match (keep, head.version) {
        (false, _) => vec![("Connection", "close")],
        (true, 0) => vec![("Connection", "keep-alive")],
        (true, _) => vec![],
    }
}

/// An error the balancer answers itself, as text.
fn error(
    out: &mut Client,
    head: &RequestHead,
    status: u16,
    reason: &str,
    why: &str,
    keep: bool,
) -> io::Result<()> {
    let extra = match (keep, head.version) {
        (true, 0) => vec![("Connection", "keep-alive")],
        _ => vec![],
    };
    write_error(out, status, reason, &extra, why, !keep)
}

#[cfg(test)]
mod tests {
    use super::holds_whole_head;

    #[test]
    fn a_head_is_whole_only_up_to_its_empty_line() {
        assert!(holds_whole_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(holds_whole_head(b"GET / HTTP/1.0\n\nleft over"));
        assert!(holds_whole_head(b"\r\nGET"), "an empty first line ends it");
        assert!(!holds_whole_head(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!holds_whole_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!holds_whole_head(b"G"));
    }
}
