//! One request sent to a backend and its answer streamed back, with a
//! retry on another backend when that is safe.
//!
//! The head that goes out is the client's with the hop-by-hop headers
//! removed, `Via` and `X-Forwarded-For` appended and the framing set again
//! (RFC 9110 7.6); the body is streamed through the connection's one
//! buffer by `copy_body`, never held whole. The answer comes back the same
//! way, re-framed for the client (chunked for an HTTP/1.1 client when the
//! backend sends no length; raw, then a close, for an HTTP/1.0 one).
//!
//! A backend that refuses the connect, resets it before answering, or
//! stays silent past `--response-timeout` gets a failure on its lease
//! (the passive check). The request then goes to another backend if
//! [`may_retry`] says so, up to `--retries` times; otherwise the client
//! gets `502` (`504` after a timeout).

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use may::net::TcpStream;
use may_patterns::balance::{Lease, Outcome, Pool};
use may_patterns::http::{
    append_via, copy_body, header, read_response_head, remove_hop_by_hop, response_framing,
    set_framing, write_continue, write_head, Framing, Limits, RequestHead,
};

use crate::handler::{Settings, Stats};

/// The pseudonym this hop adds to `Via`.
pub const VIA: &str = "load_balancer";

/// Bounds on a request or response head (a browser's cookies fit), and
/// on the chunk lines and trailers of a body; body sizes are capped by the
/// callers of `copy_body`.
pub const LIMITS: Limits = Limits {
    head_bytes: 16 * 1024,
    headers: 64,
    body_bytes: 0,
};

/// The largest request body forwarded (nginx's `client_max_body_size`
/// is 1 MiB by default; uploads through a balancer are often larger).
/// The body is streamed, so this bounds a backend's work, not our memory.
pub const REQUEST_BODY_CAP: u64 = 64 * 1024 * 1024;

/// The read buffer of a backend connection: a response head fits.
const UPSTREAM_BUFFER: usize = 8 * 1024;

/// Bytes of a request or response gathered before one write to a socket.
const WRITE_BUFFER: usize = 8 * 1024;

/// Why one attempt got no answer from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connect was refused or timed out: nothing was sent.
    Connect { timed_out: bool },
    /// The request went out (maybe in part) and the connection broke
    /// before a byte of the answer.
    Reset,
    /// The request went out and no answer came in time.
    Timeout,
    /// An answer began but was not HTTP we can relay.
    BadAnswer,
}

impl Failure {
    /// What the backend's lease is told (its passive health check).
    pub fn outcome(self) -> Outcome {
        match self {
            Failure::Connect { timed_out: true } | Failure::Timeout => Outcome::Timeout,
            _ => Outcome::Error,
        }
    }

    /// What the client is answered when no retry is left.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Failure::Connect { timed_out: true } | Failure::Timeout => (504, "Gateway Timeout"),
            _ => (502, "Bad Gateway"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Failure::Connect { timed_out: true } => {
                "the backend did not accept the connection in time"
            }
            Failure::Connect { timed_out: false } => "the backend refused the connection",
            Failure::Reset => "the backend closed the connection before answering",
            Failure::Timeout => "the backend did not answer in time",
            Failure::BadAnswer => "the backend's answer was malformed",
        }
    }
}

// ANCHOR: may_retry
/// Whether a request that failed this way may be sent to another backend.
///
/// A failed connect sent nothing, so any request may go elsewhere (nginx's
/// `proxy_next_upstream` does the same: its `non_idempotent` rule is about
/// requests already sent). Once sent, only an idempotent method without a
/// body is sent again: the first backend may have acted on it, and a body
/// read from the client cannot be read twice. A malformed answer is an
/// answer: not retried.
pub fn may_retry(failure: Failure, idempotent: bool, has_body: bool) -> bool {
    match failure {
        Failure::Connect { .. } => true,
        Failure::Reset | Failure::Timeout => idempotent && !has_body,
        Failure::BadAnswer => false,
    }
}
// ANCHOR_END: may_retry

