//! Plain HTTP through the proxy: an absolute-form request
//! (`GET http://host:port/path HTTP/1.1`) is checked, its head rewritten
//! ([`rewrite`](crate::rewrite)) and sent on a pooled keep-alive connection
//! to the origin; the answer comes back the same way. Both bodies stream
//! through the connection's one copy buffer, never read whole.
//!
//! Errors before the answer has started are a short `text/plain` response
//! and a close (`502` cannot connect or a bad answer, `504` too slow, `400`
//! a bad request). Once the answer has started, a failure can only be
//! told by closing the client's connection.

use std::io::{self, BufRead, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use may_patterns::http::{
    copy_body, read_response_head, response_framing, write_continue, write_head, Framing, Limits,
    RequestHead,
};

use crate::handler::{
    connect_any, copy_buffer, destinations, refuse, Client, Refusal, Settings, Stats,
};
use crate::rewrite::{parse_target, request_to_origin, response_to_client};
use crate::upstream::Origin;

/// The connection's copy buffer: one body piece at a time, on the heap.
pub const COPY_BUF: usize = 16 * 1024;
/// An origin's answer head: twice the request's bound, since real sites
/// send long `Set-Cookie` and security headers.
const RESPONSE_LIMITS: Limits = Limits {
    head_bytes: 16 * 1024,
    headers: 64,
    body_bytes: 0, // bodies are streamed, never collected
};

/// Whether the client's connection can carry another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// What became of one request, for the access log and the loop.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// The status the client got; `None` if it got no answer (it left).
    pub status: Option<u16>,
    /// Response body bytes sent to the client.
    pub bytes_down: u64,
    pub next: Next,
}

/// Methods that may be sent twice (RFC 9110 9.2.2): only these are
/// retried when a reused connection turns out to be dead.
fn idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].contains(&method)
}

/// Where sending a request failed.
enum Failed {
    /// The origin side: a write, or the wait for its first byte.
    Origin(io::Error),
    /// The client's body is malformed (a bad chunk, too short).
    BadBody(io::Error),
    /// The client went away (or stalled past its timeout) mid-body.
    ClientGone,
}

/// A writer that remembers whether it failed, so that after a copy error
/// the caller knows which side broke.
struct Watched<'a, W: Write> {
    inner: &'a mut W,
    failed: bool,
}

impl<'a, W: Write> Watched<'a, W> {
    fn new(inner: &'a mut W) -> Self {
        Watched {
            inner,
            failed: false,
        }
    }
}

impl<W: Write> Write for Watched<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Forward one request (its head already read and the client allowed)
/// and its answer. Refusals are answered here and end with `Next::Close`.
/// An `Err` is a client connection to close without a word.
pub fn forward(
    head: &RequestHead,
    client: &mut Client,
    settings: &Settings,
    stats: &Stats,
) -> io::Result<Served> {
    let pool = &settings.pool;
    let target = match parse_target(&head.target) {
        Ok(target) => target,
        Err(why) => return refused(client, stats, Refusal::new(400, why)),
    };
    if !settings.policy.port_allowed(target.port, false) {
        let why = format!("port {} is closed to plain HTTP (--deny-port)", target.port);
        return refused(client, stats, Refusal::new(403, why));
    }
    let framing = head.framing()?; // read_request_head checked it
    let addrs = match destinations(target.host, target.port, settings) {
        Ok(addrs) => addrs,
        Err(refusal) => return refused(client, stats, refusal),
    };
    let mut origin = match pool.take(&addrs) {
        Some(origin) => {
            stats.origin_reused.fetch_add(1, Ordering::Relaxed);
            origin
        }
        None => match fresh(&addrs, settings) {
            Ok(origin) => origin,
            Err(refusal) => return refused(client, stats, refusal),
        },
    };
    let (start_line, headers) = request_to_origin(head, &target, framing);
    // Only a request without a body can be sent again: its body is gone.
    let retryable = idempotent(&head.method) && framing == Framing::Empty;
    let bytes_up = loop {
        let sent = send(
            &mut origin,
            &start_line,
            &headers,
            framing,
            head,
            client,
            settings,
        );
        match sent {
            Ok(bytes_up) => break bytes_up,
            Err(Failed::Origin(_)) if origin.reused && retryable => {
                // A pooled connection the origin closed as we used it.
                stats.origin_retried.fetch_add(1, Ordering::Relaxed);
                origin = match fresh(&addrs, settings) {
                    Ok(origin) => origin,
                    Err(refusal) => return refused(client, stats, refusal),
                };
            }
            Err(Failed::Origin(e)) => {
                return refused(client, stats, origin_failure(&e, origin.addr, settings))
            }
            Err(Failed::BadBody(e)) => {
                let why = format!("the request body is malformed: {e}");
                return refused(client, stats, Refusal::new(400, why));
            }
            Err(Failed::ClientGone) => return Ok(client_gone(stats, origin, None)),
        }
    };
    let response = match read_response_head(&mut origin.reader, &RESPONSE_LIMITS) {
        Ok(response) if response.status == 101 => {
            let why = "the origin switched protocols, which this proxy does not relay";
            return refused(client, stats, Refusal::new(502, why));
        }
        Ok(response) => response,
        Err(e) => return refused(client, stats, origin_failure(&e, origin.addr, settings)),
    };
    // The body's pieces come at the pace of a transfer, not of an answer.
    origin
        .reader
        .get_ref()
        .set_read_timeout(Some(settings.idle_timeout))?;
    let from = match response_framing(&head.method, response.status, &response.headers) {
        Ok(from) => from,
        Err(e) => {
            let why = format!("the answer from {} is malformed: {e}", origin.addr);
            return refused(client, stats, Refusal::new(502, why));
        }
    };
    let answer = response_to_client(&response, from, head.version, head.keep_alive());
    let status = Some(response.status);
    if write_head(&mut client.writer, &answer.start_line, &answer.headers).is_err() {
        return Ok(client_gone(stats, origin, status));
    }
    let mut to_client = Watched::new(&mut client.writer);
    let copied = copy_body(
        &mut origin.reader,
        from,
        &mut to_client,
        answer.framing,
        u64::MAX,
        &RESPONSE_LIMITS,
        copy_buffer(&mut client.buf),
    );
    let client_failed = to_client.failed;
    let bytes_down = match copied.and_then(|n| client.writer.flush().map(|()| n)) {
        Ok(n) => n,
        Err(_) if client_failed => return Ok(client_gone(stats, origin, status)),
        Err(e) => {
            // The answer has started: closing is all that is left to say.
            stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
            origin.close();
            return Err(e);
        }
    };
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    stats.bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
    stats.bytes_down.fetch_add(bytes_down, Ordering::Relaxed);
    // Reused only if the origin allows it and the body's end was its
    // framing's, not the origin's close.
    if response.keep_alive() && from != Framing::UntilClose {
        pool.put(origin);
    }
    Ok(Served {
        status,
        bytes_down,
        next: match answer.keep_alive {
            true => Next::KeepAlive,
            false => Next::Close,
        },
    })
}

