//! Reading each balancer's view of a backend: our `GET /_lb/stats`,
//! HAProxy's `show stat` on its stats socket; nginx exposes none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::procs::{Kind, Proc};

/// Whether the balancer still counts `backend` as one to send to: `None`
/// where it does not say (nginx), or the state could not be read.
pub fn is_up(kind: Kind, balancer: &Proc, backend: SocketAddr) -> Option<bool> {
    match kind {
        Kind::Ours => ours_state(balancer.addr(), backend).map(|s| s == "up"),
        // `UP`, `UP 1/3` (going down), `DOWN`, `DOWN 1/2` (going up).
        Kind::Haproxy => haproxy_status(balancer, backend).map(|s| s.starts_with("UP")),
        Kind::Nginx => None,
    }
}

/// Wait until the balancer counts every backend up, so no run starts
/// while its first checks are still being counted.
pub fn until_all_up(kind: Kind, balancer: &Proc, backends: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = match kind {
            Kind::Nginx => get_status(balancer.addr(), crate::procs::PATH) == Some(200),
            _ => backends
                .iter()
                .all(|&b| is_up(kind, balancer, b) == Some(true)),
        };
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: its backends were not all up within 15 s; its stderr: {}",
            balancer.name,
            balancer.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `state` of `backend` in our balancer's stats JSON: a list of backends,
/// at the top or under `backends`.
fn ours_state(balancer: SocketAddr, backend: SocketAddr) -> Option<String> {
    let (_, body) = get(balancer, "/_lb/stats")?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let list = json.as_array().or_else(|| json["backends"].as_array())?;
    let entry = list
        .iter()
        .find(|b| b["addr"].as_str() == Some(&backend.to_string()))?;
    Some(entry["state"].as_str()?.to_owned())
}

/// The `status` column of `backend`'s row in HAProxy's `show stat` CSV.
fn haproxy_status(balancer: &Proc, backend: SocketAddr) -> Option<String> {
    let mut socket = UnixStream::connect(balancer.dir().join("haproxy.sock")).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    socket.write_all(b"show stat\n").ok()?;
    let mut csv = String::new();
    socket.read_to_string(&mut csv).ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| header.iter().position(|&h| h == name);
    let (addr_at, status_at) = (column("addr")?, column("status")?);
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|row| row.get(addr_at) == Some(&backend.to_string().as_str()))
        .and_then(|row| row.get(status_at).map(|s| s.to_string()))
}

fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).map(|(status, _)| status)
}

/// One `GET` with `Connection: close` from the bench's own thread: the
/// status and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    // Stats of a few backends fit in far less; a bound all the same.
    s.take(1 << 20).read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
