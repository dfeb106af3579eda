//! Where a message's body ends (RFC 9112 section 6.3), and a reader that
//! yields the body's bytes with the framing removed, bounded everywhere.

use std::io::{self, BufRead, ErrorKind, Read};

use super::{invalid, owned_headers, read_head, Limits};

/// The longest chunk-size line we accept, extensions and CRLF included.
/// Real servers send a few hex digits; extensions are allowed but unused.
pub const CHUNK_LINE_BYTES: usize = 1024;

/// How many interim (1xx) responses may come before the real one: a server
/// sends one or two (`103 Early Hints`), never an endless stream.
const INTERIM_RESPONSES: usize = 8;

/// How a message's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (a HEAD answer, 1xx, 204, 304, a request without one).
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`: chunks, a zero chunk, trailers.
    Chunked,
    /// A response that says neither: the body ends when the server closes
    /// the connection, which therefore cannot be reused.
    UntilClose,
}

// ANCHOR: framing
/// How the body of a response to `request_method` is delimited.
pub fn response_framing(
    request_method: &str,
    status: u16,
    headers: &[(String, String)],
) -> io::Result<Framing> {
    // These have no body whatever their headers say (RFC 9112 6.3 rule 1).
    let no_body = request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    if no_body {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding wins over Content-Length (rule 3).
    if chunked(headers)? {
        return Ok(Framing::Chunked);
    }
    match content_length(headers)? {
        Some(length) => Ok(Framing::Length(length)),
        None => Ok(Framing::UntilClose),
    }
}

/// How a request's body is delimited: never by closing the connection, as
/// the client must still read the answer (rule 6: no length, no body).
pub fn request_framing(headers: &[(String, String)]) -> io::Result<Framing> {
    let chunked = chunked(headers)?;
    let length = content_length(headers)?;
    match (chunked, length) {
        // Both at once is how requests are smuggled past proxies: refuse.
        (true, Some(_)) => Err(invalid(
            "request with both Transfer-Encoding and Content-Length",
        )),
        (true, None) => Ok(Framing::Chunked),
        (false, Some(0) | None) => Ok(Framing::Empty),
        (false, Some(length)) => Ok(Framing::Length(length)),
    }
}
// ANCHOR_END: framing

/// Whether `Transfer-Encoding` says chunked. Any other coding is refused:
/// nothing we talk to sends one, and guessing would misread the body.
fn chunked(headers: &[(String, String)]) -> io::Result<bool> {
    let mut codings = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .peekable();
    if codings.peek().is_none() {
        return Ok(false);
    }
    for coding in codings {
        if !coding.eq_ignore_ascii_case("chunked") {
            return Err(invalid(format!(
                "Transfer-Encoding {coding} is not supported (only chunked)"
            )));
        }
    }
    Ok(true)
}

/// The `Content-Length`, if any. Several headers (or a list in one) must
/// all agree; only digits count, so `+5` and `5 x` are refused.
fn content_length(headers: &[(String, String)]) -> io::Result<Option<u64>> {
    let mut found: Option<u64> = None;
    let values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, v)| v.split(','));
    for value in values {
        let digits = value.trim();
        let length = match digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() {
            true => digits.parse::<u64>().ok(),
            false => None,
        }
        .ok_or_else(|| invalid(format!("bad Content-Length: {value:?}")))?;
        if found.is_some_and(|f| f != length) {
            return Err(invalid("Content-Length headers disagree"));
        }
        found = Some(length);
    }
    Ok(found)
}

/// A response's status line and headers only (the body is left in the reader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Whether the server lets the connection be reused after this answer:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`.
    /// (A body delimited by close ends the connection regardless.)
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        match self.version {
            0 => has("keep-alive"),
            _ => !has("close"),
        }
    }
}

