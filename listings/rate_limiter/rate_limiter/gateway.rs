//! The gateway: an accept loop, one coroutine per client connection, and
//! for each request a key, a decision and either a 429 or the upstream's
//! answer, with the limit's fields on every response.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::WaitGroup;
use may_patterns::accept;
use may_patterns::alarm::Alarm;
use may_patterns::clock::Clock;
use may_patterns::http::{self, header, Limits, Request};
use may_patterns::ratelimit::{Algorithm, AnyAlgorithm, Decision, Limiter};
use may_patterns::shutdown::Shutdown;
use serde::Serialize;

use crate::deadlines::{self, Deadlines, Watch};
use crate::headers::{rate_limit_fields, whole_seconds_up};
use crate::keys::{key_of, Key, KeySpec};
use crate::upstream::{is_hop_by_hop, wants_close, Upstream};

/// How the gateway treats its clients.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub key: KeySpec,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
}

/// Everything the connection coroutines share.
pub struct Gateway<C: Clock> {
    limiter: Limiter<Key, AnyAlgorithm, C>,
    upstream: Upstream,
    config: GatewayConfig,
    /// Every open client connection, with its deadline.
    clients: Arc<Deadlines>,
    /// Wakes the leaky bucket's queued requests.
    alarm: Alarm,
    counters: Counters,
    started: Instant,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    queued: AtomicU64,
    rejected: AtomicU64,
    bad_requests: AtomicU64,
    upstream_errors: AtomicU64,
    connections: AtomicU64,
    refused_connections: AtomicU64,
    /// Nanoseconds from `started` to the first and the latest decision:
    /// the span the admitted count is to be measured against.
    first_decision: AtomicU64,
    last_decision: AtomicU64,
}

/// What a run did, printed at exit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub algorithm: &'static str,
    /// Requests the limiter let through (forwarded, or queued then forwarded).
    pub admitted: u64,
    /// Of those, how many waited in the leaky bucket's queue first.
    pub queued: u64,
    /// Answered 429.
    pub rejected: u64,
    /// Refused before the limiter: malformed, too large, too slow, no key.
    pub bad_requests: u64,
    /// Admitted but answered 502: the upstream could not be reached.
    pub upstream_errors: u64,
    pub connections: u64,
    pub refused_connections: u64,
    pub upstream_connects: u64,
    pub upstream_reused: u64,
    /// Client connections closed at their idle or request deadline, and
    /// upstream exchanges cut at theirs.
    pub client_timeouts: u64,
    pub upstream_timeouts: u64,
    /// Keys the limiter holds now, and keys it evicted to stay under
    /// `--max-keys`.
    pub keys: usize,
    pub evicted: u64,
    /// Seconds from the first decision to the last one.
    pub decision_span_s: f64,
}

impl<C: Clock> Gateway<C> {
    /// Fails only if the alarm's thread cannot be started.
    pub fn new(
        limiter: Limiter<Key, AnyAlgorithm, C>,
        upstream: Upstream,
        config: GatewayConfig,
    ) -> io::Result<Self> {
        Ok(Gateway {
            limiter,
            upstream,
            config,
            clients: Deadlines::new(),
            alarm: Alarm::new()?,
            counters: Counters::default(),
            started: Instant::now(),
        })
    }

    pub fn summary(&self) -> Summary {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let span = load(&c.last_decision).saturating_sub(load(&c.first_decision));
        let pool = &self.upstream.stats;
        Summary {
            algorithm: self.limiter.algorithm().name(),
            admitted: load(&c.admitted),
            queued: load(&c.queued),
            rejected: load(&c.rejected),
            bad_requests: load(&c.bad_requests),
            upstream_errors: load(&c.upstream_errors),
            connections: load(&c.connections),
            refused_connections: load(&c.refused_connections),
            upstream_connects: load(&pool.connects),
            upstream_reused: load(&pool.reused),
            client_timeouts: load(&self.clients.expired),
            upstream_timeouts: load(&self.upstream.deadlines.expired),
            keys: self.limiter.keys(),
            evicted: self.limiter.evicted(),
            decision_span_s: Duration::from_nanos(span).as_secs_f64(),
        }
    }