/// RFC 9110 9.2.2's idempotent methods.
pub fn idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// How forwarding one request ended.
#[derive(Debug)]
pub enum Forwarded {
    /// A backend's answer was relayed; `keep`: the client connection can
    /// carry the next request.
    Relayed { keep: bool },
    /// No backend answered: the handler answers this itself (and closes a
    /// connection whose request had a body: it may be unread, or read in
    /// part).
    Failed {
        status: u16,
        reason: &'static str,
        body: String,
    },
}

/// An attempt that ended without an answer to relay.
enum Attempt {
    /// The backend failed; the request may go elsewhere.
    Failed(Failure),
    /// The client's side broke, or the answer broke after its head was
    /// relayed: nothing more can be said to this client.
    Aborted(io::Error),
}

/// The request as it goes to every backend tried.
pub struct Outgoing<'a> {
    pub head: &'a RequestHead,
    /// The start line and headers, ready to write.
    pub bytes: Vec<u8>,
    pub framing: Framing,
}

impl<'a> Outgoing<'a> {
    /// `head` rewritten for a backend: origin-form `target`, hop-by-hop
    /// headers removed (with `Expect`, which this hop answers), `Via` and
    /// `X-Forwarded-For` (`client`'s address) appended, `Host` added if
    /// the client sent none (HTTP/1.0) as `local`, where it reached us.
    pub fn new(
        head: &'a RequestHead,
        target: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> io::Result<Self> {
        let framing = head.framing()?;
        let mut headers = head.headers.clone();
        remove_hop_by_hop(&mut headers);
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("expect"));
        append_via(&mut headers, head.version, VIA);
        append_forwarded_for(&mut headers, client);
        if header(&headers, "host").is_none() {
            headers.push(("Host".to_owned(), local.to_string()));
        }
        set_framing(&mut headers, framing);
        let mut bytes = Vec::with_capacity(512);
        write_head(
            &mut bytes,
            &format!("{} {target} HTTP/1.1", head.method),
            &headers,
        )?;
        Ok(Outgoing {
            head,
            bytes,
            framing,
        })
    }

    fn has_body(&self) -> bool {
        self.framing != Framing::Empty
    }
}

/// Add the client's address to the last `X-Forwarded-For`, or add one.
fn append_forwarded_for(headers: &mut Vec<(String, String)>, client: SocketAddr) {
    let ip = client.ip().to_canonical().to_string();
    match headers
        .iter_mut()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
    {
        Some((_, value)) => *value = format!("{value}, {ip}"),
        None => headers.push(("X-Forwarded-For".to_owned(), ip)),
    }
}

/// Forward `request`, whose body (if any) is next in `client`; its answer
/// is written to `client`. An `Err` means the client connection broke:
/// close it.
pub fn forward<C: Read + Write>(
    client: &mut BufReader<C>,
    request: &Outgoing,
    settings: &Settings,
    stats: &Stats,
    buf: &mut [u8],
) -> io::Result<Forwarded> {
    let pool = &settings.pool;
    let idempotent = idempotent(&request.head.method);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last: Option<Failure> = None;
    for attempt in 0..=settings.retries {
        let Some(lease) = pick_untried(pool, &tried) else {
            break;
        };
        if attempt > 0 {
            stats.retried.fetch_add(1, Ordering::Relaxed);
        }
        let addr = lease.addr();
        tried.push(addr);
        match send(addr, request, client, settings, buf) {
            Ok(keep) => {
                lease.done(Outcome::Ok);
                return Ok(Forwarded::Relayed { keep });
            }
            Err(Attempt::Aborted(e)) => return Err(e), // no verdict on the backend
            Err(Attempt::Failed(failure)) => {
                lease.done(failure.outcome());
                last = Some(failure);
                if !may_retry(failure, idempotent, request.has_body()) {
                    break;
                }
            }
        }
    }
    Ok(match last {
        None => Forwarded::Failed {
            status: 503,
            reason: "Service Unavailable",
            body: "no backend is up\n".to_owned(),
        },
        Some(failure) => {
            let (status, reason) = failure.status();
            Forwarded::Failed {
                status,
                reason,
                body: format!("{}\n", failure.describe()),
            }
        }
    })
}