/// Send the head and the body, then wait for the answer's first byte, up
/// to `--response-timeout`. Returns the body bytes sent.
///
/// `Expect: 100-continue` is met here, not forwarded: once the request is
/// allowed and the origin connected, the proxy answers `100 Continue`
/// itself and streams the body. RFC 9110 10.1.1 lets a proxy do so, and
/// it is simpler than relaying the origin's interim answer (which would
/// mean reading from the origin while the client waits to send). A
/// request without a body gets no `100`: there is nothing to invite.
fn send(
    origin: &mut Origin,
    start_line: &str,
    headers: &[(String, String)],
    framing: Framing,
    head: &RequestHead,
    client: &mut Client,
    settings: &Settings,
) -> Result<u64, Failed> {
    write_head(&mut origin.writer, start_line, headers).map_err(Failed::Origin)?;
    let mut bytes_up = 0;
    if framing != Framing::Empty {
        if head.expects_continue() {
            write_continue(&mut client.writer).map_err(|_| Failed::ClientGone)?;
        }
        let mut to_origin = Watched::new(&mut origin.writer);
        let copied = copy_body(
            &mut client.reader,
            framing,
            &mut to_origin,
            framing,
            u64::MAX,
            &Limits::default(),
            copy_buffer(&mut client.buf),
        );
        bytes_up = match copied {
            Ok(n) => n,
            Err(e) if to_origin.failed => return Err(Failed::Origin(e)),
            Err(e) if e.kind() == ErrorKind::InvalidData => return Err(Failed::BadBody(e)),
            Err(_) => return Err(Failed::ClientGone),
        };
    }
    origin.writer.flush().map_err(Failed::Origin)?;
    // The origin may take a while to make its answer (a slow query, a
    // big render): a timeout of its own, not the idle one.
    origin
        .reader
        .get_ref()
        .set_read_timeout(Some(settings.response_timeout))
        .map_err(Failed::Origin)?;
    match origin.reader.fill_buf() {
        Ok([]) => Err(Failed::Origin(io::Error::new(
            ErrorKind::UnexpectedEof,
            "the origin closed the connection without an answer",
        ))),
        Ok(_) => Ok(bytes_up),
        Err(e) => Err(Failed::Origin(e)),
    }
}

/// A fresh connection to the first of `addrs` that answers.
fn fresh(addrs: &[SocketAddr], settings: &Settings) -> Result<Origin, Refusal> {
    let (stream, addr) = connect_any(addrs, settings)?;
    Origin::new(stream, addr, settings.idle_timeout)
        .map_err(|e| Refusal::new(502, format!("cannot use the connection to {addr}: {e}")))
}

/// The answer to an origin that failed before its answer started.
fn origin_failure(e: &io::Error, addr: SocketAddr, settings: &Settings) -> Refusal {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Refusal::new(
            504,
            format!(
                "{addr} sent no answer within {} s (--response-timeout)",
                settings.response_timeout.as_secs()
            ),
        ),
        _ => Refusal::new(502, format!("{addr} failed: {e}")),
    }
}

/// Answer `refusal` and close.
fn refused(client: &mut Client, stats: &Stats, refusal: Refusal) -> io::Result<Served> {
    stats.count_refusal(refusal.status);
    refuse(&mut client.writer, &refusal)?;
    Ok(Served {
        status: Some(refusal.status),
        bytes_down: refusal.body().len() as u64,
        next: Next::Close,
    })
}

/// The client left mid-exchange: count it, drop the origin connection
/// (it is mid-message), and end.
fn client_gone(stats: &Stats, origin: Origin, status: Option<u16>) -> Served {
    stats.client_gone.fetch_add(1, Ordering::Relaxed);
    origin.close();
    Served {
        status,
        bytes_down: 0,
        next: Next::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_are_retried() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(idempotent(m));
        }
        for m in ["POST", "PATCH", "get"] {
            assert!(!idempotent(m));
        }
    }
}
