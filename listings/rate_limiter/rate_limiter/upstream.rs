//! Forwarding an admitted request to the upstream, over a small pool of
//! kept-alive connections.

use std::io::{self, BufReader, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use may::net::TcpStream;
use may_patterns::blocking;
use may_patterns::http::{self, header, Limits, Request, Response};
use may_patterns::timeout::for_may;

use crate::deadlines::{Deadlines, Watch};

/// Headers that describe one connection, not the message (RFC 9110, 7.6.1):
/// never passed from one side of the gateway to the other. `Host` and
/// `Content-Length` are written anew for the upstream side. `Expect:
/// 100-continue` is answered (by waiting) on the client's side: the gateway
/// has the whole body before it forwards, and an upstream's `100 Continue`
/// would be read as its answer.
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "expect",
];

/// Counts of what the pool did, for the summary.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// New connections to the upstream.
    pub connects: AtomicU64,
    /// Requests sent on a kept-alive connection.
    pub reused: AtomicU64,
    /// Requests sent again on a new connection because a kept-alive one
    /// turned out to be closed (idempotent requests only).
    pub retried: AtomicU64,
}

// ANCHOR: pool
/// The upstream and its idle connections.
pub struct Upstream {
    pub addr: SocketAddr,
    timeout: Duration,
    max_idle: usize,
    limits: Limits,
    /// A std mutex: held for one push or pop, never across a park.
    idle: Mutex<Vec<Conn>>,
    /// Every connection's deadline for the exchange in progress.
    pub deadlines: Arc<Deadlines>,
    pub stats: PoolStats,
}

/// A connection to the upstream, and its deadline.
struct Conn {
    reader: BufReader<TcpStream>,
    watch: Watch,
}

/// Why a request did not get a response from the upstream.
pub struct Failure {
    /// The upstream took longer than the timeout (504, not 502).
    pub timed_out: bool,
    /// The connection itself failed (closed or reset), which is what a
    /// kept-alive connection the upstream closed meanwhile looks like.
    connection_gone: bool,
    pub reason: String,
}

impl Upstream {
    pub fn new(addr: SocketAddr, timeout: Duration, max_idle: usize) -> Upstream {
        Upstream {
            addr,
            timeout: for_may(timeout),
            max_idle,
            limits: Limits::default(),
            idle: Mutex::new(Vec::new()),
            deadlines: Deadlines::new(),
            stats: PoolStats::default(),
        }
    }

    /// Send `request` from `client` upstream and read the response. A
    /// kept-alive connection the upstream has closed in the meantime is
    /// retried once on a new connection, for idempotent methods only (RFC
    /// 9110, 9.2.2): any other request might have been acted on.
    pub fn forward(&self, request: &Request, client: IpAddr) -> Result<Response, Failure> {
        if let Some(conn) = self.take_idle() {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
            match self.exchange(conn, request, client) {
                Err(f) if f.connection_gone && is_idempotent(&request.method) => {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        let conn = self.connect().map_err(|e| Failure {
            timed_out: false,
            connection_gone: true,
            reason: format!("cannot connect to the upstream {}: {e}", self.addr),
        })?;
        self.exchange(conn, request, client)
    }

    /// An idle connection that still looks open. The probe is a peek on
    /// the non-blocking socket underneath (may sets every socket
    /// non-blocking, `may-0.3.51/src/net/tcp.rs:36`), so it never parks:
    /// "would block" means open and quiet; end-of-file, an error or
    /// unexpected bytes mean it is of no use.
    fn take_idle(&self) -> Option<Conn> {
        loop {
            let conn = self.idle.lock().unwrap().pop()?;
            let mut byte = [0u8; 1];
            match conn.reader.get_ref().inner().peek(&mut byte) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(conn),
                _ => continue, // dropped: closed
            }
        }
    }

    /// A new connection, connected on a `may_patterns::blocking` thread
    /// with std's `connect_timeout` (a kernel wait, no may timer), then
    /// handed to may. may 0.3.51's own connect hands the coroutine to the
    /// event loop and then reads its connect state again, which another
    /// worker may already have finished and dropped
    /// (`may-0.3.51/src/io/sys/unix/net/tcp_stream_connect.rs:113-130`): a
    /// connect per request under load is where that strikes (the circuit
    /// breaker chapter met it). Reads and writes get no socket timeout
    /// (see `deadlines` for why).
    fn connect(&self) -> io::Result<Conn> {
        let (addr, timeout) = (self.addr, self.timeout);
        let socket = blocking::run(move || std::net::TcpStream::connect_timeout(&addr, timeout))
            .map_err(|e| io::Error::other(e.to_string()))??;
        // Safety: `into_raw_fd` hands the descriptor over; nothing else owns it.
        let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
        stream.set_nodelay(true)?;
        let watch = self.deadlines.watch(&stream)?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            reader: BufReader::new(stream),
            watch,
        })
    }