/// Read a response head, skipping interim `1xx` answers other than
/// `101 Switching Protocols` (RFC 9110 15.2: a client must accept them even
/// unasked). An EOF before the first byte is `UnexpectedEof`.
pub fn read_response_head(reader: &mut impl BufRead, limits: &Limits) -> io::Result<ResponseHead> {
    for _ in 0..=INTERIM_RESPONSES {
        let head = read_head(reader, limits)?.ok_or_else(|| {
            io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let mut slots = vec![httparse::EMPTY_HEADER; limits.headers];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(invalid("incomplete response head")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(invalid(format!("more than {} headers", limits.headers)))
            }
            Err(e) => return Err(invalid(format!("malformed response: {e}"))),
        }
        let status = parsed.code.unwrap_or_default();
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok(ResponseHead {
            version: parsed.version.unwrap_or(1),
            status,
            reason: parsed.reason.unwrap_or_default().to_owned(),
            headers: owned_headers(parsed.headers)?,
        });
    }
    Err(invalid(format!(
        "more than {INTERIM_RESPONSES} interim 1xx responses"
    )))
}

/// Where a [`BodyReader`] is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk are still to come.
    ChunkData(u64),
    /// The CRLF that closes a chunk's data is next.
    ChunkEnd,
    /// The trailer section after the zero chunk is next.
    Trailers,
    /// Everything until the peer closes.
    UntilClose,
    /// The body is over and its last byte consumed.
    Done,
}

// ANCHOR: body_reader
/// Reads the decoded body bytes (chunked framing removed) through the
/// `BufRead`'s fixed buffer; it never yields more than `cap` bytes: past it
/// a read fails `InvalidData` "body longer than N bytes". Chunk-size lines
/// are bounded by [`CHUNK_LINE_BYTES`], trailers by `limits` (and dropped).
pub struct BodyReader<'r, R: BufRead> {
    reader: &'r mut R,
    state: State,
    cap: u64,
    delivered: u64,
    limits: Limits,
}
// ANCHOR_END: body_reader

