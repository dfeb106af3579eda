//! What a proxy changes in a head it forwards (RFC 9110 7.6), and the few
//! messages it writes itself.

use std::io::{self, Write};

use super::Framing;

/// The headers that describe one connection, not the message (RFC 9110
/// 7.6.1), plus the framing headers, which the forwarder sets again with
/// [`set_framing`] for the framing it writes.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

// ANCHOR: remove_hop_by_hop
/// Remove the hop-by-hop headers: `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`,
/// `Proxy-Authenticate`, `TE`, `Trailer`, `Transfer-Encoding` (the
/// forwarder re-frames the body) and `Upgrade` (this layer does not
/// switch protocols). `Content-Length` stays: call [`set_framing`].
pub fn remove_hop_by_hop(headers: &mut Vec<(String, String)>) {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    // Compared in place: a lower-cased copy of each name would cost an
    // allocation per header of every message forwarded.
    headers.retain(|(n, _)| {
        let is = |hop: &str| n.eq_ignore_ascii_case(hop);
        !HOP_BY_HOP.iter().copied().any(is) && !named.iter().map(String::as_str).any(is)
    });
}
// ANCHOR_END: remove_hop_by_hop

/// Append this hop to `Via` (RFC 9110 7.6.3): `1.1 <pseudonym>`, or
/// `1.0 <pseudonym>` for a message received as HTTP/1.0 (`version` is the
/// minor version of the message as it arrived). An existing `Via` is
/// extended, so the chain of proxies stays in order in one header.
pub fn append_via(headers: &mut Vec<(String, String)>, version: u8, pseudonym: &str) {
    let hop = format!("1.{version} {pseudonym}");
    match headers
        .iter_mut()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case("via"))
    {
        Some((_, value)) => *value = format!("{value}, {hop}"),
        None => headers.push(("Via".to_owned(), hop)),
    }
}

// ANCHOR: set_framing
/// Replace the framing headers with those for a body forwarded as
/// `framing`: `Length(n)` -> `Content-Length: n`; `Chunked` and
/// `UntilClose` -> `Transfer-Encoding: chunked`; `Empty` -> neither.
///
/// A body of unknown length is sent chunked rather than until close, so
/// the connection it goes out on can carry the next message. An HTTP/1.0
/// peer does not know chunked: for it, leave the framing headers out and
/// copy the body raw with `to = UntilClose`, then close.
///
/// `Empty` removes `Content-Length` too: call it only where the message
/// has no body (a request without one); a `HEAD` answer keeps its
/// `Content-Length`, so do not call this for it.
pub fn set_framing(headers: &mut Vec<(String, String)>, framing: Framing) {
    headers.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("transfer-encoding")
    });
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => headers.push(("Content-Length".to_owned(), n.to_string())),
        Framing::Chunked | Framing::UntilClose => {
            headers.push(("Transfer-Encoding".to_owned(), "chunked".to_owned()))
        }
    }
}
// ANCHOR_END: set_framing

/// Write `start_line` (without its CRLF), the headers and the blank line,
/// built in one buffer and written with one `write_all`: on a socket the
/// head is on the wire when this returns, and Nagle's algorithm does not
/// hold the last piece of a head written in several. It does not flush:
/// over a `BufWriter`, the caller flushes once the body is written too.
pub fn write_head(
    writer: &mut impl Write,
    start_line: &str,
    headers: &[(String, String)],
) -> io::Result<()> {
    let mut head = String::with_capacity(256);
    head.push_str(start_line);
    head.push_str("\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())
}

/// A small complete response, for the errors a proxy answers itself (400,
/// 403, 407, 413, 502, 504 ...): status line, `Content-Type: text/plain`,
/// `Content-Length`, `Connection: close` if `close`, `extra` headers, and
/// `body`, in one write, then a flush.
pub fn write_error(
    writer: &mut impl Write,
    status: u16,
    reason: &str,
    extra: &[(&str, &str)],
    body: &str,
    close: bool,
) -> io::Result<()> {
    let mut message = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        message.push_str("Connection: close\r\n");
    }
    for (name, value) in extra {
        message.push_str(&format!("{name}: {value}\r\n"));
    }
    message.push_str("\r\n");
    message.push_str(body);
    writer.write_all(message.as_bytes())?;
    writer.flush()
}

// ANCHOR: write_continue
/// Tell a client that sent `Expect: 100-continue`
/// ([`RequestHead::expects_continue`](super::RequestHead::expects_continue))
/// to send its body; then flush.
///
/// The pattern for a proxy: read the head, decide (access rules, size,
/// connect to the upstream); to refuse, answer the final error instead and
/// close, since the body was never sent; to accept, write this, then copy
/// the body. The proxy has then met the expectation itself, so it removes
/// `Expect` from the head it forwards; an upstream that sends its own
/// `100 Continue` anyway is skipped by
/// [`read_response_head`](super::read_response_head).
pub fn write_continue(writer: &mut impl Write) -> io::Result<()> {
    writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    writer.flush()
}
// ANCHOR_END: write_continue
