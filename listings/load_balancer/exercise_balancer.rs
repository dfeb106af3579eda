//! The small balancer both exercises start from: one request per client
//! connection, read whole (the demos' requests and answers are small),
//! forwarded to a backend chosen by a [`Chooser`], and, if it failed there
//! (no answer, or a `5xx`) and is a `GET`, sent once more to the next
//! backend in pool order when a [`RetryPolicy`] allows it. An exercise
//! writes one of the two hooks.
//!
//! The balancer has no health checks: every backend it is given is up, so
//! a demo takes a backend down by starting a balancer without it, and a
//! failing backend keeps getting its share (as in Envoy's panic mode, when
//! too many hosts are unhealthy to leave out). Each answer carries an
//! `X-Backend` header naming the backend that gave it.

use std::io::{self, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use may::net::TcpListener;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::http::{self, Limits, Request, Response};
use may_patterns::net;
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;

/// How long any peer may stay silent: a bound, not a synchronisation (every
/// answer in a demo comes within milliseconds), so a lost answer fails the
/// demo instead of hanging it.
const IDLE: Duration = Duration::from_secs(10);
/// A backend that does not accept within this has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

// ANCHOR: hooks
/// Which backend gets a request: exercise 1.
pub trait Chooser: Send + Sync + 'static {
    /// An index into `up`, the names of the backends up now, in pool order
    /// (never empty). `key` is the request's `X-Session` header, or the
    /// client's IP address when it has none.
    fn choose(&self, key: &str, up: &[&str]) -> usize;
}

/// Whether a failed request may be sent again: exercise 2.
pub trait RetryPolicy: Send + Sync + 'static {
    /// Once per request from a client, before its first attempt.
    fn record_request(&self);
    /// A `GET` failed on its backend (no answer, or a `5xx`): may it go
    /// once more, to the next backend?
    fn may_retry(&self) -> bool;
}
// ANCHOR_END: hooks

/// Configure may for an exercise, first thing in `main` and in every test:
/// one worker, so each socket's event loop and the coroutines that wait on
/// it share one thread. With two, may 0.3.51's read races its own event
/// loop: `SocketRead::subscribe` stores the coroutine and then reads the
/// socket's event data again, while the other worker may already have run
/// the coroutine on, past the end of its request, and dropped the socket.
/// The exercise 2 demo (1,600 requests a run) met it in 6 of 160 runs with
/// two workers, four runs at a time on two busy cores: segmentation faults
/// in `subscribe`, heap corruption found later by `malloc`, a hang; with
/// one worker, in none of 160.
pub fn configure_may() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 1,
        stack_words: 0x1000,
    });
}

/// A backend of a demo, under the name the balancer knows it by.
pub struct Upstream {
    pub name: String,
    /// Stopped when dropped; its `stats` count the requests it read.
    pub backend: Backend,
}

/// Start one `may_patterns::backend` per configuration, on 127.0.0.1:0.
pub fn start_backends(configs: Vec<BackendConfig>) -> io::Result<Vec<Upstream>> {
    configs
        .into_iter()
        .map(|config| {
            let name = config.name.clone();
            Ok(Upstream {
                name,
                backend: Backend::start(config)?,
            })
        })
        .collect()
}

/// What a balancer forwards to: each backend's name and address.
struct Pool {
    names: Vec<String>,
    addrs: Vec<SocketAddr>,
}

/// One client connection, one request.
fn serve(
    conn: Conn,
    pool: &Pool,
    chooser: &dyn Chooser,
    retry: &dyn RetryPolicy,
) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    let client = conn.peer().ip();
    let (reader, mut out) = conn.split()?;
    let request = match http::read_request(&mut BufReader::new(reader), &Limits::default()) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(()),
        Err(e) => {
            return http::write_error(&mut out, 400, "Bad Request", &[], &e.to_string(), true)
        }
    };
    let key = match http::header(&request.headers, "x-session") {
        Some(session) => session.to_owned(),
        None => client.to_string(),
    };
    match forward(pool, chooser, retry, &key, &request) {
        Ok((by, answer)) => {
            let kind = http::header(&answer.headers, "content-type").unwrap_or("text/plain");
            let extra = [
                ("X-Backend", pool.names[by].as_str()),
                ("Connection", "close"),
            ];
            let (status, reason) = (answer.status, answer.reason.as_str());
            http::write_response(&mut out, status, reason, kind, &extra, &answer.body)
        }
        Err(e) => http::write_error(&mut out, 502, "Bad Gateway", &[], &e.to_string(), true),
    }
}

/// Send `request` to the backend the chooser picks for `key`, and once
/// more to the next one if it failed there and the policy allows it: the
/// index of the backend that answered, and its answer.
fn forward(
    pool: &Pool,
    chooser: &dyn Chooser,
    retry: &dyn RetryPolicy,
    key: &str,
    request: &Request,
) -> io::Result<(usize, Response)> {
    let up: Vec<&str> = pool.names.iter().map(String::as_str).collect();
    let first = chooser.choose(key, &up);
    let Some(&addr) = pool.addrs.get(first) else {
        let why = format!("the chooser chose backend {first} of {}", up.len());
        return Err(io::Error::other(why));
    };
    retry.record_request();
    let answer = attempt(addr, request);
    let failed = answer.as_ref().map_or(true, |answer| answer.status >= 500);
    if !(failed && request.method == "GET" && up.len() > 1 && retry.may_retry()) {
        return answer.map(|answer| (first, answer));
    }
    let next = (first + 1) % up.len();
    attempt(pool.addrs[next], request).map(|answer| (next, answer))
}

