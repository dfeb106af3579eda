//! One request sent to a backend and its answer streamed back, with a
//! retry on another backend when that is safe.
//!
//! The head that goes out is built once by [`rewrite`](crate::rewrite);
//! the body is streamed through the connection's one buffer by
//! `copy_body`, never held whole. The answer comes back the same way,
//! re-framed for the client.
//!
//! A backend that refuses the connect, resets it before answering, or
//! stays silent past `--response-timeout` gets a failure on its lease
//! (the passive check). The request then goes to another backend if
//! [`may_retry`](crate::retry::may_retry) says so, up to `--retries` times; otherwise the client
//! gets `502` (`504` after a timeout).

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use may::net::TcpStream;
use may_patterns::balance::Outcome;
use may_patterns::http::{
    append_via, copy_body, read_response_head, remove_hop_by_hop, response_framing, write_continue,
    write_head, Framing, Limits, RequestHead,
};

use crate::buffers::{Buffered, Buffers, Gathered};
use crate::handler::{Settings, Stats};
use crate::retry::{idempotent, may_retry, Failure};
use crate::rewrite::{client_framing, Outgoing, VIA};
use crate::upstream::InUse;

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

/// Forward `request`, whose body (if any) is next in `client`; its answer
/// is written to `client`, through the connection's `bufs`. An `Err`
/// means the client connection broke: close it.
pub fn forward<C: Read + Write>(
    client: &mut BufReader<C>,
    request: &Outgoing,
    settings: &Settings,
    stats: &Stats,
    bufs: &mut Buffers,
) -> io::Result<Forwarded> {
    let pool = &settings.pool;
    let idempotent = idempotent(&request.head.method);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last: Option<Failure> = None;
    for attempt in 0..=settings.retries {
        let Some(lease) = pool.pick_except(&tried) else {
            break;
        };
        if attempt > 0 {
            stats.retried.fetch_add(1, Ordering::Relaxed);
        }
        let addr = lease.addr();
        tried.push(addr);
        match send(addr, request, client, settings, bufs) {
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

/// One attempt on `addr`: the request out, the answer back. `Ok(keep)`:
/// relayed, and whether the client connection can go on.
fn send<C: Read + Write>(
    addr: SocketAddr,
    request: &Outgoing,
    client: &mut BufReader<C>,
    settings: &Settings,
    bufs: &mut Buffers,
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
        let in_use = settings.upstreams.use_stream(stream);
        let Buffers {
            copy,
            upstream,
            out,
        } = bufs;
        let mut upstream = Buffered::new(in_use, upstream);
        let sent = write_request(&mut upstream, request, client, copy, out);
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
                let to_client = Gathered::new(client.get_mut(), out);
                return relay(addr, upstream, head, to_client, settings, copy, cut_short);
            }
            Err(Attempt::Failed(Failure::Reset)) if reused => reuse = false,
            Err(e) => return Err(e),
        }
    }
}

fn connect(addr: SocketAddr, settings: &Settings) -> Result<TcpStream, Failure> {
    let stream =
        may_patterns::net::connect_timeout(&addr, settings.connect_timeout).map_err(|e| {
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
    upstream: &mut Buffered<InUse>,
    request: &Outgoing,
    client: &mut BufReader<C>,
    buf: &mut [u8],
    out: &mut Vec<u8>,
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
    let mut out = Gathered::new(Watched::new(upstream.get_mut()), out);
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
fn first_byte(upstream: &mut Buffered<InUse>) -> Result<(), Attempt> {
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
fn relay<C: Write>(
    addr: SocketAddr,
    mut upstream: Buffered<InUse>,
    head: &RequestHead,
    mut out: Gathered<C>,
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
    let relayed = write_head(&mut out, &start, &headers)
        .and_then(|()| copy_body(&mut upstream, from, &mut out, to, u64::MAX, &LIMITS, buf))
        .and_then(|_| out.flush());
    // Past the head, nothing else can be told to the client.
    relayed.map_err(Attempt::Aborted)?;
    if upstream_keep && upstream.buffer().is_empty() {
        settings
            .upstreams
            .put(addr, upstream.into_inner().into_idle());
    }
    Ok(keep)
}
