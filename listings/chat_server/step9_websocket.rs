//! Step 9: WebSocket and a web page. A second listener speaks HTTP: `GET /`
//! serves a small page, `GET /irc` upgrades to WebSocket (the IRCv3
//! WebSocket transport: subprotocol `text.ircv3.net`, one IRC line per text
//! frame), and from then on the client is one more member of the same rooms
//! as the TCP clients. Framing is tungstenite's sans-IO `WebSocketContext`.
//! Only the writer coroutine writes to the socket: the reader's context
//! answers pings and closes, and those replies are handed to the writer
//! instead of being written from the reader. The rest is a small server in
//! the manner of step 3; its line reader, parser, rooms and test client are
//! in `steps_common.rs`, shared by steps 6 to 10.
//!
//! With no arguments it runs a demo; with `--serve IRC_ADDR WS_ADDR` it
//! serves real clients (open `http://WS_ADDR/` in a browser).

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::mpsc;
use may_patterns::runtime::{configure_once, Settings};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Message, WebSocket};

#[path = "steps_common.rs"]
mod steps_common;
use steps_common::{next_line, parse, Bot, Deliver, MAX_LINE};

/// Every room's members, each with its writer's outbox.
type Rooms = steps_common::Rooms<Outbox>;

impl Deliver for Outbox {
    fn deliver(&self, line: String) {
        let _ = self.send(Out::Line(line));
    }
}

/// An HTTP request head, and a WebSocket frame or message, at most.
const MAX_HEAD: usize = 8192;

/// What a writer coroutine is handed: a line for the client, or bytes the
/// reader's WebSocket context produced (a pong, a close reply) to be written
/// between two frames.
enum Out {
    Line(String),
    Control(Vec<u8>),
}

type Outbox = mpsc::Sender<Out>;

// ANCHOR: ws_config
/// Frames and messages bounded to 8 KiB (an IRC line is 512 bytes), and
/// small buffers: one connection's context costs a few KiB, not 128 KiB.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_frame_size(Some(MAX_HEAD))
        .max_message_size(Some(MAX_HEAD))
}
// ANCHOR_END: ws_config

// ANCHOR: read_side
/// The stream the reader's context sees: reads come from the socket, and
/// whatever the context writes (pong and close replies, which tungstenite
/// writes from inside `read`) is kept here for the writer, not written.
struct ReadSide {
    socket: TcpStream,
    replies: Vec<u8>,
}

impl Read for ReadSide {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }
}

impl Write for ReadSide {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.replies.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The next IRC line from a WebSocket client: one text frame (a trailing
/// CRLF stripped); a binary frame must be UTF-8 (IRCv3). None at the end.
fn next_ws_line(ctx: &mut WebSocketContext, side: &mut ReadSide, out: &Outbox) -> Option<String> {
    loop {
        let message = ctx.read(side);
        // The context queues its reply to a ping or a close and writes it at
        // its next read or flush: flush now, into `replies`, and hand them on.
        let _ = ctx.flush(side);
        if !side.replies.is_empty() {
            let _ = out.send(Out::Control(std::mem::take(&mut side.replies)));
        }
        let text = match message.ok()? {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => String::from_utf8(bytes.to_vec()).ok()?,
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let line = text.trim_end_matches(['\r', '\n']);
        return (line.len() + 2 <= MAX_LINE && !line.contains(['\r', '\n']))
            .then(|| line.to_owned());
    }
}

/// The writer for a WebSocket client: one text frame per line, and the
/// reader's control replies between frames. It alone writes to the socket.
fn write_ws(mut socket: TcpStream, lines: mpsc::Receiver<Out>) {
    let mut ctx = WebSocketContext::new(Role::Server, Some(ws_config()));
    for out in lines {
        let written = match out {
            Out::Line(line) => ctx
                .write(&mut socket, Message::text(line))
                .and_then(|()| ctx.flush(&mut socket)),
            Out::Control(bytes) => socket.write_all(&bytes).map_err(tungstenite::Error::Io),
        };
        if written.is_err() {
            break;
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}
// ANCHOR_END: read_side

// ANCHOR: upgrade
/// The HTTP side of the WebSocket listener: the page, or an upgrade.
fn serve_http(mut stream: TcpStream, id: u64, rooms: Arc<Rooms>) -> io::Result<()> {
    let head = read_head(&mut stream)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
        );
    }
    let header = |name: &str| {
        let found = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name));
        found
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .unwrap_or("")
    };
    let has = |name: &str, token: &str| {
        header(name)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match (request.method, request.path) {
        (Some("GET"), Some("/")) => respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.as_bytes(),
        ),
        (Some("GET"), Some("/irc"))
            if has("upgrade", "websocket") && header("sec-websocket-version") == "13" =>
        {
            // A page from another site must not chat as this browser's user.
            let origin = header("origin");
            if !origin.is_empty() && origin.split("://").nth(1) != Some(header("host")) {
                return respond(
                    &mut stream,
                    "403 Forbidden",
                    "text/plain",
                    b"cross-origin\n",
                );
            }
            let protocol = match has("sec-websocket-protocol", "text.ircv3.net") {
                true => "Sec-WebSocket-Protocol: text.ircv3.net\r\n",
                false => "",
            };
            let accept = derive_accept_key(header("sec-websocket-key").as_bytes());
            write!(
                stream,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
            )?;
            let (out, lines) = mpsc::channel();
            let writer = stream.try_clone()?;
            let writer = go!(move || write_ws(writer, lines));
            let mut ctx = WebSocketContext::new(Role::Server, Some(ws_config()));
            let mut side = ReadSide {
                socket: stream,
                replies: Vec::new(),
            };
            let reader_out = out.clone();
            serve_lines(
                || next_ws_line(&mut ctx, &mut side, &reader_out),
                out,
                id,
                &rooms,
            );
            drop(reader_out); // the writer ends once every sender is gone
            let _ = writer.join();
            Ok(())
        }
        (Some("GET"), _) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n"),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        ),
    }
}
// ANCHOR_END: upgrade

/// Read up to the blank line that ends a request head, at most `MAX_HEAD`.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the head (a first frame) is read here.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() == MAX_HEAD || stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no complete request head",
            ));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

