//! Step 6: draining and stats. To take a backend out for a deploy, an
//! operator drains it: it gets no new requests, and the ones in flight
//! finish. The balancer now answers two paths of its own, before any
//! backend is picked: `POST /_lb/drain?backend=NAME` (and `/_lb/undrain`)
//! and `GET /_lb/stats`, the pool's counters as JSON
//! (`balance::to_json`). They change the pool, so only a client on
//! loopback may use them. The forwarding code is step 4's; the checker of
//! step 5 is left out, so the stats print the same on every run (its check
//! counts grow with time).
//!
//! The demo starts a slow request on alpha, drains alpha while it is in
//! flight, sends more requests (all to beta), and prints the stats before
//! and after the slow request ends.

#[path = "steps_common.rs"]
mod steps_common;

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpStream;
use may_patterns::alarm;
use may_patterns::backend::Backend;
use may_patterns::balance::{self, BackendStats, Lease, Outcome, Pool, PoolConfig};
use may_patterns::clock::ManualClock;
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
/// One client connection, one request: the balancer's own paths first,
/// then forwarding as in step 4.
fn handle(conn: Conn, pool: &Pool) -> io::Result<()> {
    conn.set_idle_timeout(Some(CLIENT_IDLE))?;
    let peer = conn.peer();
    let (reader, writer) = conn.split()?;
    let mut client_in = BufReader::new(reader);
    let mut client_out = BufWriter::new(writer);
    let limits = Limits::default();
    let mut head = match http::read_request_head(&mut client_in, &limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(()),
        Err(e) => return refuse(&mut client_out, 400, "Bad Request", &e.to_string()),
    };
    if head.target.starts_with(ADMIN) {
        if !peer.ip().is_loopback() {
            let why = "the balancer's own paths answer loopback clients only";
            return refuse(&mut client_out, 403, "Forbidden", why);
        }
        return admin(&head, pool, &mut client_out);
    }
    if !head.target.starts_with('/') {
        let why = "a balancer takes origin-form targets (/path?query)";
        return refuse(&mut client_out, 400, "Bad Request", why);
    }
    let framing = head.framing()?;
    http::remove_hop_by_hop(&mut head.headers);
    http::set_framing(&mut head.headers, framing);
    head.headers.push(("Connection".into(), "close".into()));
    let mut buf = vec![0; COPY_BUFFER];
    forward(
        pool,
        &head,
        framing,
        &mut client_in,
        &mut client_out,
        &mut buf,
    )
}
// ANCHOR_END: handle

/// The prefix of the balancer's own paths; no backend sees them.
const ADMIN: &str = "/_lb/";
/// Every answer ends its connection, as forwarded ones do.
const CLOSE: [(&str, &str); 1] = [("Connection", "close")];

// ANCHOR: admin
/// `GET /_lb/stats`, `POST /_lb/drain?backend=NAME`, `POST
/// /_lb/undrain?backend=NAME`.
fn admin(head: &http::RequestHead, pool: &Pool, client: &mut impl Write) -> io::Result<()> {
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let action = &path[ADMIN.len()..];
    match (head.method.as_str(), action) {
        ("GET", "stats") => {
            let json = balance::to_json(&pool.stats());
            http::write_response(
                client,
                200,
                "OK",
                "application/json",
                &CLOSE,
                json.as_bytes(),
            )
        }
        ("POST", "drain" | "undrain") => {
            let Some(name) = query.strip_prefix("backend=") else {
                return refuse(client, 400, "Bad Request", "expected ?backend=NAME");
            };
            let Some(backend) = pool.stats().into_iter().find(|s| s.name == name) else {
                return refuse(
                    client,
                    404,
                    "Not Found",
                    &format!("no backend named {name:?}"),
                );
            };
            let what = match action {
                "drain" => {
                    pool.drain(backend.addr);
                    format!("{name}: draining, {} in flight", backend.in_flight)
                }
                _ => {
                    pool.undrain(backend.addr);
                    format!("{name}: taking new requests")
                }
            };
            let body = format!("{what}\n");
            http::write_response(client, 200, "OK", "text/plain", &CLOSE, body.as_bytes())
        }
        (_, "stats" | "drain" | "undrain") => refuse(
            client,
            405,
            "Method Not Allowed",
            "stats takes GET, drain and undrain POST",
        ),
        _ => refuse(
            client,
            404,
            "Not Found",
            "the balancer's paths: stats, drain, undrain",
        ),
    }
}
// ANCHOR_END: admin