    fn note_decision(&self) {
        let now = (self.started.elapsed().as_nanos() as u64).max(1);
        let c = &self.counters;
        let _ = c
            .first_decision
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        c.last_decision.fetch_max(now, Ordering::Relaxed);
    }
}

// ANCHOR: run
/// Serve on `listener` until `shutdown`: accept, cap the connections, one
/// coroutine each. On shutdown, close every client socket, wait for their
/// coroutines, and return what happened.
pub fn run<C: Clock>(
    listener: TcpListener,
    shutdown: Shutdown,
    gateway: Arc<Gateway<C>>,
) -> io::Result<Summary> {
    let waker = accept::wake_on_shutdown(&listener, &shutdown)?;
    let tables = vec![gateway.clients.clone(), gateway.upstream.deadlines.clone()];
    let sweeper = deadlines::sweeper(tables, shutdown.clone())?;
    let connections = WaitGroup::new();
    let mut pause = Backoff::default();
    let result = loop {
        let accepted = listener.accept();
        if shutdown.is_triggered() {
            break Ok(());
        }
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) if Backoff::passes(&e) => {
                pause.wait(&e, &shutdown);
                continue;
            }
            Err(e) => break Err(e),
        };
        pause.reset();
        let counters = &gateway.counters;
        if gateway.clients.len() >= gateway.config.max_connections {
            counters.refused_connections.fetch_add(1, Ordering::Relaxed);
            // A fresh socket's send buffer takes this without blocking.
            let mut stream = stream;
            let _ = busy().write(&mut stream, true);
            continue;
        }
        let Ok(watch) = gateway.clients.watch(&stream) else {
            continue; // no descriptor left for the watch: drop the client
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let (gateway, member) = (gateway.clone(), connections.clone());
        go!(move || {
            let _ = serve_connection(stream, watch, peer.ip(), &gateway);
            drop(member);
        });
    };
    gateway.clients.close_all();
    gateway.upstream.deadlines.close_all();
    connections.wait();
    let _ = sweeper.join();
    waker.finish();
    result.map(|()| gateway.summary())
}
// ANCHOR_END: run

// ANCHOR: connection
/// One client connection: requests one after another (keep-alive) until
/// the client closes, goes idle, asks to close, or sends something we
/// cannot read. `watch` is its deadline (see `deadlines`).
fn serve_connection<C: Clock>(
    stream: TcpStream,
    watch: Watch,
    peer: IpAddr,
    gateway: &Gateway<C>,
) -> io::Result<()> {
    let config = &gateway.config;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        // Between requests a client may stay quiet for the idle timeout...
        watch.expire_in(config.idle_timeout);
        if reader.fill_buf()?.is_empty() {
            return Ok(()); // closed between requests, or idle too long
        }
        // ...but once it starts one, the whole request must arrive in time.
        watch.expire_in(config.header_timeout);
        let request = match http::read_request(&mut reader, &Limits::default()) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) => {
                let refused = match watch.expired() {
                    true => Some(too_slow()),
                    false => refusal(&e),
                };
                if let Some(reply) = refused {
                    watch.expire_in(config.idle_timeout); // for the write
                    gateway
                        .counters
                        .bad_requests
                        .fetch_add(1, Ordering::Relaxed);
                    reply.write(reader.get_mut(), true)?;
                }
                return Ok(()); // the rest of the stream cannot be trusted
            }
        };
        // Waiting in the queue or for the upstream is not the client's delay.
        watch.clear();
        let close = wants_close(&request.headers);
        let reply = gateway.answer(&request, peer);
        watch.expire_in(config.idle_timeout); // a client that does not read
        reply.write(reader.get_mut(), close)?;
        if close {
            return Ok(());
        }
    }
}

fn too_slow() -> Reply {
    let why = "the request did not arrive in time\n".to_owned();
    Reply::text(408, "Request Timeout", why, vec![])
}