/// A lease on a backend this request has not tried yet. The pool has no
/// "all but these" pick, so this picks again (at most once per backend)
/// until the algorithm lands elsewhere; a pick given back unused is no
/// request in flight, but it does count in that backend's `picks`.
fn pick_untried(pool: &Pool, tried: &[SocketAddr]) -> Option<Lease> {
    for _ in 0..pool.addrs().len() {
        let lease = pool.pick()?;
        if !tried.contains(&lease.addr()) {
            return Some(lease);
        }
    }
    None
}

/// One attempt on `addr`: the request out, the answer back. `Ok(keep)`:
/// relayed, and whether the client connection can go on.
fn send<C: Read + Write>(
    addr: SocketAddr,
    request: &Outgoing,
    client: &mut BufReader<C>,
    settings: &Settings,
    buf: &mut [u8],
) -> Result<bool, Attempt> {
    // Only a request that may be sent twice goes on a kept connection: if
    // the backend closed it as we sent, the request goes again on a new one.
    let mut reuse = !request.has_body() && idempotent(&request.head.method);
    loop {
        let kept = if reuse {
            settings.upstreams.take(addr)
        } else {
            None
        };
        let reused = kept.is_some();
        let stream = match kept {
            Some(stream) => stream,
            None => connect(addr, settings).map_err(Attempt::Failed)?,
        };
        let mut upstream = BufReader::with_capacity(UPSTREAM_BUFFER, stream);
        let sent = write_request(&mut upstream, request, client, buf);
        // A backend may answer before it has read the whole body (a 413, a
        // 401) and close: our writes then fail, but its answer is there.
        let cut_short = request.has_body() && matches!(sent, Err(Attempt::Failed(_)));
        let answered = match sent {
            Err(Attempt::Failed(_)) if cut_short => first_byte(&mut upstream),
            sent => sent.and_then(|()| first_byte(&mut upstream)),
        };
        match answered {
            Ok(()) => {
                let head = request.head;
                return relay(addr, upstream, head, client, settings, buf, cut_short);
            }
            Err(Attempt::Failed(Failure::Reset)) if reused => reuse = false,
            Err(e) => return Err(e),
        }
    }
}

fn connect(addr: SocketAddr, settings: &Settings) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect_timeout(&addr, settings.connect_timeout).map_err(|e| {
        Failure::Connect {
            timed_out: e.kind() == ErrorKind::TimedOut,
        }
    })?;
    // A backend slower than this to answer, or to take what we send, is
    // given up on. Set once: a kept connection keeps them.
    let timeouts = stream
        .set_read_timeout(Some(settings.response_timeout))
        .and_then(|()| stream.set_write_timeout(Some(settings.response_timeout)))
        .and_then(|()| stream.set_nodelay(true));
    timeouts.map_err(|_| Failure::Connect { timed_out: false })?;
    Ok(stream)
}

/// Write the head, then the client's body (answering `Expect:
/// 100-continue` first, now that a backend is connected).
fn write_request<C: Read + Write>(
    upstream: &mut BufReader<TcpStream>,
    request: &Outgoing,
    client: &mut BufReader<C>,
    buf: &mut [u8],
) -> Result<(), Attempt> {
    let backend_broke = |_| Attempt::Failed(Failure::Reset);
    if !request.has_body() {
        return upstream
            .get_mut()
            .write_all(&request.bytes)
            .map_err(backend_broke);
    }
    if request.head.expects_continue() {
        write_continue(client.get_mut()).map_err(Attempt::Aborted)?;
    }
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, Watched::new(upstream.get_mut()));
    out.write_all(&request.bytes).map_err(backend_broke)?;
    let copied = copy_body(
        client,
        request.framing,
        &mut out,
        request.framing,
        REQUEST_BODY_CAP,
        &LIMITS,
        buf,
    );
    let flushed = copied.and_then(|_| out.flush());
    match flushed {
        Ok(()) => Ok(()),
        Err(_) if out.get_ref().failed => Err(Attempt::Failed(Failure::Reset)),
        Err(e) => Err(Attempt::Aborted(e)), // the client's body broke
    }
}

/// A writer that remembers whether it failed, so a body copy's error can
/// be blamed on the right side.
struct Watched<W> {
    inner: W,
    failed: bool,
}

impl<W> Watched<W> {
    fn new(inner: W) -> Self {
        Watched {
            inner,
            failed: false,
        }
    }
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(data);
        self.failed |= written.is_err();
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.inner.flush();
        self.failed |= flushed.is_err();
        flushed
    }
}

