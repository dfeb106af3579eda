//! One request and its response on one connection: the request head
//! written, the response head read, the body streamed to a sink through
//! the connection's fixed buffer.

use std::io::{self, BufRead, ErrorKind, Read, Write};

use url::Url;

use super::gzip::{self, Coding, Decoded, Inflaters};
use super::pool::Connection;
use crate::http::{response_framing, BodyReader, Framing, Limits, ResponseHead};

/// The bytes of a `GET` for `url`: `Host`, `User-Agent`, `Accept-Encoding`
/// when asked for, then the caller's headers. `Err` names a header that
/// would break the head (a line break in a value, a bad name).
pub(super) fn request_head(
    url: &Url,
    user_agent: &str,
    gzip: bool,
    extra: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    let mut add = |name: &str, value: &str| {
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        let value_ok = !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if !(name_ok && value_ok) {
            return Err(format!("request header {name:?}: {value:?} cannot be sent"));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
        Ok(())
    };
    add("User-Agent", user_agent)?;
    if gzip {
        add("Accept-Encoding", "gzip")?;
    }
    for (name, value) in extra {
        add(name, value)?;
    }
    head.push_str("\r\n");
    Ok(head.into_bytes())
}

/// How sending a request and reading its head failed.
pub(super) enum HeadFailure {
    /// The connection was closed before the first byte of a response: on a
    /// pooled connection, the server had closed it while idle.
    Closed(io::Error),
    /// Anything else (the response may have begun).
    Failed(io::Error),
}

// ANCHOR: head
/// Send `request` on `connection` and read the response head.
pub(super) fn send(
    connection: &mut Connection,
    request: &[u8],
    limits: &Limits,
) -> Result<ResponseHead, HeadFailure> {
    let closed = |e: io::Error| match e.kind() {
        ErrorKind::BrokenPipe
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::UnexpectedEof => HeadFailure::Closed(e),
        _ => HeadFailure::Failed(e),
    };
    let stream = connection.get_mut();
    stream.write_all(request).map_err(closed)?;
    stream.flush().map_err(closed)?;
    // Wait for the first byte here, to tell "closed while idle" (retry on
    // a new connection) from a response that broke off (do not).
    if connection.fill_buf().map_err(closed)?.is_empty() {
        let eof = io::Error::new(ErrorKind::UnexpectedEof, "closed before a response");
        return Err(HeadFailure::Closed(eof));
    }
    crate::http::read_response_head(connection, limits).map_err(HeadFailure::Failed)
}
// ANCHOR_END: head

/// How reading a body failed.
pub(super) enum BodyFailure {
    /// More than `max_body` bytes, received or decoded.
    TooLarge,
    /// The server broke the framing, the gzip stream, or used a coding we
    /// do not decode.
    Protocol(String),
    /// The sink refused a chunk.
    Sink(io::Error),
    /// The connection failed.
    Io(io::Error),
}

/// A body read to its end.
pub(super) struct Body {
    /// Bytes as received (before gzip decoding).
    pub(super) wire_bytes: u64,
    /// Whether the connection is at the next response and the server
    /// allows another: it may go back to the pool.
    pub(super) reusable: bool,
}

// ANCHOR: body
/// Read the body of the response `head` to its end, decoded, into `sink`
/// chunk by chunk. Nothing is buffered beyond one chunk.
pub(super) fn read_body(
    connection: &mut Connection,
    head: &ResponseHead,
    max_body: u64,
    limits: &Limits,
    inflaters: &Inflaters,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Body, BodyFailure> {
    let framing = response_framing("GET", head.status, &head.headers).map_err(protocol)?;
    if let Framing::Length(announced) = framing {
        if announced > max_body {
            return Err(BodyFailure::TooLarge); // refused before reading any of it
        }
    }
    let coding = match framing {
        Framing::Empty | Framing::Length(0) => Coding::Identity, // nothing to decode
        _ => gzip::coding(&head.headers).map_err(BodyFailure::Protocol)?,
    };
    // The wire reader has no cap of its own (u64::MAX): `Decoded` counts
    // both sides, so every overflow is reported the same way.
    let wire = BodyReader::new(connection, framing, u64::MAX, limits);
    let mut body = Decoded::new(wire, coding, max_body, inflaters).map_err(failure)?;
    let mut buf = vec![0u8; 16 * 1024]; // on the heap: coroutine stacks are small
    loop {
        let n = body.read(&mut buf).map_err(failure)?;
        if n == 0 {
            break;
        }
        sink(&buf[..n]).map_err(BodyFailure::Sink)?;
    }
    let (wire_bytes, wire) = body.finish(&mut buf).map_err(failure)?;
    let reusable = wire.is_done() && framing != Framing::UntilClose && head.keep_alive();
    Ok(Body {
        wire_bytes,
        reusable,
    })
}
// ANCHOR_END: body

fn protocol(e: io::Error) -> BodyFailure {
    BodyFailure::Protocol(e.to_string())
}

/// Sort a read error: a cap, a broken stream (`InvalidData` from the
/// framing or gzip, `InvalidInput` from gzip's header check), or I/O.
fn failure(e: io::Error) -> BodyFailure {
    if gzip::is_too_large(&e) {
        return BodyFailure::TooLarge;
    }
    match e.kind() {
        ErrorKind::InvalidData | ErrorKind::InvalidInput => protocol(e),
        _ => BodyFailure::Io(e),
    }
}
