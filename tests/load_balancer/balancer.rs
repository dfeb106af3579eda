//! The `load_balancer` program as a user runs it, and the HTTP a user
//! would send it: curl for requests, std sockets where the test needs the
//! bytes on the wire.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::backends::CHECK_PATH;
use crate::support;

/// The checks every test's balancer runs: short, so a backend's fall and
/// rise take a fraction of a second.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(200);
pub const RISE: u32 = 2;
pub const FALL: u32 = 3;
/// Beyond `interval x fall` (or `x rise`): a check in progress when the
/// backend changed, and a debug build on two shared cores.
pub const SLACK: Duration = Duration::from_millis(1500);

fn examples() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["load_balancer"]))
}

/// A running balancer, killed if a test fails before stopping it.
pub struct Balancer {
    child: Child,
    pub addr: SocketAddr,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Balancer {
    /// Start `load_balancer` on an ephemeral port in front of `backends`
    /// (each `ADDR` or `ADDR,weight=N`), with `extra` flags; returns once
    /// it has printed the address it listens on.
    pub fn start(backends: &[String], extra: &[&str]) -> Balancer {
        let mut command = Command::new(examples().join("load_balancer"));
        command.args(["--listen", "127.0.0.1:0", "--json"]);
        for b in backends {
            command.args(["--backend", b]);
        }
        command.args([
            "--check-path",
            CHECK_PATH,
            "--check-interval",
            &format!("{}ms", CHECK_INTERVAL.as_millis()),
            "--rise",
            &RISE.to_string(),
            "--fall",
            &FALL.to_string(),
        ]);
        command.args(extra);
        let (child, stdout, stderr) = support::spawn_with_lines(&mut command);
        let first = stdout
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "no {{\"listening\":ADDR}} line; stderr: {:?}",
                    stderr.try_iter().collect::<Vec<_>>()
                )
            });
        let banner: serde_json::Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("the first line is not JSON ({e}): {first}"));
        let addr = banner["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first}"));
        Balancer {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /_lb/stats`, parsed: one object per backend.
    pub fn stats(&self) -> Vec<serde_json::Value> {
        let (status, body) = request(self.addr, "GET", "/_lb/stats");
        assert_eq!(status, 200, "GET /_lb/stats: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the stats are not JSON ({e}): {body}"));
        json.as_array()
            .or_else(|| json["backends"].as_array())
            .unwrap_or_else(|| panic!("no list of backends in the stats: {body}"))
            .clone()
    }

    /// The stats of the backend at `addr`.
    pub fn backend(&self, addr: SocketAddr) -> serde_json::Value {
        let stats = self.stats();
        stats
            .iter()
            .find(|b| b["addr"].as_str() == Some(&addr.to_string()))
            .unwrap_or_else(|| panic!("{addr} is not in the stats: {stats:?}"))
            .clone()
    }

    pub fn state(&self, addr: SocketAddr) -> String {
        self.backend(addr)["state"]
            .as_str()
            .expect("a state")
            .to_owned()
    }

    /// Wait until `addr` is in `state`; how long it took. Polled every
    /// 20 ms, so that is the resolution.
    pub fn wait_for_state(&self, addr: SocketAddr, state: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let now = self.state(addr);
            if now == state {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{addr} was still {now}, not {state}, after {within:?}; stderr: {:?}",
                self.stderr.try_iter().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: it must exit 0; the lines it printed after the banner.
    pub fn stop(mut self) -> Vec<String> {
        support::interrupt(&self.child);
        let status = support::wait_bounded(&mut self.child, Duration::from_secs(20));
        assert!(status.success(), "{status:?}");
        // The pipe's reader thread ends at the program's exit.
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` fetching every URL in turn over one kept-alive connection: each
/// answer's status and the backend named in its body (`"backend":"NAME"`).
pub fn curl_many(urls: &[String]) -> Vec<(u16, String)> {
    let out = support::output_bounded(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            // After each body: a newline and the status on a line of its own.
            .args(["--write-out", "\n%{http_code}\n"])
            .args(urls),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "curl (Debian package curl) must be installed; .ci/run installs it: {out:?}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let answers: Vec<(u16, String)> = lines
        .chunks(2)
        .map(|pair| {
            let status = pair[1]
                .parse()
                .unwrap_or_else(|_| panic!("no status after {pair:?}"));
            (status, backend_of(pair[0]))
        })
        .collect();
    assert_eq!(answers.len(), urls.len(), "{text}");
    answers
}

/// `NAME` from a backend's `{"backend":"NAME",...}`; empty for other bodies.
pub fn backend_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["backend"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One request with `Connection: close` from the test's thread: the status
/// and the body (the responses the tests read are short and not chunked).
pub fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let answer = exchange(addr, head.as_bytes());
    parse_response(&answer).unwrap_or_else(|| panic!("{method} {path}: no response in {answer:?}"))
}

/// Send `bytes` as they are and read until the balancer closes (at most
/// 64 KiB, 10 s).
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

pub fn parse_response(text: &str) -> Option<(u16, String)> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