/// Wait for the answer's first byte: before it, a failure is the
/// backend's and the request may go elsewhere.
fn first_byte(upstream: &mut BufReader<TcpStream>) -> Result<(), Attempt> {
    match upstream.fill_buf() {
        Ok([]) => Err(Attempt::Failed(Failure::Reset)),
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Err(Attempt::Failed(Failure::Timeout))
        }
        Err(_) => Err(Attempt::Failed(Failure::Reset)),
    }
}

/// Relay the answer whose first byte is in `upstream`; keep the backend
/// connection for the next request if it can carry one. `cut_short`: the
/// request's body was not all sent (nor all read from the client), so
/// neither connection can carry another request.
fn relay<C: Read + Write>(
    addr: SocketAddr,
    mut upstream: BufReader<TcpStream>,
    head: &RequestHead,
    client: &mut BufReader<C>,
    settings: &Settings,
    buf: &mut [u8],
    cut_short: bool,
) -> Result<bool, Attempt> {
    let bad = |_| Attempt::Failed(Failure::BadAnswer);
    let answer = read_response_head(&mut upstream, &LIMITS).map_err(bad)?;
    if answer.status == 101 {
        return Err(Attempt::Failed(Failure::BadAnswer)); // no upgrade was asked
    }
    let from = response_framing(&head.method, answer.status, &answer.headers).map_err(bad)?;
    let upstream_keep = answer.keep_alive() && from != Framing::UntilClose && !cut_short;
    let mut headers = answer.headers;
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, answer.version, VIA);
    let to = client_framing(from, head.version, &mut headers);
    let keep = head.keep_alive() && to != Framing::UntilClose && !cut_short;
    if !keep {
        headers.push(("Connection".to_owned(), "close".to_owned()));
    } else if head.version == 0 {
        headers.push(("Connection".to_owned(), "keep-alive".to_owned()));
    }
    let start = format!("HTTP/1.1 {} {}", answer.status, answer.reason);
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, client.get_mut());
    let relayed = write_head(&mut out, &start, &headers)
        .and_then(|()| copy_body(&mut upstream, from, &mut out, to, u64::MAX, &LIMITS, buf))
        .and_then(|_| out.flush());
    // Past the head, nothing else can be told to the client.
    relayed.map_err(Attempt::Aborted)?;
    if upstream_keep && upstream.buffer().is_empty() {
        settings.upstreams.put(addr, upstream.into_inner());
    }
    Ok(keep)
}

/// How the answer's body goes to the client, its headers set to match:
/// as it came with a length or none at all; chunked for an HTTP/1.1 client
/// otherwise; raw until close for an HTTP/1.0 one, which knows no chunks.
fn client_framing(from: Framing, version: u8, headers: &mut Vec<(String, String)>) -> Framing {
    match from {
        // A HEAD or 304 answer keeps its Content-Length: it describes the
        // body a GET would get.
        Framing::Empty => Framing::Empty,
        Framing::Length(n) => {
            set_framing(headers, from);
            Framing::Length(n)
        }
        Framing::Chunked | Framing::UntilClose if version >= 1 => {
            set_framing(headers, Framing::Chunked);
            Framing::Chunked
        }
        Framing::Chunked | Framing::UntilClose => {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
            Framing::UntilClose
        }
    }
}