    /// One request and its response on `conn`, which goes back to the pool
    /// if it can carry another.
    fn exchange(
        &self,
        mut conn: Conn,
        request: &Request,
        client: IpAddr,
    ) -> Result<Response, Failure> {
        let headers = forwarded_headers(request, client);
        let extra: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let host = self.addr.to_string();
        conn.watch.expire_in(self.timeout);
        // One buffer, one write (see `Reply::write` in gateway.rs).
        let mut wire = Vec::with_capacity(512 + request.body.len());
        http::write_request(
            &mut wire,
            &request.method,
            &request.target,
            &host,
            &extra,
            &request.body,
        )
        .expect("writing to a Vec cannot fail");
        let sent = conn.reader.get_mut().write_all(&wire);
        let response = sent.and_then(|()| http::read_response(&mut conn.reader, &self.limits));
        let response = response.map_err(|e| match conn.watch.expired() {
            true => Failure {
                timed_out: true,
                connection_gone: false,
                reason: format!(
                    "upstream {}: no answer within {:?}",
                    self.addr, self.timeout
                ),
            },
            false => Failure {
                timed_out: false,
                connection_gone: matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ),
                reason: format!("upstream {}: {e}", self.addr),
            },
        })?;
        conn.watch.clear();
        let keep = !wants_close(&response.headers) && conn.reader.buffer().is_empty();
        if keep {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        Ok(response)
    }
}
// ANCHOR_END: pool

/// Connect once: is the upstream there at all?
/// Called from `main`'s thread, not a coroutine: std's connect is fine.
pub fn probe(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    std::net::TcpStream::connect_timeout(&addr, timeout).map(drop)
}

fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Whether a message's `Connection` header asks to close after it.
pub fn wants_close(headers: &[(String, String)]) -> bool {
    header(headers, "connection").is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
    })
}

/// Whether `name` must not be passed on: a hop-by-hop header, one the
/// message's `Connection` header names, or one `write_*` adds itself.
pub fn is_hop_by_hop(name: &str, headers: &[(String, String)]) -> bool {
    let listed = header(headers, "connection").is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(name))
    });
    listed
        || name.eq_ignore_ascii_case("content-length")
        || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The client's end-to-end headers, plus `X-Forwarded-For` with its
/// address appended (the upstream sees the gateway's address otherwise).
fn forwarded_headers(request: &Request, client: IpAddr) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| {
            !is_hop_by_hop(name, &request.headers) && !name.eq_ignore_ascii_case("x-forwarded-for")
        })
        .cloned()
        .collect();
    let forwarded_for = match header(&request.headers, "x-forwarded-for") {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    headers.push(("X-Forwarded-For".to_owned(), forwarded_for));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use may::go;
    use may::net::TcpListener;
    use may_patterns::runtime::configure_for_tests;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: "/".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_behind_and_the_client_is_named() {
        let r = request(&[
            ("Host", "gw"),
            ("Connection", "keep-alive, X-Trace"),
            ("X-Trace", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Expect", "100-continue"),
            ("Accept", "*/*"),
            ("X-Forwarded-For", "10.0.0.1"),
        ]);
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let names: Vec<(String, String)> = forwarded_headers(&r, client);
        assert_eq!(
            names,
            [
                ("Accept".to_owned(), "*/*".to_owned()),
                (
                    "X-Forwarded-For".to_owned(),
                    "10.0.0.1, 127.0.0.1".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn connection_close_is_a_token_of_the_connection_header() {
        let h = |v: &str| vec![("Connection".to_owned(), v.to_owned())];
        assert!(wants_close(&h("close")));
        assert!(wants_close(&h("Upgrade, Close")));
        assert!(!wants_close(&h("keep-alive")));
        assert!(!wants_close(&[]));
    }

    /// An upstream on a loopback port that accepts `connections`
    /// connections and answers `per_connection` requests on each, then
    /// closes it (1: as the book's backend does; more: keep-alive).
    fn upstream(connections: usize, per_connection: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        go!(move || {
            for _ in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                for _ in 0..per_connection {
                    match http::read_request(&mut reader, &Limits::default()) {
                        Ok(Some(_)) => {
                            http::write_response(&mut out, 200, "OK", "text/plain", &[], b"hi")
                                .unwrap()
                        }
                        _ => break,
                    }
                }
            }
        });
        addr
    }

    /// Forward `n` GETs one after another; the statuses and the pool.
    fn forward_n(addr: SocketAddr, n: usize) -> (Vec<u16>, u64, u64) {
        configure_for_tests();
        go!(move || {
            let pool = Upstream::new(addr, Duration::from_secs(5), 4);
            let client: IpAddr = "127.0.0.1".parse().unwrap();
            let statuses = (0..n)
                .map(|_| match pool.forward(&request(&[]), client) {
                    Ok(response) => response.status,
                    Err(f) => panic!("{}", f.reason),
                })
                .collect();
            let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
            (
                statuses,
                load(&pool.stats.connects),
                load(&pool.stats.reused),
            )
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_keep_alive_upstream_serves_every_request_on_one_connection() {
        let (statuses, connects, reused) = forward_n(upstream(1, 3), 3);
        assert_eq!(statuses, [200, 200, 200]);
        assert_eq!((connects, reused), (1, 2));
    }

    #[test]
    fn an_upstream_that_closes_after_each_answer_costs_a_connection_each() {
        // Either the peek sees the close, or the GET is sent again on a
        // new connection: the client never sees the stale one.
        let (statuses, connects, _) = forward_n(upstream(3, 1), 3);
        assert_eq!(statuses, [200, 200, 200]);
        assert_eq!(connects, 3);
    }
}
