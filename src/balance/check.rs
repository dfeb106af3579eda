// ANCHOR: checker
//! The active health checker: HAProxy's `option httpchk GET <path>` with
//! `check inter <interval>`, feeding [`Pool::check_result`].
//!
//! Every `interval` one round starts: one coroutine per backend connects,
//! sends `GET <path> HTTP/1.1` with `Host` and `Connection: close`, and
//! reads the status line. A `2xx` or `3xx` answer is a pass; a refused
//! connect, a timeout, a malformed answer or any other status is a failure.
//! The pool's [`HealthRule`](super::HealthRule) turns `fall` failures in a
//! row into "down" and `rise` passes into "up" again.
//!
//! - Backends are checked concurrently, and each records its own result as
//!   soon as it has it, so a backend that accepts and never answers delays
//!   nobody else's verdict.
//! - A round waits for its slowest check (at most [`CheckConfig::timeout`])
//!   before the next is scheduled, so checks of a hung backend never pile
//!   up. Set the timeout no longer than the interval.
//! - The wait for the answer is kept by the process's [`alarm`] thread (it
//!   shuts the socket's reading side at the deadline), not by a may socket
//!   timeout: may's timers race at short timeouts (see [`crate::alarm`]),
//!   and a check interval of a fraction of a second is common. The connect
//!   is given at least [`MIN_SOCKET_TIMEOUT`] for the same reason; on a
//!   deadline shorter than that, a connect that outlives it still fails the
//!   check.
//! - Between rounds the checker waits on a child of its [`Shutdown`],
//!   triggered by the alarm thread: a shutdown ends the wait at once, and a
//!   round already started ends within the timeout.

use std::io::{self, BufReader, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::{Builder, JoinHandle};
use may::go;

use super::Pool;
use crate::alarm;
use crate::http::{read_response_head, Limits};
use crate::server::MIN_SOCKET_TIMEOUT;
use crate::shutdown::Shutdown;

/// A check coroutine's stack: a connect, a 4 KiB heap buffer, one parsed
/// head. 64 KiB leaves a debug build room (httparse and the formatting
/// machinery are not frugal there).
const CHECK_STACK_BYTES: usize = 64 * 1024;

/// The read buffer of one check: a status line and a few headers.
const CHECK_BUFFER_BYTES: usize = 4 * 1024;

/// A status line and headers are all a check reads.
const CHECK_LIMITS: Limits = Limits {
    head_bytes: CHECK_BUFFER_BYTES,
    headers: 64,
    body_bytes: 0,
};

/// What the checker sends and how often.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Time from one round's start to the next one's (HAProxy's `inter`).
    pub interval: Duration,
    /// How long one check may take, connect and answer together.
    pub timeout: Duration,
    /// The origin-form target checked, such as `/` or `/healthz`.
    pub path: String,
}

/// Start the checker: a coroutine that checks every backend of `pool`
/// once at once, then every `config.interval`, until `shutdown`. Join the
/// handle after triggering `shutdown`; it returns within `config.timeout`.
///
/// # Panics
///
/// If `config.interval` or `config.timeout` is zero, or the path does not
/// start with `/` or holds a space or a control character (it goes into the
/// request line as it is).
pub fn spawn_checker(pool: Arc<Pool>, config: CheckConfig, shutdown: Shutdown) -> JoinHandle<()> {
    assert!(
        !config.interval.is_zero() && !config.timeout.is_zero(),
        "a check interval and timeout are more than zero"
    );
    assert!(
        valid_path(&config.path),
        "a check path starts with / and holds no space or control character"
    );
    let config = Arc::new(config);
    go!(move || {
        let mut next = Instant::now();
        while !shutdown.is_triggered() {
            round(&pool, &config, &shutdown);
            // Rounds keep their rhythm; after a late one (a machine held
            // off its CPU), the next starts at once instead of in a burst.
            next = (next + config.interval).max(Instant::now());
            wait_until(&shutdown, next);
        }
    })
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/') && !path.bytes().any(|b| b <= b' ' || b == 0x7f)
}