/// The request target as the backend gets it: origin-form (`/path?q`).
/// An absolute-form target (`http://host/path`, RFC 9112 3.2.2) becomes
/// its path; `*` is kept for `OPTIONS`. `None`: not something to forward.
pub fn origin_form(method: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_owned());
    }
    if target == "*" && method.eq_ignore_ascii_case("OPTIONS") {
        return Some(target.to_owned());
    }
    let lower = target.get(..8).map(str::to_ascii_lowercase)?;
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return None;
    };
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_at == 0 {
        return None; // no authority
    }
    Some(match &rest[path_at..] {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_requests_are_retried_after_sending() {
        let (connect, reset, timeout, bad) = (
            Failure::Connect { timed_out: false },
            Failure::Reset,
            Failure::Timeout,
            Failure::BadAnswer,
        );
        // Nothing was sent: any request may go elsewhere.
        assert!(may_retry(connect, false, true));
        assert!(may_retry(Failure::Connect { timed_out: true }, true, false));
        // Sent: only idempotent and bodiless.
        assert!(may_retry(reset, true, false));
        assert!(may_retry(timeout, true, false));
        assert!(
            !may_retry(reset, false, false),
            "a POST may have been acted on"
        );
        assert!(
            !may_retry(timeout, true, true),
            "a body cannot be read twice"
        );
        assert!(!may_retry(bad, true, false), "an answer is an answer");
        assert!(idempotent("get") && idempotent("DELETE"));
        assert!(!idempotent("POST") && !idempotent("PATCH"));
    }

    #[test]
    fn failures_map_to_outcomes_and_statuses() {
        assert_eq!(Failure::Timeout.status().0, 504);
        assert_eq!(Failure::Connect { timed_out: true }.status().0, 504);
        assert_eq!(Failure::Reset.status().0, 502);
        assert_eq!(Failure::BadAnswer.outcome(), Outcome::Error);
        assert_eq!(Failure::Timeout.outcome(), Outcome::Timeout);
    }

    #[test]
    fn targets_become_origin_form() {
        assert_eq!(origin_form("GET", "/a?b=1").as_deref(), Some("/a?b=1"));
        assert_eq!(
            origin_form("GET", "http://h:8/x/y").as_deref(),
            Some("/x/y")
        );
        assert_eq!(origin_form("GET", "HTTP://h").as_deref(), Some("/"));
        assert_eq!(origin_form("GET", "http://h?q").as_deref(), Some("/?q"));
        assert_eq!(origin_form("OPTIONS", "*").as_deref(), Some("*"));
        assert_eq!(origin_form("GET", "*"), None);
        assert_eq!(origin_form("CONNECT", "h:443"), None);
        assert_eq!(origin_form("GET", "http:///x"), None);
    }

    fn head(text: &str) -> RequestHead {
        may_patterns::http::read_request_head(&mut text.as_bytes(), &LIMITS)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_outgoing_head_drops_hop_by_hop_and_adds_via_and_forwarded_for() {
        let h = head(
            "POST /u HTTP/1.1\r\nHost: site\r\nConnection: close, X-Trace\r\nX-Trace: 1\r\n\
             X-Forwarded-For: 10.0.0.9\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        let (client, local) = (
            "10.1.2.3:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let out = Outgoing::new(&h, "/u", client, local).unwrap();
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.starts_with("POST /u HTTP/1.1\r\n"), "{text}");
        for gone in ["Connection", "X-Trace", "Expect"] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
        for kept in [
            "Host: site\r\n",
            "Via: 1.1 load_balancer\r\n",
            "X-Forwarded-For: 10.0.0.9, 10.1.2.3\r\n",
            "Content-Length: 3\r\n",
        ] {
            assert!(text.contains(kept), "{kept:?} missing from {text}");
        }
        assert_eq!(out.framing, Framing::Length(3));
        let old = head("GET / HTTP/1.0\r\n\r\n");
        let out = Outgoing::new(&old, "/", client, local).unwrap();
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.contains("Host: 127.0.0.1:80\r\n") && text.contains("Via: 1.0 "));
    }

    #[test]
    fn answers_are_reframed_for_the_client() {
        let mut h = vec![("Transfer-Encoding".to_owned(), "chunked".to_owned())];
        assert_eq!(
            client_framing(Framing::Chunked, 1, &mut h),
            Framing::Chunked
        );
        let mut h = vec![];
        assert_eq!(
            client_framing(Framing::UntilClose, 1, &mut h),
            Framing::Chunked
        );
        assert_eq!(h, [("Transfer-Encoding".to_owned(), "chunked".to_owned())]);
        let mut h = vec![];
        assert_eq!(
            client_framing(Framing::Chunked, 0, &mut h),
            Framing::UntilClose
        );
        assert!(h.is_empty(), "an HTTP/1.0 client is sent no chunks");
        let mut h = vec![("Content-Length".to_owned(), "10".to_owned())];
        assert_eq!(client_framing(Framing::Empty, 1, &mut h), Framing::Empty);
        assert_eq!(h.len(), 1, "a HEAD answer keeps its length");
    }
}
