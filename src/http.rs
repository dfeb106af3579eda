//! Just enough HTTP/1.1 for the book's servers and clients, parsed with
//! `httparse` and bounded everywhere.
//!
//! A message is read from any [`BufRead`] (a `BufReader` over a may
//! `TcpStream`, so the reads park the coroutine, not the thread): the head
//! line by line until the blank line, never more than
//! [`Limits::head_bytes`]; then the body, framed as RFC 9112 section 6.3
//! says ([`response_framing`], [`request_framing`]): `Content-Length`
//! bytes, `Transfer-Encoding: chunked`, or (a response only) everything
//! until the server closes. [`BodyReader`] removes the framing and never
//! yields more than a cap; [`read_request`] and [`read_response`] collect
//! it, capped by [`Limits::body_bytes`]. Anything else is an
//! `io::ErrorKind::InvalidData` error that says what was wrong, and an EOF
//! before the message is complete is `UnexpectedEof`.
//!
//! A proxy uses the server side: [`read_request_head`] reads and checks a
//! request's head (framing, obsolete line folding, limits) before anything
//! is forwarded; [`remove_hop_by_hop`], [`append_via`] and [`set_framing`]
//! prepare the head to forward, [`write_head`] sends it, and [`copy_body`]
//! streams the body through a fixed buffer, re-framed. `Expect:
//! 100-continue` is answered by the proxy itself ([`write_continue`] says
//! how); [`read_response_head`] skips interim `1xx` answers (a `103 Early
//! Hints` is not relayed) and returns `101` to the caller.
//!
//! Not supported, on purpose (the callers do not need them): transfer
//! codings other than chunked, and protocol upgrades. A message that
//! relies on one of them is refused.

mod body;
mod chunked;
pub mod client;
mod copy;
mod forwarding;
mod request_head;
#[cfg(test)]
mod server_tests;

pub use body::{
    read_response_head, request_framing, response_framing, BodyReader, Framing, ResponseHead,
    CHUNK_LINE_BYTES,
};
pub use chunked::ChunkedWriter;
pub use copy::copy_body;
pub use forwarding::{
    append_via, remove_hop_by_hop, set_framing, write_continue, write_error, write_head,
};
pub use request_head::{read_request_head, RequestHead};

use std::io::{self, BufRead, ErrorKind, Read, Write};

/// Bounds on what one message may make us buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request or status line plus every header line.
    pub head_bytes: usize,
    /// How many header lines.
    pub headers: usize,
    /// The body, as announced by `Content-Length`.
    pub body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes: 8 * 1024,
            headers: 32,
            body_bytes: 1024 * 1024,
        }
    }
}

/// A request: method, target (path and query) and headers as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response: status code, reason phrase, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, why.into())
}

/// The head buffer's first capacity: most heads fit in it.
const HEAD_START: usize = 1024;