/// The answer to a request that could not be read, if the client is still
/// there to read one.
fn refusal(e: &io::Error) -> Option<Reply> {
    let why = format!("{e}\n");
    match e.kind() {
        // http.rs reads bodies by Content-Length or chunked, nothing else.
        ErrorKind::InvalidData if why.contains("Transfer-Encoding") => Some(Reply::text(
            411,
            "Length Required",
            "send the body with a Content-Length or chunked: other transfer codings are not supported\n"
                .into(),
            vec![],
        )),
        ErrorKind::InvalidData if why.contains("over the limit") => {
            Some(Reply::text(413, "Content Too Large", why, vec![]))
        }
        // Malformed, or ended before it was whole: a client that shut only
        // its sending side (`nc` does at the end of its input) still reads,
        // and is told why; one that is gone just fails the write.
        ErrorKind::InvalidData | ErrorKind::UnexpectedEof => {
            Some(Reply::text(400, "Bad Request", why, vec![]))
        }
        _ => None, // reset, or another socket error: nobody to tell
    }
}
// ANCHOR_END: connection

// ANCHOR: answer
impl<C: Clock> Gateway<C> {
    /// Key, decide, then answer 429 or forward; the limit's fields go on
    /// every response the limiter decided.
    fn answer(&self, request: &Request, peer: IpAddr) -> Reply {
        if matches!(request.method.as_str(), "HEAD" | "CONNECT") {
            // A HEAD response announces a body it does not carry, which
            // http.rs cannot read; CONNECT would make this a tunnel.
            self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            let why = format!("{} is not forwarded by this gateway\n", request.method);
            return Reply::text(501, "Not Implemented", why, vec![]);
        }
        let key = match key_of(&self.config.key, peer, &request.headers) {
            Ok(key) => key,
            Err(why) => {
                self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                return Reply::text(400, "Bad Request", format!("{why}\n"), vec![]);
            }
        };
        let decision = self.limiter.check(&key, 1);
        self.note_decision();
        let fields = rate_limit_fields(&self.limiter.algorithm().quota(), &decision);
        match decision {
            Decision::Denied { retry_after, .. } => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                let why = format!(
                    "rate limit exceeded for {key}: retry after {}s\n",
                    whole_seconds_up(retry_after)
                );
                Reply::text(429, "Too Many Requests", why, fields)
            }
            Decision::Queued { wait, .. } => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                // Smoothing: hold the request for its place in the queue.
                // At high rates the wait is a few milliseconds, where may's
                // own sleep can crash under load (`may_patterns::alarm`
                // says why): the alarm's thread wakes this coroutine.
                if !wait.is_zero() {
                    self.alarm.sleep(wait);
                }
                self.forward(request, peer, fields)
            }
            Decision::Allowed { .. } => self.forward(request, peer, fields),
        }
    }

    fn forward(
        &self,
        request: &Request,
        peer: IpAddr,
        fields: Vec<(&'static str, String)>,
    ) -> Reply {
        self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        match self.upstream.forward(request, peer) {
            Ok(response) => {
                let content_type = header(&response.headers, "content-type")
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                // The upstream's own limit fields would contradict ours.
                let mut headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .filter(|(name, _)| {
                        let ours = name.to_ascii_lowercase();
                        !is_hop_by_hop(name, &response.headers)
                            && ours != "content-type"
                            && ours != "retry-after"
                            && !ours.starts_with("ratelimit")
                    })
                    .cloned()
                    .collect();
                headers.extend(fields.into_iter().map(|(n, v)| (n.to_owned(), v)));
                Reply {
                    status: response.status,
                    reason: response.reason,
                    content_type,
                    headers,
                    body: response.body,
                }
            }
            Err(failure) => {
                self.counters
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                let why = format!("{}\n", failure.reason);
                match failure.timed_out {
                    true => Reply::text(504, "Gateway Timeout", why, fields),
                    false => Reply::text(502, "Bad Gateway", why, fields),
                }
            }
        }
    }
}
// ANCHOR_END: answer

/// A response on its way to the client.
struct Reply {
    status: u16,
    reason: String,
    content_type: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, reason: &str, body: String, fields: Vec<(&'static str, String)>) -> Reply {
        Reply {
            status,
            reason: reason.to_owned(),
            content_type: "text/plain".to_owned(),
            headers: fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
            body: body.into_bytes(),
        }
    }

