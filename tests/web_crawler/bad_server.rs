//! A site of bad answers, for the bad-input test: a std server on
//! 127.0.0.1:0 (test code, not a may worker: one OS thread per connection),
//! whose every page is one of the inputs the issue lists.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `--max-bytes` is set to, and `/big`'s size (four times it).
pub const BODY_CAP: usize = 64 * 1024;
/// How long `/trickle` keeps going if the client does not hang up first.
const TRICKLE_FOR: Duration = Duration::from_secs(60);

/// Links on `/` that are not URLs at all: the crawler must count each as
/// skipped, never fetch or panic over one.
pub const INVALID_LINKS: [&str; 4] = [
    "http://[::1/unclosed-bracket",
    "http://exa mple.test/space-in-host",
    "http://127.0.0.1:99999/port-out-of-range",
    "http://a%zz/bad-percent-in-host",
];

/// Running until dropped.
pub struct BadServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BadServer {
    pub fn start() -> BadServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let stopping = stopping.clone();
                std::thread::spawn(move || serve(stream, addr, &stopping));
            }
        });
        BadServer { addr, stop }
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One connection: requests one after another (keep-alive) until the
/// client closes, a write fails or the server stops.
fn serve(stream: TcpStream, addr: SocketAddr, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // Skip the headers; the path is all that decides the answer.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        if answer(&mut writer, path, addr, stop).is_err() {
            return;
        }
    }
}

fn answer(
    out: &mut TcpStream,
    path: &str,
    addr: SocketAddr,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    match path {
        "/" => page(out, &index(addr)),
        // Not robots.txt syntax at all: binary bytes, lines without a colon,
        // a directive with no value, an absurd Crawl-delay.
        "/robots.txt" => respond(
            out,
            "200 OK",
            "text/plain",
            b"\x00\xff\xfe{{{{ garbage\nUser-agent\nDisallow\n:::: ::::\nCrawl-delay: -1e309\n\xc3\x28\n",
        ),
        "/broken.html" => respond(out, "200 OK", "text/html", &broken_html()),
        "/ok.html" | "/after-broken.html" => page(out, "<html><title>fine</title><body>fine</body></html>"),
        "/to-ftp" => redirect(out, "ftp://127.0.0.1/file.txt"),
        "/to-mailto" => redirect(out, "mailto:someone@example.test"),
        "/big" => big(out),
        "/trickle" => trickle(out, stop),
        _ => respond(out, "404 Not Found", "text/plain", b"not here"),
    }
}

/// The seed: a link to every bad case, and links that are not URLs.
fn index(addr: SocketAddr) -> String {
    let mut html = String::from("<html><head><title>bad inputs</title></head><body>\n");
    for path in ["/broken.html", "/to-ftp", "/to-mailto", "/big", "/trickle"] {
        html.push_str(&format!("<a href=\"http://{addr}{path}\">{path}</a>\n"));
    }
    for link in INVALID_LINKS {
        html.push_str(&format!("<a href=\"{link}\">invalid</a>\n"));
    }
    html.push_str("</body></html>\n");
    html
}

/// Malformed HTML: 5,000 unclosed elements (a tree builder recursing per
/// level would overflow a coroutine's stack), bytes that are not UTF-8,
/// stray end tags, an attribute quote never closed, then a good link, and
/// a comment that never ends.
fn broken_html() -> Vec<u8> {
    let mut html = b"<html><head><title>broken</title></head><body>".to_vec();
    html.extend_from_slice("<div><span>".repeat(2_500).as_bytes());
    html.extend_from_slice(b"</p></p></table>\xff\xfe\xc3\x28<a href=\"/ok.html\">ok</a>");
    html.extend_from_slice(b"<a href='/after-broken.html' title=\"never closed>x</a>");
    html.extend_from_slice(b"<!-- a comment that never ends");
    html
}

fn page(out: &mut TcpStream, html: &str) -> std::io::Result<()> {
    respond(out, "200 OK", "text/html; charset=utf-8", html.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()
}

fn redirect(out: &mut TcpStream, location: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    )?;
    out.flush()
}

/// A body four times the cap, announced honestly.
fn big(out: &mut TcpStream) -> std::io::Result<()> {
    let body = vec![b'a'; 4 * BODY_CAP];
    respond(out, "200 OK", "text/html", &body)
}

/// One byte a second of a page that says it has a kilobyte, until the
/// client gives up (a write fails), the server stops, or a minute passes.
fn trickle(out: &mut TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1024\r\n\r\n"
    )?;
    out.flush()?;
    let started = Instant::now();
    while started.elapsed() < TRICKLE_FOR && !stop.load(Ordering::Relaxed) {
        out.write_all(b"<")?;
        out.flush()?;
        std::thread::sleep(Duration::from_secs(1)); // a test's own thread, not a may worker
    }
    Err(std::io::Error::other("trickled long enough"))
}
