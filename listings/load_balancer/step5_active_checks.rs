//! Step 5: active health checks and slow start. Passive checks only take
//! a backend out; nothing brings it back, since a down backend gets no
//! traffic to show it has recovered. Now a checker coroutine
//! (`may_patterns::balance::spawn_checker`, HAProxy's `option httpchk`)
//! asks every backend for a path every interval: `fall` failed checks in a
//! row take it down, `rise` passed ones bring it back. A backend that comes
//! back starts at weight 1, and its weight grows to the configured one over
//! the slow-start window, so its cold caches get a share of traffic that
//! grows with them. The forwarding code is step 4's, unchanged.
//!
//! The demo kills a backend and starts it again on the same address, and
//! prints what the pool did. It moves the pool's clock by hand
//! (`ManualClock`) to show the ramp, so its output is the same every run;
//! the checker runs on real time.

#[path = "steps_common.rs"]
mod steps_common;

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::go;
use may::net::{TcpListener, TcpStream};
use may_patterns::alarm;
use may_patterns::backend;
use may_patterns::balance::{
    spawn_checker, Algorithm, BackendConfig, BackendStats, CheckConfig, HealthRule, Lease, Outcome,
    Pool, PoolConfig, State,
};
use may_patterns::clock::ManualClock;
use may_patterns::http::{self, Framing, Limits};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::Conn;
use may_patterns::shutdown::Shutdown;
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

/// How often the demo's checker checks, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long the demo waits for a state before it fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// The demo pool's slow-start window, and the weight of both backends.
const SLOW_START: Duration = Duration::from_secs(10);
const WEIGHT: u32 = 4;

// ANCHOR: restartable
/// A scripted backend that can be stopped and started again on the same
/// address, as a process restarted by its supervisor is.
struct Restartable {
    name: &'static str,
    addr: SocketAddr,
    running: Option<(Shutdown, JoinHandle<io::Result<()>>)>,
}

impl Restartable {
    fn start(name: &'static str, addr: SocketAddr) -> io::Result<Restartable> {
        let mut backend = Restartable {
            name,
            addr,
            running: None,
        };
        backend.restart()?;
        Ok(backend)
    }

    /// Listen on the address again and serve.
    fn restart(&mut self) -> io::Result<()> {
        let listener = TcpListener::bind(self.addr)?;
        self.addr = listener.local_addr()?; // the port, if it was 0
        let shutdown = Shutdown::new();
        let (stop, name) = (shutdown.clone(), self.name);
        let serving = go!(move || {
            let config = backend::BackendConfig::new(name, Duration::from_millis(1));
            backend::serve(listener, stop, config, Default::default())
        });
        self.running = Some((shutdown, serving));
        Ok(())
    }