/// Check every backend concurrently; return when every check has ended.
fn round(pool: &Arc<Pool>, config: &Arc<CheckConfig>, shutdown: &Shutdown) {
    let checks: Vec<JoinHandle<()>> = pool
        .addrs()
        .into_iter()
        .map(|addr| {
            let (pool, config, shutdown) = (pool.clone(), config.clone(), shutdown.clone());
            let builder = Builder::new().stack_size(CHECK_STACK_BYTES / size_of::<usize>());
            go!(builder, move || {
                let ok = check_once(addr, &config);
                // A check that ends after a shutdown says nothing about
                // the backend (its socket may have been closed under it).
                if !shutdown.is_triggered() {
                    pool.check_result(addr, ok);
                }
            })
            .expect("may's Builder::spawn does not fail")
        })
        .collect();
    for check in checks {
        // A check cannot panic short of a bug; its verdict is then lost,
        // and the next round checks again.
        let _ = check.join();
    }
}
// ANCHOR_END: checker

/// One check of `addr`: whether it answered `2xx` or `3xx` in time.
pub fn check_once(addr: SocketAddr, config: &CheckConfig) -> bool {
    probe(addr, config).is_ok_and(|status| (200..400).contains(&status))
}

/// The status `addr` answers the check request with.
fn probe(addr: SocketAddr, config: &CheckConfig) -> io::Result<u16> {
    let deadline = Instant::now() + config.timeout;
    let mut stream = crate::net::connect_timeout(&addr, config.timeout.max(MIN_SOCKET_TIMEOUT))?;
    if Instant::now() >= deadline {
        return Err(io::Error::new(ErrorKind::TimedOut, "connect took too long"));
    }
    let ring = alarm::shared().shutdown_read_at(&stream, deadline)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: may-patterns-check\r\nConnection: close\r\n\r\n",
        config.path
    );
    // A few dozen bytes fit any socket's send buffer: the write does not
    // wait for a backend that never reads.
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::with_capacity(CHECK_BUFFER_BYTES, stream);
    match read_response_head(&mut reader, &CHECK_LIMITS) {
        Ok(head) => Ok(head.status),
        Err(_) if ring.fired() => Err(io::Error::new(ErrorKind::TimedOut, "no answer in time")),
        Err(e) => Err(e),
    }
}

