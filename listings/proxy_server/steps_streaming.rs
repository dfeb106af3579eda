//! Streaming bodies both ways through one buffer per client connection,
//! from step 3 on: the request rewritten for the origin, sent on a pooled
//! connection with its body, the answer streamed back re-framed. A step
//! includes this file with `#[path = "steps_streaming.rs"] mod
//! steps_streaming;`; the `Via` name is the step's own `VIA`.

use std::io::{self, BufRead, ErrorKind, Write};
use std::net::SocketAddr;

use may_patterns::http::{
    append_via, copy_body, read_response_head, remove_hop_by_hop, response_framing, set_framing,
    write_continue, write_error, write_head, Framing, Limits, RequestHead, ResponseHead,
};

use crate::steps_pool::{Pool, Upstream};
use crate::steps_request::Target;
use crate::VIA;

/// The largest body the proxy passes either way: a policy, not a memory
/// bound (a body never sits in memory whole).
pub const MAX_BODY: u64 = 1 << 30;

// ANCHOR: failure
/// Why a request ended before its answer was relayed whole.
pub enum Failure {
    /// Nothing was sent to the client yet: answer this, then close.
    Refuse(u16, &'static str, String),
    /// The origin connection failed: `502`, or a retry if the request
    /// has no body and the connection was a pooled one.
    Upstream(io::Error),
    /// The client went away, or the answer broke off half-sent: close.
    Broken(io::Error),
}

impl Failure {
    /// The answer the proxy gives: status, reason, a sentence. A broken
    /// connection gets none: its error is passed on.
    pub fn answer(self) -> io::Result<(u16, &'static str, String)> {
        match self {
            Failure::Refuse(status, reason, why) => Ok((status, reason, why)),
            Failure::Upstream(e) => Ok((502, "Bad Gateway", e.to_string())),
            Failure::Broken(e) => Err(e),
        }
    }
}

/// Answer a request that failed before its answer began, and close.
pub fn refuse(client: &mut impl Write, failure: Failure) -> io::Result<()> {
    let (status, reason, why) = failure.answer()?;
    write_error(client, status, reason, &[], &why, true)
}
// ANCHOR_END: failure

/// What is kept of a request once its head has been rewritten.
struct Asked {
    method: String,
    version: u8,
    keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
    body: Framing,
}

/// A client connection's two halves and its one body buffer.
pub struct Io<'a, R, W> {
    pub client_in: &'a mut R,
    pub client_out: &'a mut W,
    pub buf: &'a mut [u8],
}

/// Forward one request and its answer to the first of `addrs` that
/// answers (until step 5 there is one). What was relayed: whether the
/// client connection can carry the next request, the answer's status, and
/// its body's bytes (step 6 logs them).
pub fn forward<R: BufRead, W: Write>(
    head: RequestHead,
    target: &Target,
    addrs: &[SocketAddr],
    io: Io<'_, R, W>,
    pool: &Pool,
) -> Result<(bool, u16, u64), Failure> {
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

// ANCHOR: exchange
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
            None => pool.connect(addrs).map_err(Failure::Upstream)?,
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
// ANCHOR_END: exchange

// ANCHOR: relay
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
) -> Result<(bool, u16, u64), Failure> {
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
    Ok((keep_alive, head.status, bytes))
}
// ANCHOR_END: relay