    /// Stop: close the listener, so connects are refused.
    fn kill(&mut self) {
        if let Some((shutdown, serving)) = self.running.take() {
            shutdown.trigger();
            let _ = serving.join();
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.kill();
    }
}
// ANCHOR_END: restartable

/// The stats of the backend named `name`.
fn stats_of(pool: &Pool, name: &str) -> BackendStats {
    pool.stats()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a backend of that name")
}

/// Probe the pool every few milliseconds until `name` is in `state`.
fn wait_for(pool: &Pool, name: &str, state: State) -> io::Result<()> {
    let start = Instant::now();
    while stats_of(pool, name).state != state {
        if start.elapsed() > PATIENCE {
            let why = format!("{name} was not {} within {PATIENCE:?}", state.as_str());
            return Err(io::Error::new(ErrorKind::TimedOut, why));
        }
        alarm::shared().sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Who answered each of `n` GETs sent one after the other.
fn answers(addr: SocketAddr, n: usize) -> io::Result<Vec<String>> {
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(answered_by(&fetch(addr, "GET", "/search?q=lamp", b"")?));
    }
    Ok(answers)
}

/// How many of `answers` came from `name`.
fn count(answers: &[String], name: &str) -> usize {
    answers.iter().filter(|a| *a == name).count()
}

/// The demo's pieces: the backends, the pool and its clock, the checker,
/// the balancer.
struct Demo {
    /// alpha stops when dropped.
    _alpha: Vec<backend::Backend>,
    beta: Restartable,
    pool: Arc<Pool>,
    clock: ManualClock,
    checker: Option<(Shutdown, JoinHandle<()>)>,
    balancer: Running,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some((shutdown, checker)) = self.checker.take() {
            shutdown.trigger();
            let _ = checker.join();
        }
    }
}

// ANCHOR: start
fn start() -> io::Result<Demo> {
    let (alpha, mut configs) = start_backends(&[("alpha", Duration::from_millis(1))])?;
    let beta = Restartable::start("beta", SocketAddr::from(([127, 0, 0, 1], 0)))?;
    configs.push(BackendConfig {
        name: beta.name.into(),
        addr: beta.addr,
        weight: 1,
    });
    for config in &mut configs {
        config.weight = WEIGHT;
    }
    let clock = ManualClock::new();
    let config = PoolConfig {
        algorithm: Algorithm::Weighted,
        rule: HealthRule { rise: 2, fall: 3 },
        slow_start: SLOW_START,
        ..PoolConfig::default()
    };
    let pool = Arc::new(Pool::new(configs, config, Arc::new(clock.clone())));
    let checks = CheckConfig {
        interval: CHECK_EVERY,
        timeout: CHECK_EVERY,
        // The scripted backend answers searches only.
        path: "/search?q=health".into(),
    };
    let stop_checks = Shutdown::new();
    let checker = spawn_checker(pool.clone(), checks, stop_checks.clone());
    let serving = pool.clone();
    let balancer = Running::start(move |conn| {
        let _ = handle(conn, &serving);
    })?;
    Ok(Demo {
        _alpha: alpha,
        beta,
        pool,
        clock,
        checker: Some((stop_checks, checker)),
        balancer,
    })
}
// ANCHOR_END: start

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let mut demo = start().expect("the demo starts");
    let (addr, rule) = (demo.balancer.addr, HealthRule { rise: 2, fall: 3 });
    println!(
        "checks every {CHECK_EVERY:?}, rise {}, fall {}",
        rule.rise, rule.fall
    );
    demo.beta.kill();
    println!("beta killed");
    wait_for(&demo.pool, "beta", State::Down).expect("beta goes down");
    println!("beta down after {} failed checks in a row", rule.fall);
    let seen = answers(addr, 6).expect("GETs");
    println!(
        "6 GETs: alpha {}, beta {}",
        count(&seen, "alpha"),
        count(&seen, "beta")
    );
    demo.beta.restart().expect("beta listens again");
    println!("beta restarted on the same address");
    wait_for(&demo.pool, "beta", State::Up).expect("beta comes back");
    println!("beta up after {} passed checks in a row", rule.rise);
    println!("slow start over {SLOW_START:?} (the pool's clock moved by hand):");
    for _ in 0..5 {
        let beta = stats_of(&demo.pool, "beta");
        let seen = answers(addr, 20).expect("GETs");
        println!(
            "  weight {} of {WEIGHT}: 20 GETs, alpha {}, beta {}",
            beta.effective_weight,
            count(&seen, "alpha"),
            count(&seen, "beta")
        );
        demo.clock.advance(SLOW_START / 4);
    }
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn a_killed_backend_goes_down_and_comes_back_after_checks_alone() {
        configure_for_tests();
        let mut demo = start().unwrap();
        demo.beta.kill();
        wait_for(&demo.pool, "beta", State::Down).unwrap();
        let down = stats_of(&demo.pool, "beta");
        assert!(down.checks_failed >= 3, "{down:?}");
        // No live request reached it: the checks alone took it down.
        assert_eq!(down.errors, 0, "{down:?}");
        demo.beta.restart().unwrap();
        wait_for(&demo.pool, "beta", State::Up).unwrap();
        assert!(stats_of(&demo.pool, "beta").checks_passed >= 2);
    }

    #[test]
    fn a_backend_back_up_ramps_from_weight_one_to_its_own() {
        configure_for_tests();
        let mut demo = start().unwrap();
        demo.beta.kill();
        wait_for(&demo.pool, "beta", State::Down).unwrap();
        demo.beta.restart().unwrap();
        wait_for(&demo.pool, "beta", State::Up).unwrap();
        let mut weights = Vec::new();
        for _ in 0..5 {
            weights.push(stats_of(&demo.pool, "beta").effective_weight);
            demo.clock.advance(SLOW_START / 4);
        }
        assert_eq!(weights, [1, 1, 2, 3, 4]);
        // alpha never went down: no ramp for it.
        assert_eq!(stats_of(&demo.pool, "alpha").effective_weight, WEIGHT);
    }

    #[test]
    fn with_every_backend_down_a_request_gets_503() {
        configure_for_tests();
        let mut demo = start().unwrap();
        demo._alpha.clear(); // stops it
        demo.beta.kill();
        wait_for(&demo.pool, "alpha", State::Down).unwrap();
        wait_for(&demo.pool, "beta", State::Down).unwrap();
        let answer = fetch(demo.balancer.addr, "GET", "/search?q=x", b"").unwrap();
        assert_eq!(answer.status, 503);
    }
}