/// The page: plain HTML and JavaScript, no build step.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>chat</title>
<pre id="log"></pre>
<form id="f"><input id="line" size="60" autofocus> <button>send</button></form>
<script>
const log = document.getElementById("log");
const nick = "web" + Math.floor(Math.random() * 1000);
const ws = new WebSocket(`ws://${location.host}/irc`, ["text.ircv3.net"]);
const send = (line) => { ws.send(line); log.textContent += "> " + line + "\n"; };
ws.onopen = () => { send(`NICK ${nick}`); send(`USER ${nick} 0 * :${nick}`); send("JOIN #lobby"); };
ws.onmessage = (e) => {
  if (e.data.startsWith("PING")) { ws.send("PONG" + e.data.slice(4)); return; }
  log.textContent += e.data + "\n";
};
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  const input = document.getElementById("line");
  send(`PRIVMSG #lobby :${input.value}`);
  input.value = "";
};
</script>
"#;

// ANCHOR: serve_lines
/// One client, whatever its transport: lines come from `next_line`, and
/// everything for it goes through `out` to its writer coroutine.
fn serve_lines(mut next_line: impl FnMut() -> Option<String>, out: Outbox, id: u64, rooms: &Rooms) {
    let mut client = Client {
        id,
        nick: None,
        out,
    };
    while let Some(line) = next_line() {
        if !handle(&mut client, rooms, &line) {
            break;
        }
    }
    rooms.leave_all(id);
    // Dropping `client` drops its sender; the writer ends when the
    // rooms' copies (and the reader's, for WebSocket) are gone.
}
// ANCHOR_END: serve_lines

/// A TCP client: CRLF-terminated lines both ways.
fn serve_tcp(stream: TcpStream, id: u64, rooms: Arc<Rooms>) -> io::Result<()> {
    let (out, lines) = mpsc::channel::<Out>();
    let mut socket = stream.try_clone()?;
    let writer = go!(move || {
        for line in lines {
            let Out::Line(line) = line else { continue }; // TCP has no control frames
            if socket.write_all(format!("{line}\r\n").as_bytes()).is_err() {
                break;
            }
        }
        let _ = socket.shutdown(Shutdown::Both);
    });
    let mut reader = BufReader::new(stream);
    serve_lines(|| next_line(&mut reader), out, id, &rooms);
    let _ = writer.join();
    Ok(())
}

/// A client, as its connection's coroutine sees it.
struct Client {
    id: u64,
    nick: Option<String>,
    out: Outbox,
}

impl Client {
    fn send(&self, line: String) {
        let _ = self.out.send(Out::Line(line));
    }
}

