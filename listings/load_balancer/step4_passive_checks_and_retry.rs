//! Step 4: passive health checks and one retry. Live traffic shows which
//! backend is failing: every lease now ends with `Lease::done(outcome)`,
//! and `fall` errors or timeouts in a row (HAProxy's default, 3) take the
//! backend out of the pool. The requests that met the failure need not
//! fail too: a GET that failed before any byte of its answer came back is
//! sent once more, to another backend. A POST is not: its body has been
//! streamed to the failed backend and is gone, and sending it twice could
//! do its work twice. It gets a `502`.
//!
//! The demo's pool has a backend that resets every connection. One POST
//! meets it (502); then 20 GETs all succeed, and the bad backend is down.

#[path = "steps_common.rs"]
mod steps_common;

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use may::net::TcpStream;
use may_patterns::backend::Backend;
use may_patterns::balance::{
    BackendConfig, BackendStats, HealthRule, Lease, Outcome, Pool, PoolConfig,
};
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
/// One client connection, one request: read the head, check it, forward.
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

// ANCHOR: forward
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
// ANCHOR_END: forward

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

// ANCHOR: resetting
/// A backend that resets every connection: it reads the first byte of a
/// request and closes with the rest unread, so the kernel answers with a
/// reset, as when a backend's worker dies behind a listener still open.
fn start_resetting() -> io::Result<Running> {
    Running::start(|conn| {
        if let Ok((mut request, _)) = conn.split() {
            let _ = request.read(&mut [0u8; 1]);
        }
    })
}
// ANCHOR_END: resetting

/// The demo's balancer over `gamma` (resetting, first in the pool, so the
/// first request goes to it), `alpha` and `beta`; and a handle on its pool.
struct Demo {
    _backends: Vec<Backend>,
    _resetting: Running,
    pool: Pool,
    balancer: Running,
}

fn start() -> io::Result<Demo> {
    let ms = Duration::from_millis(1);
    let resetting = start_resetting()?;
    let (backends, good) = start_backends(&[("alpha", ms), ("beta", ms)])?;
    let mut configs = vec![BackendConfig {
        name: "gamma".into(),
        addr: resetting.addr,
        weight: 1,
    }];
    configs.extend(good);
    let pool = Pool::new(
        configs,
        PoolConfig::default(),
        Arc::new(MonotonicClock::new()),
    );
    let serving = pool.clone();
    let balancer = Running::start(move |conn| {
        let _ = handle(conn, &serving);
    })?;
    Ok(Demo {
        _backends: backends,
        _resetting: resetting,
        pool,
        balancer,
    })
}

/// The stats of the backend named `name`.
fn stats_of(pool: &Pool, name: &str) -> BackendStats {
    pool.stats()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a backend of that name")
}

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let demo = start().expect("the demo starts");
    let addr = demo.balancer.addr;
    let post = fetch(addr, "POST", "/search?q=lamp", b"order=1").expect("the POST");
    println!(
        "POST with a body, to gamma: {} {}",
        post.status, post.reason
    );
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(answered_by(
            &fetch(addr, "GET", "/search?q=lamp", b"").expect("a GET"),
        ));
    }
    let count = |name: &str| answers.iter().filter(|a| *a == name).count();
    let failed = answers.len() - count("alpha") - count("beta");
    println!(
        "20 GETs: alpha answered {}, beta {}, {failed} failed",
        count("alpha"),
        count("beta")
    );
    let gamma = stats_of(&demo.pool, "gamma");
    println!(
        "gamma: {}, after {} errors in {} picks (fall {})",
        gamma.state.as_str(),
        gamma.errors,
        gamma.picks,
        HealthRule::default().fall
    );
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::backend;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_get_that_meets_a_reset_is_answered_by_another_backend() {
        configure_for_tests();
        let demo = start().unwrap();
        // The first pick is gamma, which resets.
        let answer = fetch(demo.balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answered_by(&answer), "alpha");
        let gamma = stats_of(&demo.pool, "gamma");
        assert_eq!((gamma.picks, gamma.errors), (1, 1));
    }

    #[test]
    fn a_post_with_a_body_is_not_sent_twice() {
        configure_for_tests();
        let demo = start().unwrap();
        let answer = fetch(demo.balancer.addr, "POST", "/search?q=x", b"pay=1").unwrap();
        assert_eq!(answer.status, 502);
        for backend in &demo._backends {
            assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 0);
        }
    }

    #[test]
    fn fall_errors_in_a_row_take_a_backend_down_and_it_gets_no_more_picks() {
        configure_for_tests();
        let demo = start().unwrap();
        for _ in 0..30 {
            let answer = fetch(demo.balancer.addr, "GET", "/search?q=x", b"").unwrap();
            assert_eq!(answer.status, 200);
        }
        let gamma = stats_of(&demo.pool, "gamma");
        assert_eq!(gamma.state.as_str(), "down");
        assert_eq!(gamma.picks, u64::from(HealthRule::default().fall));
    }

    #[test]
    fn a_5xx_is_relayed_and_counted_against_its_backend() {
        configure_for_tests();
        let mut config = backend::BackendConfig::new("broken", Duration::ZERO);
        config.fail_fraction = 1.0;
        let broken = Backend::start(config).unwrap();
        let configs = vec![BackendConfig::new(broken.addr)];
        let pool = Pool::new(
            configs,
            PoolConfig::default(),
            Arc::new(MonotonicClock::new()),
        );
        let serving = pool.clone();
        let balancer = Running::start(move |conn| {
            let _ = handle(conn, &serving);
        })
        .unwrap();
        let fall = HealthRule::default().fall;
        for _ in 0..fall {
            let answer = fetch(balancer.addr, "GET", "/search?q=x", b"").unwrap();
            assert_eq!(answer.status, 500, "relayed as it came, not retried");
        }
        // The lease ends after its answer is relayed, so the last verdict
        // can land just after the client has read that answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.stats()[0].state.as_str() != "down" {
            assert!(
                std::time::Instant::now() < deadline,
                "still up after {fall} 5xx answers"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let answer = fetch(balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answer.status, 503);
    }

    #[test]
    fn timeouts_and_errors_are_told_apart() {
        let kind = |k| outcome_of(&io::Error::from(k));
        assert_eq!(kind(ErrorKind::TimedOut), Outcome::Timeout);
        assert_eq!(kind(ErrorKind::WouldBlock), Outcome::Timeout);
        assert_eq!(kind(ErrorKind::ConnectionReset), Outcome::Error);
        assert_eq!(kind(ErrorKind::ConnectionRefused), Outcome::Error);
    }
}
