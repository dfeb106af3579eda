//! The bench's two loads: hey through a proxy, and idle CONNECT tunnels
//! held from this process (std sockets on the bench's own thread).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

const HEY: &str = "/usr/bin/hey";

/// What one hey run printed in its summary.
pub struct Hey {
    pub requests: usize,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Requests that did not end in a 200: hey's errors plus other statuses.
    pub failed: usize,
}

/// `hey -x PROXY -n requests -c clients url`, parsed.
pub fn hey(proxy: SocketAddr, url: &str, clients: usize, requests: usize, keep_alive: bool) -> Hey {
    assert!(
        std::path::Path::new(HEY).exists(),
        "{HEY} is missing: apt-get install -y hey (the proxy bench's load tool)"
    );
    let mut cmd = Command::new(HEY);
    cmd.args(["-x", &format!("http://{proxy}")]).args([
        "-n",
        &requests.to_string(),
        "-c",
        &clients.to_string(),
    ]);
    if !keep_alive {
        cmd.arg("-disable-keepalive");
    }
    let out = cmd.arg(url).output().expect("hey runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hey failed: {text}");
    let number = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.trim().trim_end_matches("secs").trim().parse().ok())
    };
    let per_sec = number("Requests/sec:").unwrap_or_else(|| panic!("no Requests/sec in {text}"));
    // With every request failed hey prints no latency distribution.
    let secs = |p: &str| Duration::from_secs_f64(number(p).unwrap_or(0.0));
    // `  [200]	19998 responses` under "Status code distribution".
    let ok: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("[200]"))
        .and_then(|v| v.trim().strip_suffix("responses")?.trim().parse().ok())
        .unwrap_or(0);
    Hey {
        requests,
        per_sec,
        p50: secs("50% in"),
        p99: secs("99% in"),
        failed: requests - ok,
    }
}

/// CONNECT tunnels to the origin through a proxy, answered 200, held open.
pub struct Tunnels {
    streams: Vec<TcpStream>,
    origin_port: u16,
}

impl Tunnels {
    /// Open `n` tunnels one after another; those the proxy refuses or
    /// does not answer within 5 s are not kept (the table counts those kept).
    pub fn open(proxy: SocketAddr, origin_port: u16, n: usize) -> Tunnels {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(mut s) = TcpStream::connect(proxy) else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let request = format!(
                "CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\r\n"
            );
            if s.write_all(request.as_bytes()).is_err() {
                continue;
            }
            match read_head(&mut s) {
                Some(head) if status_is_200(&head) => streams.push(s),
                _ => {}
            }
        }
        Tunnels {
            streams,
            origin_port,
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// GET the 1 KiB file once through every tunnel; how many got a 200.
    pub fn fetch_once(&mut self) -> usize {
        let request = format!(
            "GET /1k HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.origin_port
        );
        let mut answered = 0;
        for s in &mut self.streams {
            if s.write_all(request.as_bytes()).is_ok()
                && read_head(s).is_some_and(|h| status_is_200(&h))
            {
                answered += 1;
            }
        }
        answered
    }
}

fn status_is_200(head: &str) -> bool {
    head.split(' ').nth(1) == Some("200")
}

/// Read until the end of a response head (or 4 KiB, EOF, the timeout).
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let n = s.read(&mut buf[len..]).ok()?;
        if n == 0 {
            return None;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
    }
    None
}