/// Handle one line; false when the client quit.
fn handle(client: &mut Client, rooms: &Rooms, line: &str) -> bool {
    let (command, params) = parse(line);
    match (command.as_str(), client.nick.clone()) {
        ("QUIT", _) => {
            client.send("ERROR :Closing link: (Quit)".into());
            return false;
        }
        ("PING", _) => client.send(format!("PONG :{}", params.first().map_or("", |p| p))),
        ("NICK", None) if !params.is_empty() => {
            client.send(format!(":chat.local 001 {} :Welcome", params[0]));
            client.nick = Some(params[0].clone());
        }
        ("USER" | "PONG", _) => {}
        (_, None) => client.send(":chat.local 451 * :You have not registered".into()),
        ("JOIN", Some(nick)) if !params.is_empty() => {
            rooms.join(&params[0], client.id, &nick, &client.out)
        }
        ("PRIVMSG", Some(nick)) if params.len() == 2 => {
            if !rooms.say(&params[0], client.id, &nick, &params[1]) {
                client.send(format!(
                    ":chat.local 404 {nick} {} :Cannot send to channel",
                    params[0]
                ));
            }
        }
        (other, Some(nick)) => {
            client.send(format!(":chat.local 421 {nick} {other} :Unknown command"))
        }
    }
    true
}

/// Bind both listeners (IRC over TCP, HTTP + WebSocket) on shared rooms and
/// serve every client in its own coroutine, forever.
fn start(irc: &str, ws: &str) -> io::Result<(SocketAddr, SocketAddr)> {
    let (irc, ws) = (TcpListener::bind(irc)?, TcpListener::bind(ws)?);
    let addrs = (irc.local_addr()?, ws.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    for (listener, websocket) in [(irc, false), (ws, true)] {
        let (rooms, ids) = (rooms.clone(), ids.clone());
        go!(move || {
            for stream in listener.incoming().flatten() {
                let (rooms, id) = (
                    rooms.clone(),
                    ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                );
                match websocket {
                    true => go!(move || serve_http(stream, id, rooms)),
                    false => go!(move || serve_tcp(stream, id, rooms)),
                };
            }
        });
    }
    Ok(addrs)
}

/// Open a WebSocket to `/irc` on a std socket (this runs on an OS thread):
/// the upgrade request by hand, then tungstenite's client side.
fn ws_connect(
    addr: SocketAddr,
    protocol: &str,
) -> io::Result<(String, WebSocket<std::net::TcpStream>)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /irc HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    Ok((head, WebSocket::from_raw_socket(stream, Role::Client, None)))
}

/// The next text frame, skipping pongs and the like.
fn ws_line(ws: &mut WebSocket<std::net::TcpStream>) -> io::Result<String> {
    loop {
        match ws.read().map_err(io::Error::other)? {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Pong(data) => {
                return Ok(format!(
                    "(a pong frame: {:?})",
                    String::from_utf8_lossy(&data)
                ))
            }
            _ => {}
        }
    }
}

