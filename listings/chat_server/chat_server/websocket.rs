//! The `--ws-listen` listener: a small HTTP server that serves the chat page
//! at `GET /` and turns `GET /irc` into the IRCv3 WebSocket transport (one
//! IRC line per message, subprotocol `text.ircv3.net` or `binary.ircv3.net`),
//! then hands the client to the same `connection::serve` as a TCP client.
//!
//! Framing is tungstenite's sans-IO `WebSocketContext`, one per direction:
//! the reader's context decodes frames from the socket's read half and
//! answers pings and close frames into a buffer, which the reader hands to
//! the one [`WsWriter`] that owns the write half, so two coroutines never
//! write frames into each other.

use std::collections::VecDeque;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::http::{self, Limits, Request};
use may_patterns::server::{Conn, WriteHalf};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Message, Role, WebSocketConfig, WebSocketContext};
use tungstenite::Error as WsError;
use url::Url;

use crate::connection::{self, Hub, Transport};
use crate::irc::MAX_LINE;
use crate::outbox::{Incoming, Line, LineSink, LineSource};

/// The page a browser gets at `/`: HTML and JavaScript, nothing to build.
const PAGE: &str = include_str!("page.html");

// ANCHOR: limits
/// The largest frame or message a client may send. An IRC line is at most
/// 512 bytes (plus up to 8 KiB of IRCv3 tags a client never needs to send
/// us), so a frame past this is not a line: the connection is closed with
/// 1009 (message too big) before its payload is buffered.
pub const MAX_FRAME: usize = 8 * 1024;

/// A request head is a few hundred bytes from a browser; 8 KiB and 32
/// headers leave room for cookies without letting a client make us buffer
/// more. Bodies are refused: nothing here takes one.
const HEAD_LIMITS: Limits = Limits {
    head_bytes: 8 * 1024,
    headers: 32,
    body_bytes: 0,
};

/// The whole request head must arrive in this long (a client that sends a
/// byte every few seconds must not hold a connection slot), and no read of
/// it may wait longer than `HEAD_IDLE` (a long may socket timeout, which
/// may 0.3.51 handles safely: see `src/alarm.rs`).
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
const HEAD_IDLE: Duration = Duration::from_secs(5);

/// Subprotocols of the IRCv3 WebSocket spec, in the order we prefer them.
const TEXT_PROTOCOL: &str = "text.ircv3.net";
const BINARY_PROTOCOL: &str = "binary.ircv3.net";
// ANCHOR_END: limits

// ANCHOR: serve_http
/// Handler for the `--ws-listen` listener: read the request head (bounded),
/// answer it, and when it is a valid WebSocket upgrade run the client.
pub fn serve_http(mut conn: Conn, hub: &Hub) {
    let (request, early_frames) = match read_head(&mut conn) {
        Ok(Some(read)) => read,
        Ok(None) => return, // closed before asking anything
        Err(e) => {
            let _ = refuse(&mut conn, &Refusal::bad_request(&e.to_string()));
            return;
        }
    };
    match route(&request) {
        Route::Page => {
            let _ = http::write_response(
                &mut conn,
                200,
                "OK",
                "text/html; charset=utf-8",
                &[("Cache-Control", "no-store"), ("Connection", "close")],
                PAGE.as_bytes(),
            );
        }
        Route::Refuse(refusal) => {
            let _ = refuse(&mut conn, &refusal);
        }
        Route::Upgrade(upgrade) => {
            if let Err(e) = run_client(conn, &upgrade, early_frames, hub) {
                eprintln!("websocket: {e}");
            }
        }
    }
}