impl<'r, R: BufRead> BodyReader<'r, R> {
    /// A reader of the body framed by `framing` that starts at `reader`'s
    /// current position.
    pub fn new(reader: &'r mut R, framing: Framing, cap: u64, limits: &Limits) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader {
            reader,
            state,
            cap,
            delivered: 0,
            limits: *limits,
        }
    }

    /// Whether the body has been read to its very end (chunk terminator and
    /// trailers included), so the connection is at the next message, and can
    /// be reused if the framing and the head allow it.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn too_long(&self) -> io::Error {
        invalid(format!(
            "body longer than {} bytes (over the limit of {})",
            self.cap, self.cap
        ))
    }

    /// Copy up to `limit` bytes of body from the buffer into `out`.
    fn copy(&mut self, out: &mut [u8], limit: u64, eof_why: &str) -> io::Result<usize> {
        let available = self.reader.fill_buf()?;
        if available.is_empty() {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, eof_why.to_owned()));
        }
        let n = available.len().min(out.len()).min(limit as usize);
        out[..n].copy_from_slice(&available[..n]);
        self.reader.consume(n);
        self.delivered += n as u64;
        Ok(n)
    }

    /// Read one CRLF-terminated line of at most `max` bytes into a new Vec.
    fn line(&mut self, max: usize, what: &str) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.reader
            .by_ref()
            .take(max as u64)
            .read_until(b'\n', &mut line)?;
        if line.ends_with(b"\n") {
            return Ok(line);
        }
        match line.len() < max {
            true => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("connection closed in the middle of a {what}"),
            )),
            false => Err(invalid(format!("{what} longer than {max} bytes"))),
        }
    }

    /// Parse a chunk-size line: hex digits, then optional `;extensions`.
    fn chunk_size(&mut self) -> io::Result<u64> {
        let line = self.line(CHUNK_LINE_BYTES, "chunk-size line")?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let digits = text.bytes().take_while(u8::is_ascii_hexdigit).count();
        let rest = text[digits..].trim_start_matches([' ', '\t']);
        if digits == 0 || !(rest.is_empty() || rest.starts_with(';')) {
            return Err(invalid(format!("bad chunk size line: {text:?}")));
        }
        u64::from_str_radix(&text[..digits], 16)
            .map_err(|_| invalid(format!("chunk size {} overflows", &text[..digits])))
    }

    /// Read and drop the trailer section, bounded like a head.
    fn trailers(&mut self) -> io::Result<()> {
        let (mut bytes, mut lines) = (0, 0);
        loop {
            let room = self.limits.head_bytes.saturating_sub(bytes) + 1;
            let line = self.line(room, "trailer section")?;
            if line == b"\r\n" || line == b"\n" {
                return Ok(());
            }
            bytes += line.len();
            lines += 1;
            if bytes > self.limits.head_bytes || lines > self.limits.headers {
                return Err(invalid(format!(
                    "trailers over the limits of {} bytes or {} lines",
                    self.limits.head_bytes, self.limits.headers
                )));
            }
        }
    }
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Length(left) => {
                    if self.delivered + left > self.cap {
                        let announced = self.delivered + left;
                        return Err(invalid(format!(
                            "Content-Length {announced}: {}",
                            self.too_long()
                        )));
                    }
                    let why = format!("connection closed with {left} body bytes still to come");
                    let n = self.copy(out, left, &why)?;
                    self.state = match left - n as u64 {
                        0 => State::Done,
                        left => State::Length(left),
                    };
                    return Ok(n);
                }
                State::ChunkSize => {
                    let size = self.chunk_size()?;
                    // Refuse as soon as a chunk announces more than is left,
                    // before reading any of it.
                    if size > self.cap - self.delivered {
                        return Err(self.too_long());
                    }
                    self.state = match size {
                        0 => State::Trailers,
                        size => State::ChunkData(size),
                    };
                }
                State::ChunkData(left) => {
                    let n = self.copy(out, left, "connection closed in the middle of a chunk")?;
                    self.state = match left - n as u64 {
                        0 => State::ChunkEnd,
                        left => State::ChunkData(left),
                    };
                    return Ok(n);
                }
                State::ChunkEnd => {
                    let mut end = Vec::with_capacity(2);
                    self.reader.by_ref().take(2).read_until(b'\n', &mut end)?;
                    match end.as_slice() {
                        b"\r\n" | b"\n" => self.state = State::ChunkSize,
                        b"" | b"\r" => {
                            return Err(io::Error::new(
                                ErrorKind::UnexpectedEof,
                                "connection closed right after a chunk's data",
                            ))
                        }
                        _ => return Err(invalid("chunk data not followed by CRLF")),
                    }
                }
                State::Trailers => {
                    self.trailers()?;
                    self.state = State::Done;
                }
                State::UntilClose => {
                    if self.reader.fill_buf()?.is_empty() {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    if self.delivered == self.cap {
                        return Err(self.too_long());
                    }
                    let room = self.cap - self.delivered;
                    return self.copy(out, room, "unreachable: the buffer was not empty");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn head(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Read the whole body through a buffer of `capacity` bytes.
    fn body(wire: &str, framing: Framing, cap: u64, capacity: usize) -> io::Result<Vec<u8>> {
        let mut reader = BufReader::with_capacity(capacity, wire.as_bytes());
        let mut body = BodyReader::new(&mut reader, framing, cap, &Limits::default());
        let mut out = Vec::new();
        body.read_to_end(&mut out)?;
        assert!(body.is_done());
        Ok(out)
    }

    const CHUNKED: &str =
        "5;name=value\r\nhello\r\n7 ; x\r\n, world\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";

    #[test]
    fn chunked_with_extensions_and_trailers_decodes_even_one_byte_at_a_time() {
        for capacity in [1, 2, 3, 7, 8192] {
            let decoded = body(CHUNKED, Framing::Chunked, 100, capacity).unwrap();
            assert_eq!(decoded, b"hello, world", "buffer of {capacity}");
        }
    }

    #[test]
    fn the_reader_stops_at_the_end_of_the_body_and_leaves_the_next_message() {
        let mut reader = BufReader::with_capacity(1, CHUNKED.as_bytes());
        let mut body = BodyReader::new(&mut reader, Framing::Chunked, 100, &Limits::default());
        io::copy(&mut body, &mut io::sink()).unwrap();
        assert!(body.is_done());
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn the_cap_is_enforced_before_a_chunk_that_would_pass_it() {
        let e = body(
            "3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n",
            Framing::Chunked,
            6,
            1,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(e.to_string().contains("body longer than 6 bytes"), "{e}");
        // Exactly the cap is fine.
        let exact = body("3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", Framing::Chunked, 6, 1);
        assert_eq!(exact.unwrap(), b"abcdef");
        let e = body("hello", Framing::Length(5), 4, 1).unwrap_err();
        assert!(e.to_string().contains("over the limit of 4"), "{e}");
        let e = body("hello", Framing::UntilClose, 4, 1).unwrap_err();
        assert!(e.to_string().contains("body longer than 4 bytes"), "{e}");
    }

    #[test]
    fn malformed_chunks_are_refused_with_a_reason() {
        let overflow = format!("{}\r\n", "f".repeat(17));
        let long_line = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(CHUNK_LINE_BYTES));
        let cases: [(&str, &str); 5] = [
            ("zz\r\n", "bad chunk size line"),
            ("5 x\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
            (&overflow, "overflows"),
            (&long_line, "longer than 1024 bytes"),
            ("3\r\nabcX\r\n0\r\n\r\n", "not followed by CRLF"),
        ];
        for (wire, why) in cases {
            let e = body(wire, Framing::Chunked, u64::MAX, 1).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{wire:?}");
            assert!(e.to_string().contains(why), "{wire:?}: {e}");
        }
    }

    #[test]
    fn an_eof_in_the_middle_of_a_body_says_where() {
        let cases = [
            ("5\r\nhel", Framing::Chunked, "middle of a chunk"),
            (
                "5\r\nhello\r",
                Framing::Chunked,
                "right after a chunk's data",
            ),
            ("5\r\nhello\r\n", Framing::Chunked, "chunk-size line"),
            ("0\r\nX: 1\r\n", Framing::Chunked, "trailer section"),
            ("hel", Framing::Length(5), "2 body bytes still to come"),
        ];
        for (wire, framing, why) in cases {
            let e = body(wire, framing, 100, 1).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{wire:?}");
            assert!(e.to_string().contains(why), "{wire:?}: {e}");
        }
    }

    #[test]
    fn trailers_are_bounded_like_a_head() {
        let limits = Limits {
            head_bytes: 64,
            headers: 2,
            body_bytes: 100,
        };
        let wire = "0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        let mut reader = BufReader::new(wire.as_bytes());
        let mut body = BodyReader::new(&mut reader, Framing::Chunked, 100, &limits);
        let e = body.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("trailers over the limits"), "{e}");
    }

    #[test]
    fn until_close_reads_everything_the_peer_sends() {
        let decoded = body("all of it", Framing::UntilClose, 100, 1).unwrap();
        assert_eq!(decoded, b"all of it");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let te = head(&[("Transfer-Encoding", "chunked"), ("Content-Length", "5")]);
        let cl = head(&[("Content-Length", "5, 5")]);
        let none = head(&[]);
        let framing =
            |method, status, h: &[(String, String)]| response_framing(method, status, h).unwrap();
        assert_eq!(framing("GET", 200, &te), Framing::Chunked);
        assert_eq!(framing("GET", 200, &cl), Framing::Length(5));
        assert_eq!(framing("GET", 200, &none), Framing::UntilClose);
        for (method, status) in [("HEAD", 200), ("GET", 204), ("GET", 304), ("GET", 101)] {
            assert_eq!(framing(method, status, &cl), Framing::Empty);
        }
        assert_eq!(request_framing(&none).unwrap(), Framing::Empty);
        assert_eq!(request_framing(&cl).unwrap(), Framing::Length(5));
        let refused = [
            (
                head(&[("Transfer-Encoding", "gzip, chunked")]),
                "gzip is not supported",
            ),
            (head(&[("Content-Length", "+5")]), "bad Content-Length"),
            (
                head(&[("Content-Length", "5"), ("Content-Length", "6")]),
                "disagree",
            ),
            (te, "both Transfer-Encoding and Content-Length"),
        ];
        for (headers, why) in refused {
            let e = request_framing(&headers).unwrap_err();
            assert!(e.to_string().contains(why), "{headers:?}: {e}");
        }
    }

    #[test]
    fn a_response_head_skips_interim_answers_and_knows_keep_alive() {
        let wire = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                    HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\nbody";
        let mut reader = BufReader::new(wire.as_bytes());
        let head = read_response_head(&mut reader, &Limits::default()).unwrap();
        assert_eq!((head.version, head.status), (0, 200));
        assert!(head.keep_alive());
        let close = ResponseHead {
            version: 1,
            status: 200,
            reason: "OK".into(),
            headers: vec![("connection".into(), "close".into())],
        };
        assert!(!close.keep_alive());
        let http10 = ResponseHead {
            version: 0,
            headers: vec![],
            ..close
        };
        assert!(!http10.keep_alive());
    }
}