/// Send the request to a backend and relay its answer. Every lease ends
/// with its outcome. A request that failed before its answer began goes
/// once more, to another backend, if sending it twice is safe: a `GET` or
/// `HEAD` without a body. Anything else gets a `502`.
fn forward(
    pool: &Pool,
    head: &http::RequestHead,
    framing: Framing,
    client_in: &mut impl BufRead,
    client_out: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<()> {
    let idempotent = matches!(head.method.as_str(), "GET" | "HEAD");
    let attempts = if idempotent && framing == Framing::Empty {
        2
    } else {
        1
    };
    let mut failed: Option<(SocketAddr, io::Error)> = None;
    for _ in 0..attempts {
        let Some(lease) = pick_other(pool, failed.as_ref().map(|(addr, _)| *addr)) else {
            break;
        };
        match exchange(lease.addr(), head, framing, client_in, buf) {
            Ok((backend, answer)) => {
                // HAProxy's `observe layer7`: a 5xx counts against the
                // backend. An error while relaying does not: it may be the
                // client's.
                let outcome = match answer.status {
                    500.. => Outcome::Error,
                    _ => Outcome::Ok,
                };
                let relayed = relay(backend, answer, &head.method, client_out, buf);
                lease.done(outcome); // out of flight only now, for least-conn
                return relayed;
            }
            Err(e) => {
                let addr = lease.addr();
                lease.done(outcome_of(&e));
                failed = Some((addr, e));
            }
        }
    }
    match failed {
        Some((_, e)) => refuse(client_out, 502, "Bad Gateway", &e.to_string()),
        None => refuse(client_out, 503, "Service Unavailable", "no backend is up"),
    }
}

/// A timeout is a slow backend, anything else a failed one; both count
/// towards `fall`, and the stats tell them apart.
fn outcome_of(e: &io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

/// The pool's next pick, unless it is the backend that has just failed
/// this request (round-robin has moved past it already; least-connections
/// may pick it again): then the one after. `None` if no other is up.
fn pick_other(pool: &Pool, failed: Option<SocketAddr>) -> Option<Lease> {
    for _ in 0..pool.addrs().len() {
        let lease = pool.pick()?;
        if Some(lease.addr()) != failed {
            return Some(lease);
        }
    }
    None
}

/// Connect to the backend, send it the request (body included) and read
/// its answer's head: everything that happens before a byte of the answer
/// reaches the client, and so may still be retried.
fn exchange(
    addr: SocketAddr,
    head: &http::RequestHead,
    framing: Framing,
    body: &mut impl BufRead,
    buf: &mut [u8],
) -> io::Result<(BufReader<TcpStream>, http::ResponseHead)> {
    let stream = may_patterns::net::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(BACKEND_IDLE))?;
    let mut out = BufWriter::new(stream.try_clone()?);
    let start = format!("{} {} HTTP/1.1", head.method, head.target);
    http::write_head(&mut out, &start, &head.headers)?;
    let limits = Limits::default();
    let cap = limits.body_bytes as u64;
    http::copy_body(body, framing, &mut out, framing, cap, &limits, buf)?;
    out.flush()?;
    let mut backend = BufReader::new(stream);
    let answer = http::read_response_head(&mut backend, &limits)?;
    Ok((backend, answer))
}

/// Stream the answer to the client, framed as the backend framed it.
fn relay(
    mut backend: BufReader<TcpStream>,
    mut answer: http::ResponseHead,
    method: &str,
    client: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<()> {
    let limits = Limits::default();
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

/// How long the request in flight during the drain takes.
const SLOW: Duration = Duration::from_millis(500);
/// How long the demo waits for a state before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The demo's pieces: a slow alpha, a fast beta, the pool, the balancer.
/// The pool's clock is a `ManualClock` that never moves, so the stats'
/// `last_change_ms` prints the same every run.
struct Demo {
    _backends: Vec<Backend>,
    pool: Pool,
    balancer: Running,
}

fn start() -> io::Result<Demo> {
    let (backends, configs) =
        start_backends(&[("alpha", SLOW), ("beta", Duration::from_millis(1))])?;
    let pool = Pool::new(configs, PoolConfig::default(), Arc::new(ManualClock::new()));
    let serving = pool.clone();
    let balancer = Running::start(move |conn| {
        let _ = handle(conn, &serving);
    })?;
    Ok(Demo {
        _backends: backends,
        pool,
        balancer,
    })
}

/// Probe the pool every few milliseconds until `done` holds for it.
fn wait_until(pool: &Pool, what: &str, done: impl Fn(&[BackendStats]) -> bool) -> io::Result<()> {
    let start = Instant::now();
    while !done(&pool.stats()) {
        if start.elapsed() > PATIENCE {
            let why = format!("not within {PATIENCE:?}: {what}");
            return Err(io::Error::new(ErrorKind::TimedOut, why));
        }
        alarm::shared().sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// An answer's body as text, without its last newline.
fn text(answer: &http::Response) -> String {
    String::from_utf8_lossy(&answer.body).trim_end().to_owned()
}

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let demo = start().expect("the demo starts");
    let addr = demo.balancer.addr;
    // Round-robin's first pick is alpha, which takes `SLOW` to answer.
    let slow = go!(move || fetch(addr, "GET", "/search?q=lamp", b""));
    wait_until(&demo.pool, "alpha has a request in flight", |s| {
        s[0].in_flight == 1
    })
    .expect("the slow request starts");
    let drained = fetch(addr, "POST", "/_lb/drain?backend=alpha", b"").expect("drain");
    println!(
        "POST /_lb/drain?backend=alpha: {} {}",
        drained.status,
        text(&drained)
    );
    let stats = fetch(addr, "GET", "/_lb/stats", b"").expect("stats");
    println!("GET /_lb/stats: {}", text(&stats));
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(answered_by(
            &fetch(addr, "GET", "/search?q=lamp", b"").expect("a GET"),
        ));
    }
    println!("4 GETs while alpha drains: {}", seen.join(" "));
    let slow = slow.join().expect("the slow client").expect("the slow GET");
    println!(
        "the GET in flight on alpha: {} from {}",
        slow.status,
        answered_by(&slow)
    );
    let stats = fetch(addr, "GET", "/_lb/stats", b"").expect("stats");
    println!("GET /_lb/stats: {}", text(&stats));
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_drained_backend_finishes_its_request_and_gets_no_new_one_until_undrained() {
        configure_for_tests();
        let demo = start().unwrap();
        let addr = demo.balancer.addr;
        let slow = go!(move || fetch(addr, "GET", "/search?q=x", b""));
        wait_until(&demo.pool, "in flight", |s| s[0].in_flight == 1).unwrap();
        let drained = fetch(addr, "POST", "/_lb/drain?backend=alpha", b"").unwrap();
        assert_eq!(drained.status, 200);
        for _ in 0..5 {
            let answer = fetch(addr, "GET", "/search?q=x", b"").unwrap();
            assert_eq!(answered_by(&answer), "beta");
        }
        let slow = slow.join().unwrap().unwrap();
        assert_eq!(
            answered_by(&slow),
            "alpha",
            "the request in flight finished"
        );
        let undrained = fetch(addr, "POST", "/_lb/undrain?backend=alpha", b"").unwrap();
        assert_eq!(undrained.status, 200);
        let picks = |name: &str| {
            demo.pool
                .stats()
                .into_iter()
                .find(|s| s.name == name)
                .unwrap()
        };
        let before = picks("alpha").picks;
        for _ in 0..2 {
            fetch(addr, "GET", "/search?q=x", b"").unwrap();
        }
        assert_eq!(
            picks("alpha").picks,
            before + 1,
            "alpha takes its turns again"
        );
    }

    #[test]
    fn stats_are_the_pools_counters_as_json() {
        configure_for_tests();
        let demo = start().unwrap();
        let addr = demo.balancer.addr;
        fetch(addr, "POST", "/_lb/drain?backend=beta", b"").unwrap();
        let answer = fetch(addr, "GET", "/_lb/stats", b"").unwrap();
        assert_eq!(answer.status, 200);
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        let backends = json.as_array().unwrap();
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0]["name"], "alpha");
        assert_eq!(backends[0]["state"], "up");
        assert_eq!(backends[1]["state"], "draining");
        assert_eq!(
            backends[1]["picks"], 0,
            "the balancer's own paths pick no backend"
        );
    }

    #[test]
    fn bad_admin_requests_are_told_what_is_wrong() {
        configure_for_tests();
        let demo = start().unwrap();
        let addr = demo.balancer.addr;
        let status = |method: &str, target: &str| fetch(addr, method, target, b"").unwrap().status;
        assert_eq!(status("POST", "/_lb/drain?backend=nobody"), 404);
        assert_eq!(status("POST", "/_lb/drain"), 400);
        assert_eq!(status("GET", "/_lb/drain?backend=alpha"), 405);
        assert_eq!(status("POST", "/_lb/stats"), 405);
        assert_eq!(status("GET", "/_lb/other"), 404);
        // None of them reached a backend or changed the pool.
        assert!(demo
            .pool
            .stats()
            .iter()
            .all(|s| s.picks == 0 && s.state.as_str() == "up"));
    }
}