/// Switch protocols, split the socket, and serve the client until it is gone.
fn run_client(mut conn: Conn, upgrade: &Upgrade, early: Vec<u8>, hub: &Hub) -> io::Result<()> {
    conn.write_all(upgrade.response().as_bytes())?;
    conn.flush()?;
    // From here the connection's lifecycle (pings, idle) is serve's.
    conn.set_idle_timeout(None)?;
    connection::no_nagle(&conn);
    let peer = conn.peer();
    let closer = conn.closer();
    let (read_half, write_half) = conn.split()?;
    let writer = WsWriter::shared(write_half, upgrade.binary);
    let source = WsSource::new(read_half, early, writer.clone());
    let sink = WsSink { writer };
    connection::serve(source, sink, closer, peer, Transport::WebSocket, hub);
    Ok(())
}
// ANCHOR_END: serve_http

/// A reader that fails with `TimedOut` once `until` has passed, so a head
/// trickled in a byte at a time is bounded in total, not only per read.
struct Deadline<'a> {
    conn: &'a mut Conn,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.until {
            let why = format!("request head not complete in {HEAD_DEADLINE:?}");
            return Err(io::Error::new(ErrorKind::TimedOut, why));
        }
        self.conn.read(buf)
    }
}

/// Read one request head; also return whatever the client sent after it
/// (a client may send its first frames without waiting for our 101).
fn read_head(conn: &mut Conn) -> io::Result<Option<(Request, Vec<u8>)>> {
    conn.set_idle_timeout(Some(HEAD_IDLE))?;
    let until = Instant::now() + HEAD_DEADLINE;
    // On the heap: a connection coroutine's stack is small.
    let mut reader = BufReader::with_capacity(4096, Deadline { conn, until });
    let Some(request) = http::read_request(&mut reader, &HEAD_LIMITS)? else {
        return Ok(None);
    };
    Ok(Some((request, reader.buffer().to_vec())))
}

// ANCHOR: route
/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Page,
    Upgrade(Upgrade),
    Refuse(Refusal),
}

/// A valid upgrade: the accept key and the subprotocol we chose.
#[derive(Debug, PartialEq, Eq)]
struct Upgrade {
    accept: String,
    protocol: Option<&'static str>,
    /// `binary.ircv3.net`: lines go out as binary messages.
    binary: bool,
}

/// A refusal: status, reason phrase, a line for the person reading it, and
/// extra headers (426 names the version we speak).
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    status: u16,
    reason: &'static str,
    message: String,
    headers: Vec<(&'static str, &'static str)>,
}

fn route(request: &Request) -> Route {
    let path = request.target.split('?').next().unwrap_or("");
    match (request.method.as_str(), path) {
        ("GET", "/" | "/index.html") => Route::Page,
        ("GET", "/irc") => match upgrade(request) {
            Ok(upgrade) => Route::Upgrade(upgrade),
            Err(refusal) => Route::Refuse(refusal),
        },
        (_, "/" | "/index.html" | "/irc") => Route::Refuse(Refusal {
            status: 405,
            reason: "Method Not Allowed",
            message: format!("{} is not allowed here; use GET", request.method),
            headers: vec![("Allow", "GET")],
        }),
        _ => Route::Refuse(Refusal {
            status: 404,
            reason: "Not Found",
            message: format!("no page at {path}; the chat is at /"),
            headers: vec![],
        }),
    }
}

