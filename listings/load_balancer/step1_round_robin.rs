//! Step 1: a round-robin balancer over three backends.
//!
//! Each client connection carries one request. The balancer reads its head
//! with the bounded HTTP layer, asks the pool for a backend, forwards the
//! request in origin form with the hop-by-hop headers removed, and streams
//! the answer back through a fixed buffer. Then it closes both connections
//! (the final program keeps them alive).
//!
//! The demo starts three backends and the balancer on loopback, sends six
//! GETs, and prints which backend answered each.

#[path = "steps_common.rs"]
mod steps_common;

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::sync::Arc;
use std::time::Duration;

use may::net::TcpStream;
use may_patterns::balance::{Algorithm, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::http::{self, Framing, Limits};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::Conn;
use steps_common::{answered_by, fetch, start_backends, Running};

/// A client that sends nothing for this long is closed.
const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// A backend that does not accept within this is a failed backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A backend that sends nothing for this long is a failed backend.
const BACKEND_IDLE: Duration = Duration::from_secs(5);
/// The buffer every body goes through: on the heap, never on the
/// coroutine's stack.
const COPY_BUFFER: usize = 16 * 1024;

// ANCHOR: handle
/// One client connection, one request: read the head, pick a backend,
/// forward, stream the answer back. A failure before the answer has begun
/// is a `502`; after that the client sees the connection close.
fn handle(conn: Conn, pool: &Pool) -> io::Result<()> {
    conn.set_idle_timeout(Some(CLIENT_IDLE))?;
    let (reader, writer) = conn.split()?;
    let mut client_in = BufReader::new(reader);
    let mut client_out = BufWriter::new(writer);
    let limits = Limits::default();
    let mut head = match http::read_request_head(&mut client_in, &limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(()),
        Err(e) => return refuse(&mut client_out, 400, "Bad Request", &e.to_string()),
    };
    if !head.target.starts_with('/') {
        let why = "a balancer takes origin-form targets (/path?query)";
        return refuse(&mut client_out, 400, "Bad Request", why);
    }
    let Some(lease) = pool.pick() else {
        return refuse(
            &mut client_out,
            503,
            "Service Unavailable",
            "no backend is up",
        );
    };
    let framing = head.framing()?;
    http::remove_hop_by_hop(&mut head.headers);
    http::set_framing(&mut head.headers, framing);
    head.headers.push(("Connection".into(), "close".into()));
    let mut buf = vec![0; COPY_BUFFER];
    let backend = match send(&lease.addr(), &head, framing, &mut client_in, &mut buf) {
        Ok(backend) => backend,
        Err(e) => return refuse(&mut client_out, 502, "Bad Gateway", &e.to_string()),
    };
    relay(backend, &head.method, &mut client_out, &mut buf)
    // `lease` drops here: the request is no longer in flight.
}

/// Connect to the backend and send it the request, body included; the
/// connection, for its answer.
fn send(
    addr: &std::net::SocketAddr,
    head: &http::RequestHead,
    framing: Framing,
    body: &mut impl BufRead,
    buf: &mut [u8],
) -> io::Result<BufReader<TcpStream>> {
    let stream = may_patterns::net::connect_timeout(addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(BACKEND_IDLE))?;
    let mut out = BufWriter::new(stream.try_clone()?);
    let start = format!("{} {} HTTP/1.1", head.method, head.target);
    http::write_head(&mut out, &start, &head.headers)?;
    let limits = Limits::default();
    http::copy_body(
        body,
        framing,
        &mut out,
        framing,
        limits.body_bytes as u64,
        &limits,
        buf,
    )?;
    out.flush()?;
    Ok(BufReader::new(stream))
}

/// Stream the backend's answer to the client, framed as the backend
/// framed it (a body that ends at close ends at our close too).
fn relay(
    mut backend: BufReader<TcpStream>,
    method: &str,
    client: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<()> {
    let limits = Limits::default();
    let mut answer = match http::read_response_head(&mut backend, &limits) {
        Ok(answer) => answer,
        Err(e) => return refuse(client, 502, "Bad Gateway", &e.to_string()),
    };
    let framing = http::response_framing(method, answer.status, &answer.headers)?;
    http::remove_hop_by_hop(&mut answer.headers);
    if matches!(framing, Framing::Length(_) | Framing::Chunked) {
        http::set_framing(&mut answer.headers, framing);
    }
    answer.headers.push(("Connection".into(), "close".into()));
    let start = format!("HTTP/1.1 {} {}", answer.status, answer.reason);
    http::write_head(client, &start, &answer.headers)?;
    http::copy_body(
        &mut backend,
        framing,
        client,
        framing,
        u64::MAX,
        &limits,
        buf,
    )?;
    client.flush()
}
// ANCHOR_END: handle

/// Answer the client ourselves and close.
fn refuse(client: &mut impl Write, status: u16, reason: &str, why: &str) -> io::Result<()> {
    match http::write_error(client, status, reason, &[], &format!("{why}\n"), true) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()), // the client left
        done => done,
    }
}