/// Read a head: lines up to and including the first empty one. `Ok(None)`
/// if the peer closed the connection before sending a byte.
fn read_head(reader: &mut impl BufRead, limits: &Limits) -> io::Result<Option<Vec<u8>>> {
    // Room for a typical head at once, instead of growing by doubling from
    // a few bytes (six reallocations for a head of a few hundred bytes).
    let mut head = Vec::with_capacity(limits.head_bytes.min(HEAD_START));
    loop {
        let room = limits.head_bytes.saturating_sub(head.len()) as u64;
        let before = head.len();
        // `take` bounds a line without a newline, too.
        let n = reader
            .by_ref()
            .take(room + 1)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return match head.is_empty() {
                true => Ok(None),
                false => Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a message head",
                )),
            };
        }
        if head.len() > limits.head_bytes {
            return Err(invalid(format!(
                "message head longer than {} bytes",
                limits.head_bytes
            )));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
        if !line.ends_with(b"\n") {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed in the middle of a message head",
            ));
        }
    }
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> io::Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| invalid(format!("header {} is not UTF-8", h.name)))?;
            Ok((h.name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Read a whole body framed by `framing`, capped by `limits.body_bytes`.
fn read_body(reader: &mut impl BufRead, framing: Framing, limits: &Limits) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    BodyReader::new(reader, framing, limits.body_bytes as u64, limits).read_to_end(&mut body)?;
    Ok(body)
}

/// Read one request, body included (capped by [`Limits::body_bytes`]).
/// `Ok(None)`: the client closed the connection cleanly between requests.
///
/// The head is [`read_request_head`]'s, with every check it makes (obsolete
/// line folding, conflicting framing, `Transfer-Encoding` in HTTP/1.0):
/// one parser for servers and proxies alike.
pub fn read_request(reader: &mut impl BufRead, limits: &Limits) -> io::Result<Option<Request>> {
    let Some(head) = read_request_head(reader, limits)? else {
        return Ok(None);
    };
    let body = read_body(reader, head.framing()?, limits)?;
    Ok(Some(Request {
        method: head.method,
        target: head.target,
        headers: head.headers,
        body,
    }))
}

/// Read one response to a request that was not `HEAD` (a `HEAD` answer's
/// headers describe a body that is not sent: use [`read_response_head`]).
pub fn read_response(reader: &mut impl BufRead, limits: &Limits) -> io::Result<Response> {
    let head = read_response_head(reader, limits)?;
    let framing = response_framing("GET", head.status, &head.headers)?;
    Ok(Response {
        body: read_body(reader, framing, limits)?,
        status: head.status,
        reason: head.reason,
        headers: head.headers,
    })
}

/// Send `head` and `body` in one write: two small writes on a socket
/// without `TCP_NODELAY` make Nagle's algorithm hold the second until the
/// first is acknowledged, and the peer delays that acknowledgement (40 ms
/// on Linux), so every short message would take 40 ms.
fn write_message(writer: &mut impl Write, head: String, body: &[u8]) -> io::Result<()> {
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    writer.write_all(&message)?;
    writer.flush()
}

/// Write a request with an optional body; `Host` and `Content-Length` are
/// added, plus `extra` headers.
pub fn write_request(
    writer: &mut impl Write,
    method: &str,
    target: &str,
    host: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    write_message(writer, head, body)
}

/// Write a response with `Content-Length` and `Content-Type`, plus `extra`
/// headers.
pub fn write_response(
    writer: &mut impl Write,
    status: u16,
    reason: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    write_message(writer, head, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn request(text: &str) -> io::Result<Option<Request>> {
        read_request(&mut BufReader::new(text.as_bytes()), &Limits::default())
    }

    #[test]
    fn a_request_round_trips_through_write_and_read() {
        let mut wire = Vec::new();
        write_request(
            &mut wire,
            "POST",
            "/search?q=x",
            "h:1",
            &[("X-Id", "7")],
            b"hi",
        )
        .unwrap();
        let r = read_request(&mut BufReader::new(&wire[..]), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", "/search?q=x")
        );
        assert_eq!(header(&r.headers, "x-id"), Some("7"));
        assert_eq!(r.body, b"hi");
    }

    #[test]
    fn two_requests_on_one_connection_are_read_one_after_the_other() {
        let text = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nzGET";
        let mut reader = BufReader::new(text.as_bytes());
        let limits = Limits::default();
        let a = read_request(&mut reader, &limits).unwrap().unwrap();
        let b = read_request(&mut reader, &limits).unwrap().unwrap();
        assert_eq!((a.target.as_str(), b.target.as_str()), ("/a", "/b"));
        assert_eq!(b.body, b"z");
        let third = read_request(&mut reader, &limits).unwrap_err();
        assert_eq!(third.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_response_round_trips_and_is_framed_by_length_chunks_or_close() {
        let mut wire = Vec::new();
        write_response(&mut wire, 200, "OK", "application/json", &[], b"{}").unwrap();
        let r = read_response(&mut BufReader::new(&wire[..]), &Limits::default()).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let read = |text: &str| {
            read_response(&mut BufReader::new(text.as_bytes()), &Limits::default()).unwrap()
        };
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(read(chunked).body, b"{}");
        let until_close = "HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(read(until_close).body, b"body");
        let no_content = "HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(read(no_content).body, b"");
    }

    #[test]
    fn a_chunked_request_is_read_and_the_next_one_follows() {
        let text = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let mut reader = BufReader::new(text.as_bytes());
        let limits = Limits::default();
        let a = read_request(&mut reader, &limits).unwrap().unwrap();
        assert_eq!(a.body, b"z");
        let b = read_request(&mut reader, &limits).unwrap().unwrap();
        assert_eq!(b.target, "/b");
    }

    #[test]
    fn a_clean_close_before_a_request_is_not_an_error() {
        assert_eq!(request("").unwrap(), None);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let cases = [
            ("NOT HTTP\r\n\r\n", "malformed request"),
            (
                "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                "not supported",
            ),
            // read_request_head's checks hold here too.
            (
                "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n",
                "obsolete line folding",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.0",
            ),
        ];
        for (text, why) in cases {
            let e = request(text).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{text:?}");
            assert!(e.to_string().contains(why), "{text:?}: {e}");
        }
        let eof = request("GET / HTTP/1.1\r\nHost: a").unwrap_err();
        assert_eq!(eof.kind(), ErrorKind::UnexpectedEof);
        let short_body = request("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab").unwrap_err();
        assert_eq!(short_body.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn every_bound_holds() {
        let limits = Limits {
            head_bytes: 64,
            headers: 2,
            body_bytes: 4,
        };
        let read = |text: &str| read_request(&mut BufReader::new(text.as_bytes()), &limits);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert!(read(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 64"));
        let endless = "a".repeat(10_000); // no newline at all
        assert!(read(&endless)
            .unwrap_err()
            .to_string()
            .contains("longer than 64"));
        let many = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert!(read(many)
            .unwrap_err()
            .to_string()
            .contains("more than 2 headers"));
        let big = "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n12345";
        assert!(read(big)
            .unwrap_err()
            .to_string()
            .contains("over the limit of 4"));
    }
}