/// Check an upgrade request as RFC 6455 section 4.2.1 asks, and that a
/// browser's `Origin` is this server: a page on another site must not open
/// a chat connection in its visitor's name (cross-site WebSocket hijacking).
fn upgrade(request: &Request) -> Result<Upgrade, Refusal> {
    let headers = &request.headers;
    if !has_token(http::header(headers, "Upgrade"), "websocket")
        || !has_token(http::header(headers, "Connection"), "upgrade")
    {
        return Err(Refusal::bad_request(
            "/irc is a WebSocket endpoint: send Upgrade: websocket",
        ));
    }
    if http::header(headers, "Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err(Refusal {
            status: 426,
            reason: "Upgrade Required",
            message: "only WebSocket version 13 is spoken here".into(),
            headers: vec![("Sec-WebSocket-Version", "13")],
        });
    }
    let key = http::header(headers, "Sec-WebSocket-Key")
        .map(str::trim)
        .filter(|key| valid_key(key))
        .ok_or_else(|| Refusal::bad_request("Sec-WebSocket-Key must be 16 bytes in base64"))?;
    if let Some(origin) = http::header(headers, "Origin") {
        let host = http::header(headers, "Host").unwrap_or("");
        if !same_origin(origin, host) {
            return Err(Refusal {
                status: 403,
                reason: "Forbidden",
                message: format!("a page from {origin} may not connect to the chat at {host}"),
                headers: vec![],
            });
        }
    }
    let offered = http::header(headers, "Sec-WebSocket-Protocol");
    // A client that names protocols but none of ours gets none back, and a
    // browser then fails the connection itself (RFC 6455 4.1, step 6).
    let protocol = [TEXT_PROTOCOL, BINARY_PROTOCOL]
        .into_iter()
        .find(|p| has_token(offered, p));
    Ok(Upgrade {
        accept: derive_accept_key(key.as_bytes()),
        protocol,
        binary: protocol == Some(BINARY_PROTOCOL),
    })
}
// ANCHOR_END: route

impl Upgrade {
    fn response(&self) -> String {
        let mut head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            self.accept
        );
        if let Some(protocol) = self.protocol {
            head.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}

impl Refusal {
    fn bad_request(message: &str) -> Refusal {
        Refusal {
            status: 400,
            reason: "Bad Request",
            message: message.to_owned(),
            headers: vec![],
        }
    }
}

fn refuse(conn: &mut Conn, refusal: &Refusal) -> io::Result<()> {
    let mut headers = refusal.headers.clone();
    headers.push(("Connection", "close"));
    let body = format!("{}\n", refusal.message);
    http::write_response(
        conn,
        refusal.status,
        refusal.reason,
        "text/plain; charset=utf-8",
        &headers,
        body.as_bytes(),
    )
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// RFC 6455: the key is 16 random bytes in base64, i.e. 24 characters
/// ending in "==".
fn valid_key(key: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|bytes| bytes.len() == 16)
}

/// `Origin: http://h:p` names the same server as `Host: h:p`: same host,
/// same port (an origin's port defaults by its scheme; the page is served
/// over plain HTTP, so a `Host` without a port means 80).
fn same_origin(origin: &str, host: &str) -> bool {
    let (Ok(origin), Ok(host)) = (Url::parse(origin), Url::parse(&format!("http://{host}/")))
    else {
        return false; // "null" (a sandboxed page or a file) and garbage alike
    };
    origin.host_str().is_some()
        && origin.host_str() == host.host_str()
        && origin.port_or_known_default() == host.port_or_known_default()
}

// ANCHOR: context
/// tungstenite's settings for both directions: frames and messages capped
/// at [`MAX_FRAME`]; small buffers, because every client has two contexts
/// (the default read buffer is 128 KiB, allocated at once).
fn config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_frame_size(Some(MAX_FRAME))
        .max_message_size(Some(MAX_FRAME))
}

/// The sending side of one WebSocket client: its context and the socket's
/// write half. Shared by the reader (pongs, close replies) and the writer
/// coroutine (lines) through a may `Mutex`, which parks a coroutine that
/// waits for it instead of blocking its worker: a write that waits for a
/// slow client holds the lock across a park, which a std `Mutex` must not.
pub struct WsWriter<W> {
    out: W,
    context: WebSocketContext,
    binary: bool,
    /// The reader echoed the client's close: nothing may follow it.
    close_echoed: bool,
}

type SharedWriter<W> = Arc<may::sync::Mutex<WsWriter<W>>>;

impl<W: Write> WsWriter<W> {
    fn shared(out: W, binary: bool) -> SharedWriter<W> {
        let context = WebSocketContext::new(Role::Server, Some(config(256)));
        Arc::new(may::sync::Mutex::new(WsWriter {
            out,
            context,
            binary,
            close_echoed: false,
        }))
    }