// ANCHOR: demo
fn demo(irc: SocketAddr, web: SocketAddr) -> io::Result<()> {
    let mut page = std::net::TcpStream::connect(web)?;
    page.write_all(b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n")?;
    let mut body = String::new();
    page.read_to_string(&mut body)?;
    println!(
        "GET /: {}, {} bytes of page",
        body.lines().next().unwrap_or(""),
        PAGE.len()
    );

    let mut tom = Bot::join(irc, "tom", "#lobby")?;
    let (head, mut wes) = ws_connect(web, "text.ircv3.net")?;
    for line in head
        .lines()
        .filter(|l| l.starts_with("HTTP") || l.starts_with("Sec-WebSocket-Protocol"))
    {
        println!("upgrade: {line}");
    }
    for line in ["NICK wes", "USER wes 0 * :wes", "JOIN #lobby"] {
        wes.send(Message::text(line)).map_err(io::Error::other)?;
    }
    println!("wes (WebSocket) reads: {}", ws_line(&mut wes)?);
    println!("wes (WebSocket) reads: {}", ws_line(&mut wes)?);
    println!("tom (TCP) reads:       {}", tom.wait_for(":wes JOIN")?);
    wes.send(Message::text(
        "PRIVMSG #lobby :hello from a browser's transport\r\n",
    ))
    .map_err(io::Error::other)?;
    println!("tom (TCP) reads:       {}", tom.wait_for("PRIVMSG")?);
    tom.writer
        .write_all(b"PRIVMSG #lobby :hello back over plain TCP\r\n")?;
    println!("wes (WebSocket) reads: {}", ws_line(&mut wes)?);
    wes.send(Message::Ping("are you there".into()))
        .map_err(io::Error::other)?;
    println!("wes sent a ping frame, reads: {}", ws_line(&mut wes)?);
    wes.close(None).map_err(io::Error::other)?;
    let closed = loop {
        match wes.read() {
            Ok(Message::Close(frame)) => break format!("a close frame back ({frame:?})"),
            Ok(_) => {}
            Err(e) => break format!("{e}"),
        }
    };
    println!("wes closed: {closed}");
    Ok(())
}
// ANCHOR_END: demo

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (irc, ws) = match args.as_slice() {
        [] => ("127.0.0.1:0", "127.0.0.1:0"),
        [flag, irc, ws] if flag == "--serve" => (irc.as_str(), ws.as_str()),
        _ => {
            eprintln!("usage: step9_websocket [--serve IRC_ADDR WS_ADDR]");
            std::process::exit(2);
        }
    };
    let (irc, web) = match start(irc, ws) {
        Ok(addrs) => addrs,
        Err(e) => {
            eprintln!("step9_websocket: cannot listen: {e}");
            std::process::exit(2);
        }
    };
    if args.is_empty() {
        demo(irc, web).expect("the demo runs");
    } else {
        println!("IRC on {irc}, the page on http://{web}/");
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> (SocketAddr, SocketAddr) {
        configure_once(may_patterns::runtime::TEST_SETTINGS);
        start("127.0.0.1:0", "127.0.0.1:0").unwrap()
    }

    #[test]
    fn websocket_and_tcp_clients_share_a_room_and_pings_are_answered() {
        let (irc, web) = server();
        let (head, mut ws) = ws_connect(web, "text.ircv3.net").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 101")
                && head.contains("Sec-WebSocket-Protocol: text.ircv3.net")
        );
        for line in ["NICK w", "USER w 0 * :w", "JOIN #lobby"] {
            ws.send(Message::text(line)).unwrap();
        }
        assert!(ws_line(&mut ws).unwrap().contains(" 001 w "));
        assert_eq!(ws_line(&mut ws).unwrap(), ":w JOIN #lobby");
        let mut tom = Bot::join(irc, "tom", "#lobby").unwrap();
        // Pings between lines: each pong comes back whole, between text frames.
        for i in 0..20 {
            ws.send(Message::Ping(format!("p{i}").into_bytes().into()))
                .unwrap();
            tom.writer
                .write_all(format!("PRIVMSG #lobby :t{i}\r\n").as_bytes())
                .unwrap();
        }
        let (mut pongs, mut lines) = (0, 0);
        while pongs < 20 || lines < 20 {
            let got =
                ws_line(&mut ws).unwrap_or_else(|e| panic!("{pongs} pongs, {lines} lines: {e}"));
            if got.starts_with("(a pong") {
                pongs += 1;
            } else if got.contains("PRIVMSG #lobby :t") {
                lines += 1;
            }
        }
        ws.send(Message::binary(
            b"PRIVMSG #lobby :binary is fine if UTF-8".to_vec(),
        ))
        .unwrap();
        assert!(tom
            .wait_for("binary")
            .unwrap()
            .ends_with("binary is fine if UTF-8"));
    }

    #[test]
    fn bad_requests_get_an_http_error_not_a_hang() {
        let (_, web) = server();
        let ask = |request: &str| {
            let mut s = std::net::TcpStream::connect(web).unwrap();
            // A head past the limit is refused unread: a reset is an answer too.
            let _ = s.write_all(request.as_bytes());
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.lines().next().unwrap_or("").to_owned()
        };
        assert_eq!(ask("GET /nope HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
        assert_eq!(
            ask("POST / HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        let cross = "GET /irc HTTP/1.1\r\nHost: a\r\nOrigin: http://evil\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(ask(cross), "HTTP/1.1 403 Forbidden");
        assert_eq!(
            ask(&format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD))),
            ""
        );
    }

    #[test]
    fn an_oversized_frame_ends_the_connection() {
        let (_, web) = server();
        let (_, mut ws) = ws_connect(web, "text.ircv3.net").unwrap();
        ws.send(Message::text("x".repeat(MAX_HEAD * 2))).unwrap();
        // The server hangs up: the client sees an error or a close, never a line.
        assert!(!matches!(ws.read(), Ok(Message::Text(_))));
    }
}
