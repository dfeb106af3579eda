//! The server side of a request: its head, read and checked before a byte
//! of its body is touched, so a proxy refuses a smuggling attempt before it
//! forwards anything.

use std::io::{self, BufRead};

use super::{header, invalid, owned_headers, read_head, request_framing, Framing, Limits};

/// A request's start line and headers; the body is left in the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// As sent: a path (`/a?b`), or an absolute URI (`http://h/a`) when
    /// the client talks to a forward proxy, or `host:port` for `CONNECT`.
    pub target: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// How the body is delimited. [`read_request_head`] has already checked
    /// that this succeeds, so on a head it returned this never fails.
    pub fn framing(&self) -> io::Result<Framing> {
        request_framing(&self.headers)
    }

    /// Whether the client wants the connection kept after the answer:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            0 => connection_has(&self.headers, "keep-alive"),
            _ => !connection_has(&self.headers, "close"),
        }
    }

    /// Whether the client waits for `100 Continue` before sending its body
    /// (`Expect: 100-continue`, case-insensitive). An HTTP/1.0 client
    /// cannot ask for it (RFC 9110 10.1.1 says to ignore it there).
    pub fn expects_continue(&self) -> bool {
        self.version >= 1
            && self.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue")
            })
    }
}

/// Whether a `Connection` header lists `token`.
pub(super) fn connection_has(headers: &[(String, String)], token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

// ANCHOR: read_request_head
/// Read one request head. `Ok(None)`: the client closed the connection
/// cleanly before sending a byte (between requests).
///
/// Everything is checked here, before the caller forwards anything:
/// the head's size and header count ([`Limits`]), obsolete line folding
/// (RFC 9112 5.2: a request that folds a header is refused), and the
/// body's framing ([`request_framing`]: `Content-Length` with
/// `Transfer-Encoding`, differing `Content-Length`s, a coding other than
/// chunked, `Transfer-Encoding` in an HTTP/1.0 request). Each is
/// `io::ErrorKind::InvalidData` with a message that says what was wrong,
/// for a `400 Bad Request`; an EOF inside the head is `UnexpectedEof`.
pub fn read_request_head(
    reader: &mut impl BufRead,
    limits: &Limits,
) -> io::Result<Option<RequestHead>> {
    let Some(head) = read_head(reader, limits)? else {
        return Ok(None);
    };
    // A line that starts with a space or a tab continues the previous one.
    // Servers disagree on what it means, which is how requests are smuggled.
    if head
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.first().is_some_and(|&b| b == b' ' || b == b'\t'))
    {
        return Err(invalid("obsolete line folding in a request header"));
    }
    let mut slots = vec![httparse::EMPTY_HEADER; limits.headers];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(invalid(format!("more than {} headers", limits.headers)))
        }
        Err(e) => return Err(invalid(format!("malformed request: {e}"))),
    }
    let request = RequestHead {
        method: parsed.method.unwrap_or_default().to_owned(),
        target: parsed.path.unwrap_or_default().to_owned(),
        version: parsed.version.unwrap_or(1),
        headers: owned_headers(parsed.headers)?,
    };
    request.framing()?;
    // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
    // framing (1.0 has no chunked, so the next hop may read it differently).
    if request.version == 0 && header(&request.headers, "transfer-encoding").is_some() {
        return Err(invalid("Transfer-Encoding in an HTTP/1.0 request"));
    }
    Ok(Some(request))
}
// ANCHOR_END: read_request_head