    /// One message per line; one `write` for the whole batch when it fits
    /// the write buffer.
    fn send_lines(&mut self, lines: &[Line]) -> io::Result<()> {
        if self.close_echoed {
            return Err(io::Error::new(ErrorKind::BrokenPipe, "the client closed"));
        }
        let mut out = WriteOnly(&mut self.out);
        for line in lines {
            let message = match self.binary {
                true => Message::binary(line.as_bytes().to_vec()),
                false => Message::text(line.to_string()),
            };
            self.context.write(&mut out, message).map_err(io_error)?;
        }
        self.context.flush(&mut out).map_err(io_error)
    }

    /// Frames the reader's context produced (a pong, or the reply to the
    /// client's close when `closing`), whole.
    fn send_raw(&mut self, frames: &[u8], closing: bool) -> io::Result<()> {
        if self.close_echoed {
            return Ok(());
        }
        self.close_echoed = closing;
        self.out.write_all(frames)?;
        self.out.flush()
    }

    /// Send a close frame (once; later calls do nothing).
    fn close(&mut self, code: CloseCode, reason: &str) {
        if self.context.can_write() && !self.close_echoed {
            let frame = CloseFrame {
                code,
                reason: reason.to_owned().into(),
            };
            let _ = self
                .context
                .close(&mut WriteOnly(&mut self.out), Some(frame));
        }
    }
}
// ANCHOR_END: context

/// tungstenite wants `Read + Write` even to write; the writer never reads.
struct WriteOnly<'a, W>(&'a mut W);

impl<W> Read for WriteOnly<'_, W> {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(
            ErrorKind::Unsupported,
            "the writer never reads",
        ))
    }
}

impl<W: Write> Write for WriteOnly<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The reader's view for tungstenite: bytes come from the socket, and what
/// tungstenite writes (its automatic pong and close replies) is kept for
/// the [`WsWriter`].
struct ReadSide<'a, R> {
    input: &'a mut R,
    replies: &'a mut Vec<u8>,
}

impl<R: Read> Read for ReadSide<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl<R> Write for ReadSide<'_, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.replies.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ANCHOR: source
/// Lines from a WebSocket client, for `connection::serve`'s reader.
pub struct WsSource<R, W> {
    input: R,
    context: WebSocketContext,
    writer: SharedWriter<W>,
    /// The rest of a message that carried several lines.
    pending: VecDeque<Incoming>,
}

impl<R: Read, W: Write> WsSource<R, W> {
    /// `early`: bytes the client sent right after its request head.
    fn new(input: R, early: Vec<u8>, writer: SharedWriter<W>) -> Self {
        let context =
            WebSocketContext::from_partially_read(early, Role::Server, Some(config(4096)));
        WsSource {
            input,
            context,
            writer,
            pending: VecDeque::new(),
        }
    }

    /// Read one message; hand any control reply it caused to the writer.
    fn read_message(&mut self) -> Result<Message, WsError> {
        let mut replies = Vec::new();
        let mut side = ReadSide {
            input: &mut self.input,
            replies: &mut replies,
        };
        let got = self.context.read(&mut side);
        let closing = matches!(got, Ok(Message::Close(_)));
        if closing || matches!(got, Ok(Message::Ping(_))) {
            // tungstenite queues the pong or close reply and writes it at
            // the start of the next `read`, which waits for the client's
            // next frame: write it out now.
            let _ = self.context.flush(&mut side);
        }
        if !replies.is_empty() {
            self.writer.lock().unwrap().send_raw(&replies, closing)?;
        }
        got
    }

    /// Close with `code` (the writer's context sends it), and end the reader.
    fn fail(&mut self, code: CloseCode, why: String) -> io::Result<Option<Incoming>> {
        self.writer.lock().unwrap().close(code, &why);
        Err(io::Error::new(ErrorKind::InvalidData, why))
    }
}