    fn write(&self, out: &mut TcpStream, close: bool) -> io::Result<()> {
        let mut extra: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if close {
            extra.push(("Connection", "close"));
        }
        // Head and body into one buffer, then one write: `write_response`
        // writes them separately, two system calls on a bare socket.
        let mut wire = Vec::with_capacity(256 + self.body.len());
        http::write_response(
            &mut wire,
            self.status,
            &self.reason,
            &self.content_type,
            &extra,
            &self.body,
        )?;
        out.write_all(&wire)
    }
}

fn busy() -> Reply {
    Reply::text(
        503,
        "Service Unavailable",
        "too many connections\n".into(),
        vec![],
    )
}

/// Pauses between accepts that failed for want of a descriptor or memory:
/// retrying at once would spin a core (the echo server's back-off).
#[derive(Default)]
struct Backoff {
    pause: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// EMFILE, ENFILE, ENOBUFS (Linux numbers) or ENOMEM: these pass.
    fn passes(e: &io::Error) -> bool {
        e.kind() == ErrorKind::OutOfMemory || matches!(e.raw_os_error(), Some(24 | 23 | 105))
    }

    fn wait(&mut self, e: &io::Error, shutdown: &Shutdown) {
        let pause = match self.pause {
            None => {
                eprintln!("rate_limiter: cannot accept a connection: {e}; retrying with pauses");
                Self::FIRST
            }
            Some(last) => (last * 2).min(Self::MAX),
        };
        self.pause = Some(pause);
        shutdown.wait_timeout(pause);
    }

    fn reset(&mut self) {
        self.pause = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::backend::{Backend, BackendConfig};
    use may_patterns::clock::ManualClock;
    use may_patterns::ratelimit::{AlgorithmKind, Quota};
    use may_patterns::runtime::configure_for_tests;

    /// A gateway on a manual clock (GCRA, 1 request per 2 s, burst 1) in
    /// front of a backend; `run` on a thread.
    fn start(
        clock: ManualClock,
    ) -> (
        std::net::SocketAddr,
        Shutdown,
        std::thread::JoinHandle<Summary>,
        Backend,
    ) {
        configure_for_tests();
        let backend = Backend::start(BackendConfig::new("b", Duration::ZERO)).unwrap();
        let quota = Quota::new(1, Duration::from_secs(2), 1).unwrap();
        let limiter = Limiter::with_clock(AnyAlgorithm::new(AlgorithmKind::Gcra, quota), 10, clock);
        let config = GatewayConfig {
            key: KeySpec::Ip,
            max_connections: 8,
            idle_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        };
        let upstream = Upstream::new(backend.addr, Duration::from_secs(5), 4);
        let gateway = Arc::new(Gateway::new(limiter, upstream, config).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let server = std::thread::spawn(move || run(listener, stop, gateway).unwrap());
        (addr, shutdown, server, backend)
    }

    #[test]
    fn retry_after_is_exact_on_a_manual_clock() {
        let clock = ManualClock::new();
        let (addr, shutdown, server, _backend) = start(clock.clone());
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut replies = BufReader::new(client.try_clone().unwrap());
        let mut ask = || {
            client
                .write_all(b"GET /search?q=x HTTP/1.1\r\nHost: g\r\n\r\n")
                .unwrap();
            let r = http::read_response(&mut replies, &Limits::default()).unwrap();
            let retry_after = header(&r.headers, "retry-after").map(str::to_owned);
            (r.status, retry_after)
        };
        assert_eq!(ask(), (200, None));
        assert_eq!(ask(), (429, Some("2".to_owned())));
        clock.advance(Duration::from_millis(1_999));
        assert_eq!(ask(), (429, Some("1".to_owned())), "1 ms early");
        clock.advance(Duration::from_millis(1));
        assert_eq!(ask(), (200, None), "exactly on time");
        drop(client);
        shutdown.trigger();
        let summary = server.join().unwrap();
        assert_eq!(
            (summary.admitted, summary.rejected, summary.keys),
            (2, 2, 1)
        );
    }
}