// ANCHOR: demo
/// Three backends, a round-robin pool over them, six GETs in a row: who
/// answered each.
fn demo() -> io::Result<Vec<String>> {
    let ms = Duration::from_millis(1);
    let (_backends, configs) = start_backends(&[("alpha", ms), ("beta", ms), ("gamma", ms)])?;
    let config = PoolConfig {
        algorithm: Algorithm::RoundRobin,
        ..PoolConfig::default()
    };
    let pool = Pool::new(configs, config, Arc::new(MonotonicClock::new()));
    let balancer = Running::start(move |conn| {
        let _ = handle(conn, &pool);
    })?;
    let mut answers = Vec::new();
    for _ in 0..6 {
        let answer = fetch(balancer.addr, "GET", "/search?q=lamp", b"")?;
        answers.push(answered_by(&answer));
    }
    Ok(answers)
}
// ANCHOR_END: demo

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    for (i, name) in demo().expect("the demo runs").iter().enumerate() {
        println!("GET {}: answered by {name}", i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn requests_go_to_each_backend_in_turn() {
        configure_for_tests();
        let answers = demo().unwrap();
        assert_eq!(
            answers,
            ["alpha", "beta", "gamma", "alpha", "beta", "gamma"]
        );
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop_and_a_bad_head_gets_400() {
        configure_for_tests();
        // A backend that echoes the head it received, so the test sees
        // what the balancer forwarded.
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = listener.local_addr().unwrap();
        let echo = may::go!(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let head = http::read_request_head(&mut reader, &Limits::default())
                .unwrap()
                .unwrap();
            let seen = format!("{} {} {:?}", head.method, head.target, head.headers);
            let mut stream = stream;
            http::write_response(&mut stream, 200, "OK", "text/plain", &[], seen.as_bytes())
                .unwrap();
        });
        let configs = vec![may_patterns::balance::BackendConfig::new(echo_addr)];
        let pool = Pool::new(
            configs,
            PoolConfig::default(),
            Arc::new(MonotonicClock::new()),
        );
        let balancer = Running::start(move |conn| {
            let _ = handle(conn, &pool);
        })
        .unwrap();
        let mut client = may_patterns::net::connect(balancer.addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let extra = [
            ("Connection", "close, X-Secret"),
            ("X-Secret", "hop"),
            ("X-Kept", "1"),
        ];
        http::write_request(&mut client, "GET", "/a?b=c", "lb", &extra, b"").unwrap();
        let answer = http::read_response(&mut BufReader::new(client), &Limits::default()).unwrap();
        echo.join().unwrap();
        let seen = String::from_utf8(answer.body).unwrap();
        assert!(seen.starts_with("GET /a?b=c "), "{seen}");
        assert!(seen.contains("X-Kept"), "{seen}");
        assert!(!seen.contains("X-Secret"), "{seen}");
        assert!(seen.contains(r#"("Connection", "close")"#), "{seen}");

        let absolute = fetch(balancer.addr, "GET", "http://elsewhere/", b"").unwrap();
        assert_eq!(absolute.status, 400);
    }

    #[test]
    fn a_backend_that_refuses_connections_is_a_502() {
        configure_for_tests();
        // A port nobody listens on any more.
        let gone = may::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let configs = vec![may_patterns::balance::BackendConfig::new(gone)];
        let pool = Pool::new(
            configs,
            PoolConfig::default(),
            Arc::new(MonotonicClock::new()),
        );
        let balancer = Running::start(move |conn| {
            let _ = handle(conn, &pool);
        })
        .unwrap();
        let answer = fetch(balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answer.status, 502);
    }
}