impl<R: Read + Send, W: Write + Send> LineSource for WsSource<R, W> {
    fn next_line(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            if let Some(incoming) = self.pending.pop_front() {
                return Ok(Some(incoming));
            }
            match self.read_message() {
                Ok(Message::Text(text)) => self.pending.extend(lines(text.as_str())),
                Ok(Message::Binary(bytes)) => match std::str::from_utf8(&bytes) {
                    Ok(text) => self.pending.extend(lines(text)),
                    // IRCv3: a binary message that is not UTF-8 is refused
                    // like a TCP line that is not; the connection stays.
                    Err(_) => return Ok(Some(Incoming::NotUtf8)),
                },
                Ok(Message::Close(_)) | Err(WsError::ConnectionClosed) => return Ok(None),
                Ok(_) => {} // ping or pong: answered in read_message
                Err(WsError::Capacity(e)) => {
                    return self.fail(CloseCode::Size, format!("WebSocket {e}"));
                }
                Err(WsError::Utf8(_)) => {
                    let why = "WebSocket text message that is not UTF-8".to_owned();
                    return self.fail(CloseCode::Invalid, why);
                }
                Err(WsError::Protocol(e)) => {
                    use tungstenite::error::ProtocolError::ResetWithoutClosingHandshake;
                    if matches!(e, ResetWithoutClosingHandshake) {
                        let why = "connection closed without a WebSocket close";
                        return Err(io::Error::new(ErrorKind::ConnectionAborted, why));
                    }
                    return self.fail(CloseCode::Protocol, format!("WebSocket {e}"));
                }
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

/// The IRC lines of one message: normally one, with or without a CRLF at
/// its end. A message with several lines yields each (never one "line"
/// holding a CR or LF, which would smuggle a second command to TCP clients).
fn lines(text: &str) -> Vec<Incoming> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(
            |line| match line.len() + 2 > MAX_LINE || line.contains('\r') {
                true => Incoming::TooLong,
                false => Incoming::Line(line.to_owned()),
            },
        )
        .collect()
}
// ANCHOR_END: source

// ANCHOR: sink
/// Where `connection::serve`'s writer coroutine sends a WebSocket client's lines.
pub struct WsSink<W: Write> {
    writer: SharedWriter<W>,
}

impl LineSink for WsSink<WriteHalf> {
    fn write_lines(&mut self, lines: &[Line]) -> io::Result<()> {
        self.writer.lock().unwrap().send_lines(lines)
    }

    /// A close frame (1000) after the last line, then the socket closes.
    fn close(&mut self) {
        let mut writer = self.writer.lock().unwrap();
        writer.close(CloseCode::Normal, "");
        writer.out.close();
    }
}
// ANCHOR_END: sink

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    /// A browser's upgrade request from the page at `origin` to `host`.
    fn browser_upgrade(origin: &str, host: &str, protocols: &str) -> Request {
        request(
            "GET",
            "/irc",
            &[
                ("Host", host),
                ("Upgrade", "websocket"),
                ("Connection", "keep-alive, Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Protocol", protocols),
                ("Origin", origin),
            ],
        )
    }

    #[test]
    fn an_upgrade_from_our_own_page_gets_the_accept_key_and_the_text_protocol() {
        let req = browser_upgrade("http://127.0.0.1:8080", "127.0.0.1:8080", "text.ircv3.net");
        let Route::Upgrade(up) = route(&req) else {
            panic!("refused: {:?}", route(&req));
        };
        // RFC 6455 section 1.3's worked example.
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.protocol, Some("text.ircv3.net"));
        assert!(!up.binary);
        assert!(up
            .response()
            .contains("Sec-WebSocket-Protocol: text.ircv3.net\r\n"));
    }

