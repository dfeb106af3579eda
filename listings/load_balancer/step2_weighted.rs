//! Step 2: weights. Backends are not all alike: one with three times the
//! cores should get three times the requests. The pool now runs nginx's
//! smooth weighted round-robin over weights 3, 1, 1; the forwarding code is
//! step 1's, unchanged.
//!
//! The demo prints the order of the first ten picks (the heavy backend's
//! turns spread through each cycle, not three in a row) and the shares over
//! 500 requests.

#[path = "steps_common.rs"]
mod steps_common;

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::sync::Arc;
use std::time::Duration;

use may::net::TcpStream;
use may_patterns::backend::Backend;
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

/// Answer the client ourselves and close.
fn refuse(client: &mut impl Write, status: u16, reason: &str, why: &str) -> io::Result<()> {
    match http::write_error(client, status, reason, &[], &format!("{why}\n"), true) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()), // the client left
        done => done,
    }
}

// ANCHOR: pool
/// The weights of the demo's backends.
const WEIGHTS: [(&str, u32); 3] = [("alpha", 3), ("beta", 1), ("gamma", 1)];

/// The demo's balancer: smooth weighted round-robin over `WEIGHTS`.
fn start() -> io::Result<(Vec<Backend>, Running)> {
    let ms = Duration::from_millis(1);
    let specs: Vec<(&str, Duration)> = WEIGHTS.iter().map(|&(name, _)| (name, ms)).collect();
    let (backends, mut configs) = start_backends(&specs)?;
    for (config, (_, weight)) in configs.iter_mut().zip(WEIGHTS) {
        config.weight = weight;
    }
    let config = PoolConfig {
        algorithm: Algorithm::Weighted,
        ..PoolConfig::default()
    };
    let pool = Pool::new(configs, config, Arc::new(MonotonicClock::new()));
    let balancer = Running::start(move |conn| {
        let _ = handle(conn, &pool);
    })?;
    Ok((backends, balancer))
}
// ANCHOR_END: pool

/// Who answered each of `n` GETs sent one after the other.
fn answers(balancer: &Running, n: usize) -> io::Result<Vec<String>> {
    let mut answers = Vec::new();
    for _ in 0..n {
        let answer = fetch(balancer.addr, "GET", "/search?q=lamp", b"")?;
        answers.push(answered_by(&answer));
    }
    Ok(answers)
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let (_backends, balancer) = start().expect("the balancer starts");
    let weights: Vec<String> = WEIGHTS.iter().map(|(n, w)| format!("{n} {w}")).collect();
    println!("weights: {}", weights.join(", "));
    let first = answers(&balancer, 10).expect("the first ten GETs");
    println!("first 10 GETs: {}", first.join(" "));
    let many = answers(&balancer, 500).expect("500 GETs");
    for (name, _) in WEIGHTS {
        let count = many.iter().filter(|a| *a == name).count();
        let share = 100.0 * count as f64 / many.len() as f64;
        println!("{name}: {count} of {} GETs ({share:.1}%)", many.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn each_backend_gets_its_weight_and_the_heavy_ones_turns_are_spread() {
        configure_for_tests();
        let (_backends, balancer) = start().unwrap();
        let seen = answers(&balancer, 100).unwrap();
        let count = |name: &str| seen.iter().filter(|a| *a == name).count();
        assert_eq!(
            (count("alpha"), count("beta"), count("gamma")),
            (60, 20, 20)
        );
        // Smooth: alpha never gets more than two in a row (the end of one
        // cycle and the start of the next); repeating each backend
        // `weight` times would give it three.
        let longest = seen
            .split(|a| a != "alpha")
            .map(|run| run.len())
            .max()
            .unwrap();
        assert_eq!(longest, 2, "{seen:?}");
    }
}