/// Send `request` to the backend at `addr`; its whole answer.
fn attempt(addr: SocketAddr, request: &Request) -> io::Result<Response> {
    // Not may's own connect, which races its event loop (the Pitfalls appendix).
    let mut stream = net::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IDLE))?;
    let (method, target) = (&request.method, &request.target);
    let extra = [("Connection", "close")];
    http::write_request(
        &mut stream,
        method,
        target,
        "backend",
        &extra,
        &request.body,
    )?;
    http::read_response(&mut BufReader::new(stream), &Limits::default())
}

/// A balancer on 127.0.0.1:0, on a thread of its own; stopped (and waited
/// for) when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<io::Result<server::Report>>>,
}

impl Balancer {
    /// Balance over `upstreams` (at least one), all up, in the order given.
    pub fn start(
        upstreams: &[&Upstream],
        chooser: impl Chooser,
        retry: impl RetryPolicy,
    ) -> io::Result<Balancer> {
        if upstreams.is_empty() {
            return Err(io::Error::new(ErrorKind::InvalidInput, "no backend"));
        }
        let pool = Arc::new(Pool {
            names: upstreams.iter().map(|u| u.name.clone()).collect(),
            addrs: upstreams.iter().map(|u| u.backend.addr).collect(),
        });
        let (chooser, retry) = (Arc::new(chooser), Arc::new(retry));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let handler = move |conn: Conn| match serve(conn, &pool, &*chooser, &*retry) {
            Err(e) if e.kind() != ErrorKind::BrokenPipe => {
                eprintln!("balancer: a connection failed: {e}")
            }
            _ => {}
        };
        let thread =
            std::thread::spawn(move || server::run(listener, &stop, Config::default(), handler));
        Ok(Balancer {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET /search?q=lamp` through the balancer at `addr`, with an
/// `X-Session` header if `session` is given; the whole answer.
pub fn get(addr: SocketAddr, session: Option<&str>) -> io::Result<Response> {
    let mut stream = net::connect(addr)?;
    stream.set_read_timeout(Some(IDLE))?;
    let extra: Vec<(&str, &str)> = session.map(|s| ("X-Session", s)).into_iter().collect();
    http::write_request(&mut stream, "GET", "/search?q=lamp", "lb", &extra, b"")?;
    http::read_response(&mut BufReader::new(stream), &Limits::default())
}

#[cfg(test)]
mod balancer_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Always the backend named `broken`; remembers the keys it was given.
    #[derive(Default)]
    struct Broken(Arc<Mutex<Vec<String>>>);

    impl Chooser for Broken {
        fn choose(&self, key: &str, up: &[&str]) -> usize {
            self.0.lock().unwrap().push(key.to_owned());
            up.iter().position(|name| *name == "broken").unwrap()
        }
    }

    /// Allows a retry when `allow` is set; counts requests and questions.
    #[derive(Default, Clone)]
    struct Counting {
        allow: Arc<AtomicBool>,
        requests: Arc<AtomicU64>,
        asked: Arc<AtomicU64>,
    }

    impl RetryPolicy for Counting {
        fn record_request(&self) {
            self.requests.fetch_add(1, Ordering::SeqCst);
        }
        fn may_retry(&self) -> bool {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.allow.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn a_failed_get_goes_to_the_next_backend_only_if_the_policy_allows() {
        configure_may();
        let mut broken = BackendConfig::new("broken", Duration::ZERO);
        broken.fail_fraction = 1.0;
        let ok = BackendConfig::new("ok", Duration::ZERO);
        let upstreams = start_backends(vec![broken, ok]).unwrap();
        let keys = Broken::default();
        let seen = keys.0.clone();
        let policy = Counting::default();
        let balancer = Balancer::start(&[&upstreams[0], &upstreams[1]], keys, policy.clone());
        let balancer = balancer.unwrap();

        let refused = get(balancer.addr, Some("s-1")).unwrap();
        assert_eq!(refused.status, 500);
        assert_eq!(http::header(&refused.headers, "x-backend"), Some("broken"));
        policy.allow.store(true, Ordering::SeqCst);
        let retried = get(balancer.addr, None).unwrap();
        assert_eq!(retried.status, 200);
        assert_eq!(http::header(&retried.headers, "x-backend"), Some("ok"));

        assert_eq!(*seen.lock().unwrap(), ["s-1", "127.0.0.1"]);
        let counts = |c: &AtomicU64| c.load(Ordering::SeqCst);
        assert_eq!((counts(&policy.requests), counts(&policy.asked)), (2, 2));
        let read = |u: &Upstream| u.backend.stats.requests.load(Ordering::SeqCst);
        assert_eq!((read(&upstreams[0]), read(&upstreams[1])), (2, 1));
    }
}
