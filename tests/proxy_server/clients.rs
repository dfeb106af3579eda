//! The clients: curl and nc as a user runs them, and a raw socket (on the
//! test's own thread, std is right there) for what no real client sends.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support;

/// How long a client run or a raw read may take before the test fails.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// `tool` is on the PATH, or the test fails naming the Debian package.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
    assert!(
        found,
        "{tool} is not installed (Debian package {package}; .ci/run installs it)"
    );
}

/// `curl ARGS`, bounded, its output captured. `-q` (first) skips any
/// ~/.curlrc, and no proxy variable of the environment applies: the
/// test's `-x` is the only proxy, and no `no_proxy` bypasses it.
pub fn curl(args: &[&str]) -> Output {
    require("curl", "curl");
    let mut command = Command::new("curl");
    command.arg("-q").args(args);
    for var in PROXY_VARIABLES {
        command.env_remove(var).env_remove(var.to_ascii_uppercase());
    }
    support::output_bounded(&mut command, CLIENT_LIMIT)
}

/// The environment variables curl takes proxy settings from.
const PROXY_VARIABLES: [&str; 4] = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"];

/// curl's stdout when it exited 0; otherwise the test fails with its stderr.
pub fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a text answer")
}

/// `nc ARGS` (netcat-openbsd) with `input` on its stdin, bounded.
pub fn nc(args: &[&str], input: &[u8]) -> Output {
    require("nc", "netcat-openbsd");
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(input).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    support::output_bounded(Command::new("nc").args(args).stdin(file), CLIENT_LIMIT)
}

/// A response as a raw client reads it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The whole head, status line to blank line.
    pub head: String,
    /// Everything after the head until the proxy closed.
    pub rest: Vec<u8>,
}

impl Answer {
    /// Fails unless the answer is whole: its body as long as its
    /// `Content-Length` says, nothing after it, and `Connection: close`.
    pub fn assert_complete(&self) {
        let length: usize = self
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length in {}", self.head));
        assert_eq!(self.rest.len(), length, "body after {}", self.head);
        assert_eq!(self.header("connection"), Some("close"), "{}", self.head);
    }

    /// Fails unless the body, a sentence saying why, names `rule` (the
    /// flag that would allow what was refused, say).
    pub fn assert_says(&self, rule: &str) {
        let body = String::from_utf8_lossy(&self.rest);
        assert!(
            body.contains(rule),
            "want a body naming {rule:?}, got {body:?} after {}",
            self.head
        );
    }

    /// A header's value (name case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// A std socket to `addr` whose reads fail after [`CLIENT_LIMIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(CLIENT_LIMIT)).unwrap();
    stream
}

/// Read one response head (at most 16 KiB), byte by byte so nothing after
/// it is consumed; None if the peer closed first.
pub fn read_head(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "a response head over 16 KiB");
        match stream.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a response head: {e}"),
        }
    }
    let head = String::from_utf8(head).expect("a text head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Some((status, head))
}

/// Read until the peer closes (a reset counts as closed: a server that
/// closes with bytes of ours unread resets the connection); fails after
/// [`CLIENT_LIMIT`].
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return rest,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return rest,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the proxy did not close the connection within {CLIENT_LIMIT:?}")
            }
            Err(e) => panic!("reading until the proxy closes: {e}"),
        }
    }
}

/// Send `request` on a new connection and read the answer to the close.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = connect(addr);
    // A refusal may close the connection before all of a long request is
    // written: that is the proxy's right, and the answer is still read.
    let _ = stream.write_all(request);
    let (status, head) = read_head(&mut stream)
        .unwrap_or_else(|| panic!("closed without an answer to {:?}", preview(request)));
    let rest = read_to_close(&mut stream);
    Answer { status, head, rest }
}

/// How long until `stream`'s peer closes it (EOF or reset), reading and
/// dropping whatever comes; fails after [`CLIENT_LIMIT`].
pub fn time_to_close(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    read_to_close(stream);
    started.elapsed()
}

/// The start of a request, for failure messages.
fn preview(request: &[u8]) -> String {
    String::from_utf8_lossy(&request[..request.len().min(80)]).into_owned()
}