    #[test]
    fn binary_is_chosen_only_when_text_is_not_offered() {
        let both = browser_upgrade("http://h", "h", "binary.ircv3.net, text.ircv3.net");
        let only = browser_upgrade("http://h", "h:80", "binary.ircv3.net");
        let other = browser_upgrade("http://h", "h", "chat");
        let chosen = |r: &Request| match route(r) {
            Route::Upgrade(up) => (up.protocol, up.binary),
            refused => panic!("{refused:?}"),
        };
        assert_eq!(chosen(&both), (Some("text.ircv3.net"), false));
        assert_eq!(chosen(&only), (Some("binary.ircv3.net"), true));
        assert_eq!(chosen(&other), (None, false));
    }

    #[test]
    fn a_page_from_another_site_is_forbidden() {
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "null",
            "https://127.0.0.1",
        ] {
            let req = browser_upgrade(origin, "127.0.0.1:8080", "text.ircv3.net");
            match route(&req) {
                Route::Refuse(r) => assert_eq!(r.status, 403, "{origin}"),
                other => panic!("{origin} let through: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_upgrades_are_refused_with_the_status_that_says_why() {
        let status = |headers: &[(&str, &str)]| match route(&request("GET", "/irc", headers)) {
            Route::Refuse(r) => r.status,
            other => panic!("{other:?}"),
        };
        let up = ("Upgrade", "websocket");
        let conn = ("Connection", "Upgrade");
        let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(status(&[]), 400);
        assert_eq!(status(&[up, conn, key]), 426);
        assert_eq!(
            status(&[up, conn, key, ("Sec-WebSocket-Version", "8")]),
            426
        );
        let v13 = ("Sec-WebSocket-Version", "13");
        assert_eq!(status(&[up, conn, v13]), 400);
        assert_eq!(
            status(&[up, conn, v13, ("Sec-WebSocket-Key", "c2hvcnQ=")]),
            400
        );
    }

    #[test]
    fn the_page_is_at_the_root_and_nothing_else_is() {
        assert_eq!(route(&request("GET", "/", &[])), Route::Page);
        assert_eq!(route(&request("GET", "/?x=1", &[])), Route::Page);
        let status = |m: &str, t: &str| match route(&request(m, t, &[])) {
            Route::Refuse(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status("GET", "/favicon.ico"), 404);
        assert_eq!(status("POST", "/"), 405);
        assert!(PAGE.contains("text.ircv3.net"));
    }

    /// What a client would send: masked frames from a client-role context.
    fn client_frames(messages: Vec<Message>) -> Vec<u8> {
        let mut wire = Cursor::new(Vec::new());
        let mut client = WebSocketContext::new(Role::Client, Some(config(4096)));
        for message in messages {
            client.write(&mut wire, message).unwrap();
        }
        client.flush(&mut wire).unwrap();
        wire.into_inner()
    }

    /// Every message the server sent, as a client decodes them.
    fn server_messages(wire: &[u8]) -> Vec<Message> {
        let mut wire = Cursor::new(wire.to_vec());
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut got = Vec::new();
        while let Ok(message) = client.read(&mut wire) {
            got.push(message);
        }
        got
    }

    /// A source reading `input`, and the writer it hands replies to.
    type TestSource = WsSource<Cursor<Vec<u8>>, Vec<u8>>;

    fn source(input: Vec<u8>) -> (TestSource, SharedWriter<Vec<u8>>) {
        let writer = WsWriter::shared(Vec::new(), false);
        (
            WsSource::new(Cursor::new(input), vec![], writer.clone()),
            writer,
        )
    }

    fn next(source: &mut TestSource) -> String {
        match source.next_line() {
            Ok(Some(Incoming::Line(l))) => format!("line {l}"),
            Ok(Some(Incoming::TooLong)) => "too long".into(),
            Ok(Some(Incoming::NotUtf8)) => "not utf-8".into(),
            Ok(None) => "closed".into(),
            Err(e) => format!("error {e}"),
        }
    }

    #[test]
    fn each_message_is_a_line_with_or_without_its_crlf() {
        let wire = client_frames(vec![
            Message::text("NICK ada\r\n"),
            Message::text("USER ada 0 * :Ada"),
            Message::binary(b"JOIN #rust\n".to_vec()),
            Message::binary(vec![0xff, 0xfe]),
            Message::text("PRIVMSG #a :one\r\nPRIVMSG #a :two"),
            Message::text(format!("PRIVMSG #a :{}", "x".repeat(600))),
            Message::Close(None),
        ]);
        let (mut source, _) = source(wire);
        let got: Vec<String> = (0..8).map(|_| next(&mut source)).collect();
        assert_eq!(
            got,
            [
                "line NICK ada",
                "line USER ada 0 * :Ada",
                "line JOIN #rust",
                "not utf-8",
                "line PRIVMSG #a :one",
                "line PRIVMSG #a :two",
                "too long",
                "closed"
            ]
        );
        assert!(matches!(lines("a\rb")[..], [Incoming::TooLong]));
        assert!(matches!(&lines("PING x")[..], [Incoming::Line(l)] if l == "PING x"));
    }

    #[test]
    fn a_ping_is_answered_through_the_writer_and_a_close_is_echoed() {
        let wire = client_frames(vec![
            Message::Ping(b"are you there".to_vec().into()),
            Message::text("PING :x"),
            Message::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            })),
        ]);
        let (mut source, writer) = source(wire);
        // The pong is out as soon as the ping is read, not when the next
        // frame arrives (a client waiting for its pong sends nothing).
        assert!(matches!(source.read_message(), Ok(Message::Ping(_))));
        let sent = server_messages(&writer.lock().unwrap().out);
        assert_eq!(sent, [Message::Pong(b"are you there".to_vec().into())]);
        assert_eq!(next(&mut source), "line PING :x");
        assert_eq!(next(&mut source), "closed");
        let sent = server_messages(&writer.lock().unwrap().out);
        assert!(matches!(&sent[1], Message::Close(Some(f)) if f.code == CloseCode::Away));
    }