/// Park until `at`, or less if `shutdown` comes first.
fn wait_until(shutdown: &Shutdown, at: Instant) {
    let waiting = shutdown.child();
    let wake = waiting.clone();
    let _call = alarm::shared().call_at(at, move || wake.trigger());
    waiting.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendConfig as Scripted};
    use crate::balance::{BackendConfig, HealthRule, PoolConfig, State};
    use crate::clock::MonotonicClock;
    use crate::runtime::configure_for_tests;

    /// How long a test waits for a state before it fails.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn config(interval_ms: u64, timeout_ms: u64) -> CheckConfig {
        CheckConfig {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            // The scripted backend answers only searches (400 otherwise).
            path: "/search?q=health".to_owned(),
        }
    }

    fn pool(addrs: &[SocketAddr]) -> Arc<Pool> {
        let backends = addrs.iter().map(|&a| BackendConfig::new(a)).collect();
        let config = PoolConfig {
            rule: HealthRule { rise: 2, fall: 3 },
            ..PoolConfig::default()
        };
        Arc::new(Pool::new(backends, config, Arc::new(MonotonicClock::new())))
    }

    /// A port nothing listens on: bound, read, then released.
    fn closed_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    fn state(pool: &Pool, addr: SocketAddr) -> (State, u64, u64) {
        let s = pool.stats().into_iter().find(|s| s.addr == addr).unwrap();
        (s.state, s.checks_passed, s.checks_failed)
    }

    /// Poll `addr`'s (state, passed, failed) every 10 ms, on this test
    /// thread, until `done` holds; return the snapshot that held.
    fn wait_for(
        pool: &Pool,
        addr: SocketAddr,
        what: &str,
        done: impl Fn(&(State, u64, u64)) -> bool,
    ) -> (State, u64, u64) {
        let start = Instant::now();
        loop {
            let now = state(pool, addr);
            if done(&now) {
                return now;
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn one_check_passes_on_an_answer_and_fails_on_refusal_and_bad_status() {
        configure_for_tests();
        let up = Backend::start(Scripted::new("up", Duration::ZERO)).unwrap();
        let closed = closed_port();
        let (up_addr, cfg) = (up.addr, config(100, 1000));
        let results = go!(move || {
            let bad_path = CheckConfig {
                path: "/".to_owned(),
                ..cfg.clone()
            };
            (
                check_once(up_addr, &cfg),
                check_once(closed, &cfg),
                check_once(up_addr, &bad_path),
            )
        })
        .join()
        .unwrap();
        assert_eq!(results, (true, false, false), "(up, closed, 400 answer)");
    }

    #[test]
    fn a_closed_port_goes_down_after_fall_checks_and_a_live_one_stays_up() {
        configure_for_tests();
        let up = Backend::start(Scripted::new("up", Duration::ZERO)).unwrap();
        let closed = closed_port();
        let pool = pool(&[up.addr, closed]);
        let shutdown = Shutdown::new();
        let checker = spawn_checker(pool.clone(), config(200, 500), shutdown.clone());
        let seen = wait_for(&pool, closed, "the closed port goes down", |s| {
            s.0 == State::Down
        });
        assert_eq!(seen, (State::Down, 0, 3), "down on the third failure");
        let live = wait_for(&pool, up.addr, "three checks of the live one", |s| s.1 >= 3);
        assert_eq!((live.0, live.2), (State::Up, 0), "up, no check failed");
        shutdown.trigger();
        checker.join().unwrap();
    }

    #[test]
    fn a_backend_that_never_answers_goes_down_by_timeout_without_delaying_others() {
        configure_for_tests();
        let mut hung_config = Scripted::new("hung", Duration::ZERO);
        hung_config.hang = true;
        let hung = Backend::start(hung_config).unwrap();
        let up = Backend::start(Scripted::new("up", Duration::ZERO)).unwrap();
        let pool = pool(&[hung.addr, up.addr]);
        let shutdown = Shutdown::new();
        let (interval, timeout) = (Duration::from_millis(600), Duration::from_millis(600));
        let started = Instant::now();
        let checker = spawn_checker(
            pool.clone(),
            config(interval.as_millis() as u64, timeout.as_millis() as u64),
            shutdown.clone(),
        );
        // The first round's verdict on the live backend lands before the
        // hung one's timeout, not after it.
        wait_for(&pool, up.addr, "the first check of the live one", |s| {
            s.1 >= 1
        });
        assert!(
            started.elapsed() < timeout,
            "the live backend's check waited for the hung one: {:?}",
            started.elapsed()
        );
        let seen = wait_for(&pool, hung.addr, "the hung one goes down", |s| {
            s.0 == State::Down
        });
        assert_eq!((seen.1, seen.2), (0, 3), "three checks timed out");
        assert!(started.elapsed() >= 3 * timeout, "{:?}", started.elapsed());
        assert_eq!(state(&pool, up.addr).0, State::Up);
        shutdown.trigger();
        checker.join().unwrap();
    }

    #[test]
    fn a_down_backend_comes_back_after_rise_passes() {
        configure_for_tests();
        let up = Backend::start(Scripted::new("back", Duration::ZERO)).unwrap();
        let pool = pool(&[up.addr]);
        // Taken down by live traffic (passive marks), which only checks undo.
        for _ in 0..3 {
            pool.pick().unwrap().done(crate::balance::Outcome::Error);
        }
        assert_eq!(state(&pool, up.addr).0, State::Down);
        let shutdown = Shutdown::new();
        let checker = spawn_checker(pool.clone(), config(200, 500), shutdown.clone());
        let seen = wait_for(&pool, up.addr, "the backend comes back", |s| {
            s.0 == State::Up
        });
        assert_eq!(seen, (State::Up, 2, 0), "up on the second pass");
        shutdown.trigger();
        checker.join().unwrap();
    }

    #[test]
    fn a_shutdown_ends_the_wait_between_rounds_at_once() {
        configure_for_tests();
        let up = Backend::start(Scripted::new("up", Duration::ZERO)).unwrap();
        let pool = pool(&[up.addr]);
        let shutdown = Shutdown::new();
        let checker = spawn_checker(pool.clone(), config(60_000, 500), shutdown.clone());
        wait_for(&pool, up.addr, "the first round", |s| s.1 == 1);
        let asked = Instant::now();
        shutdown.trigger();
        checker.join().unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }

    #[test]
    fn paths_that_would_break_the_request_line_are_refused() {
        assert!(valid_path("/healthz?full=1"));
        assert!(!valid_path("healthz"));
        assert!(!valid_path("/a b"));
        assert!(!valid_path("/a\r\nX: y"));
    }
}