    #[test]
    fn an_oversized_frame_closes_with_1009_before_its_payload_is_read() {
        let wire = client_frames(vec![Message::text("x".repeat(MAX_FRAME + 1))]);
        let (mut source, writer) = source(wire);
        let end = next(&mut source);
        assert!(end.starts_with("error WebSocket Message too long"), "{end}");
        let sent = server_messages(&writer.lock().unwrap().out);
        assert!(matches!(&sent[..], [Message::Close(Some(f))] if f.code == CloseCode::Size));
    }

    #[test]
    fn a_connection_that_ends_without_a_close_frame_is_an_abort() {
        let mut wire = client_frames(vec![Message::text("NICK ada")]);
        let cut = wire.len();
        wire.extend(client_frames(vec![Message::text("half a frame")]));
        wire.truncate(cut + 3);
        let (mut source, _) = source(wire);
        assert_eq!(next(&mut source), "line NICK ada");
        let end = next(&mut source);
        assert!(end.starts_with("error"), "{end}");
    }

    #[test]
    fn lines_go_out_one_message_each_as_text_or_binary() {
        let lines: Vec<Line> = vec!["PING :a".into(), ":srv 001 ada :Welcome".into()];
        for binary in [false, true] {
            let writer = WsWriter::shared(Vec::new(), binary);
            writer.lock().unwrap().send_lines(&lines).unwrap();
            let sent = server_messages(&writer.lock().unwrap().out);
            let expect: Vec<Message> = match binary {
                false => lines.iter().map(|l| Message::text(l.to_string())).collect(),
                true => lines
                    .iter()
                    .map(|l| Message::binary(l.as_bytes().to_vec()))
                    .collect(),
            };
            assert_eq!(sent, expect);
        }
    }
}
