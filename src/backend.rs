//! A scriptable HTTP backend for the book's clients, proxies and load
//! balancers: it answers `GET /search?q=WORD` with a small JSON list of
//! offers after a latency you choose, and can be slow, fail or hang on a
//! chosen share of requests.
//!
//! Behaviour is deterministic for a given seed: request number `n` (counted
//! per backend) is slow or failing according to a hash of `(seed, n)`, so a
//! test scripts "every backend answers in 5 ms, 10% of requests take 100 ms"
//! and gets the same requests slow on every run.
//!
//! While it "works" on a request, the backend waits on the client's socket,
//! and an [`Alarm`] shuts the socket's reading side when the delay is over
//! (a may socket timeout of a few milliseconds, once per request, races
//! under load: see [`alarm`](crate::alarm)). If the client closes the
//! connection first (a scatter-gather client cancelling a straggler), the
//! read returns end-of-file at once: the backend counts it in
//! [`BackendStats::client_gone`] and drops the connection, as a real server
//! would when its client goes away.
//!
//! A running backend can change how it behaves ([`Backend::set_behaviour`]):
//! a program scripting an outage turns a healthy backend slow, failing and
//! healthy again without restarting it, so its clients keep their address.

use std::io::{self, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::go;
use may::net::{TcpListener, TcpStream};

use crate::accept;
use crate::alarm::Alarm;
use crate::http::{self, Limits};
use crate::shutdown::Shutdown;

/// How a backend behaves.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Appears in every offer as the shop, and in log lines.
    pub name: String,
    /// The usual time to answer. Zero, or at least 1 ms.
    pub latency: Duration,
    /// Share of requests (0 to 1) that take `slow_latency` instead.
    pub slow_fraction: f64,
    pub slow_latency: Duration,
    /// Share of requests (0 to 1) answered with `500 Internal Server Error`.
    pub fail_fraction: f64,
    /// Never answer: wait until the client gives up (or a minute passes).
    pub hang: bool,
    /// If not empty, request `n` waits `script[n % script.len()]` instead
    /// of `latency` / `slow_latency`: "the first request is slow, the
    /// second fast", exactly.
    pub script: Vec<Duration>,
    pub seed: u64,
    /// Connections served at once; more get `503` at once.
    pub max_connections: usize,
}

impl BackendConfig {
    /// The part of this configuration that [`Backend::set_behaviour`] can
    /// change later.
    pub fn behaviour(&self) -> Behaviour {
        Behaviour {
            latency: self.latency,
            slow_fraction: self.slow_fraction,
            slow_latency: self.slow_latency,
            fail_fraction: self.fail_fraction,
            hang: self.hang,
        }
    }

    /// A backend that answers every request after `latency`.
    pub fn new(name: &str, latency: Duration) -> BackendConfig {
        BackendConfig {
            name: name.to_owned(),
            latency,
            slow_fraction: 0.0,
            slow_latency: latency,
            fail_fraction: 0.0,
            hang: false,
            script: Vec::new(),
            seed: 1,
            max_connections: 1024,
        }
    }
}

/// How a backend treats the next requests: the fields of [`BackendConfig`]
/// of the same names, which a running backend can change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    pub latency: Duration,
    pub slow_fraction: f64,
    pub slow_latency: Duration,
    pub fail_fraction: f64,
    pub hang: bool,
}

/// The behaviour a backend reads once per request, changeable while it runs.
///
/// A std `RwLock` is enough: it is held only to copy a few words in or out,
/// never across a park, so it cannot block a may worker for longer than that.
#[derive(Debug)]
struct Switch(RwLock<Behaviour>);

impl Switch {
    fn get(&self) -> Behaviour {
        // Nothing panics while holding it; a poisoned lock still holds a value.
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, behaviour: Behaviour) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = behaviour;
    }
}

/// What a backend has done so far; shared with whoever started it.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests read completely.
    pub requests: AtomicU64,
    /// Answered `200`.
    pub answered: AtomicU64,
    /// Answered `500` (scripted failure) or `400` (bad request).
    pub failed: AtomicU64,
    /// The client closed the connection before its answer was ready.
    pub client_gone: AtomicU64,
    /// Connections open right now.
    pub open: AtomicUsize,
}

/// A running backend on 127.0.0.1; stopped when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    switch: Arc<Switch>,
    shutdown: Shutdown,
    accept: Option<JoinHandle<io::Result<()>>>,
}

impl Backend {
    /// Bind 127.0.0.1 on an ephemeral port and serve in coroutines.
    pub fn start(config: BackendConfig) -> io::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(BackendStats::default());
        let shutdown = Shutdown::new();
        let switch = Arc::new(Switch(RwLock::new(config.behaviour())));
        let accept = {
            let (stats, shutdown, switch) = (stats.clone(), shutdown.clone(), switch.clone());
            go!(move || serve_switched(listener, shutdown, config, switch, stats))
        };
        Ok(Backend {
            addr,
            stats,
            switch,
            shutdown,
            accept: Some(accept),
        })
    }

    /// Treat every request read from now on this way. A request already
    /// being worked on keeps the behaviour it started with (a hanging one
    /// hangs until its client gives up). A `script` in the configuration
    /// still decides the delays, as at start.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.switch.set(behaviour);
    }

    /// How the backend treats requests now.
    pub fn behaviour(&self) -> Behaviour {
        self.switch.get()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.trigger(); // `serve`'s accept waker wakes its loop
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Accept connections until `shutdown`; one coroutine per connection.
pub fn serve(
    listener: TcpListener,
    shutdown: Shutdown,
    config: BackendConfig,
    stats: Arc<BackendStats>,
) -> io::Result<()> {
    let switch = Arc::new(Switch(RwLock::new(config.behaviour())));
    serve_switched(listener, shutdown, config, switch, stats)
}

/// [`serve`], reading the behaviour from `switch` for every request.
fn serve_switched(
    listener: TcpListener,
    shutdown: Shutdown,
    config: BackendConfig,
    switch: Arc<Switch>,
    stats: Arc<BackendStats>,
) -> io::Result<()> {
    let config = Arc::new(config);
    let counter = Arc::new(AtomicU64::new(0));
    // Ends every request's delay; its thread ends with the last connection.
    let alarm = Arc::new(Alarm::new()?);
    // Joined when this function returns, however it returns.
    let _waker = accept::wake_on_shutdown(&listener, &shutdown)?;
    loop {
        let (stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        };
        if shutdown.is_triggered() {
            return Ok(());
        }
        let open = stats.open.fetch_add(1, Ordering::SeqCst) + 1;
        let (config, stats, counter) = (config.clone(), stats.clone(), counter.clone());
        let (switch, alarm) = (switch.clone(), alarm.clone());
        go!(move || {
            if open > config.max_connections {
                let mut stream = stream;
                let _ =
                    http::write_response(&mut stream, 503, "Busy", "text/plain", &[], b"busy\n");
            } else {
                let _ = handle(stream, &config, &switch, &alarm, &stats, &counter);
            }
            stats.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A number in [0, 1) from `(seed, n, salt)` (SplitMix64).
fn unit(seed: u64, n: u64, salt: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

/// One connection, one request.
fn handle(
    stream: TcpStream,
    config: &BackendConfig,
    switch: &Switch,
    alarm: &Alarm,
    stats: &BackendStats,
    counter: &AtomicU64,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?; // idle clients go
    let mut reader = BufReader::new(stream);
    let request = match http::read_request(&mut reader, &Limits::default()) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(()), // closed before sending anything
        // An oversized, malformed or unfinished head: say what was wrong,
        // so a person with curl or nc sees why, then close.
        Err(e) if matches!(e.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) => {
            stats.failed.fetch_add(1, Ordering::SeqCst);
            let body = format!("{e}\n");
            let out = reader.get_mut();
            return http::write_response(
                out,
                400,
                "Bad Request",
                "text/plain",
                &[],
                body.as_bytes(),
            );
        }
        Err(e) => return Err(e),
    };
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let Some(query) = search_query(&request.target) else {
        stats.failed.fetch_add(1, Ordering::SeqCst);
        let body = b"expected GET /search?q=WORD (letters, digits, - or _)\n";
        return http::write_response(
            reader.get_mut(),
            400,
            "Bad Request",
            "text/plain",
            &[],
            body,
        );
    };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let behaviour = switch.get(); // a copy: no lock held while we wait below
    let delay = if behaviour.hang {
        Duration::from_secs(60)
    } else if !config.script.is_empty() {
        config.script[n as usize % config.script.len()]
    } else if unit(config.seed, n, 1) < behaviour.slow_fraction {
        behaviour.slow_latency
    } else {
        behaviour.latency
    };
    if !delay.is_zero() && client_left_within(reader.get_mut(), delay, alarm)? {
        stats.client_gone.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    let stream = reader.get_mut();
    if unit(config.seed, n, 2) < behaviour.fail_fraction {
        stats.failed.fetch_add(1, Ordering::SeqCst);
        let body = format!("{} failed on purpose\n", config.name);
        return http::write_response(
            stream,
            500,
            "Internal Server Error",
            "text/plain",
            &[],
            body.as_bytes(),
        );
    }
    let body = offers_json(&config.name, query);
    http::write_response(stream, 200, "OK", "application/json", &[], body.as_bytes())?;
    stats.answered.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Wait `delay` on the client's socket: `true` if the client closed it
/// first. (Bytes the client sends meanwhile are ignored.) The read has no
/// timeout, so no may timer: `alarm` shuts the reading side when the delay
/// is over, and the read's end-of-file is then the alarm's, not the client's.
fn client_left_within(stream: &mut TcpStream, delay: Duration, alarm: &Alarm) -> io::Result<bool> {
    stream.set_read_timeout(None)?;
    let ring = alarm.shutdown_read_at(stream, Instant::now() + delay)?;
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(!ring.fired()),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// `WORD` from `/search?q=WORD`, if it is one of letters, digits, `-`, `_`.
fn search_query(target: &str) -> Option<&str> {
    let q = target.strip_prefix("/search?q=")?;
    let ok = !q.is_empty()
        && q.len() <= 64
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(q)
}

/// Offers for `query`: each backend carries 3 of 5 products (which ones
/// depends on its name), at its own price, so backends overlap and a merge
/// has duplicates to remove.
pub fn offers_json(shop: &str, query: &str) -> String {
    let shop_hash = shop
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let offers: Vec<String> = (0..5u64)
        .filter(|k| (shop_hash + k) % 5 < 3)
        .map(|k| {
            let price = 1000 + (shop_hash.wrapping_mul(k + 1) % 500);
            format!(r#"{{"sku":"{query}-{k}","shop":"{shop}","price_cents":{price}}}"#)
        })
        .collect();
    format!(r#"{{"backend":"{shop}","offers":[{}]}}"#, offers.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::configure_for_tests;
    use std::io::Write;
    use std::time::Instant;

    fn get(addr: SocketAddr, target: &str) -> http::Response {
        let mut stream = crate::net::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        http::write_request(&mut stream, "GET", target, "backend", &[], b"").unwrap();
        http::read_response(&mut BufReader::new(stream), &Limits::default()).unwrap()
    }

    #[test]
    fn it_answers_a_search_after_its_latency() {
        configure_for_tests();
        let backend =
            Backend::start(BackendConfig::new("alpha", Duration::from_millis(20))).unwrap();
        let started = Instant::now();
        let r = go!(move || get(backend.addr, "/search?q=lamp").body)
            .join()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(20));
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with(r#"{"backend":"alpha","offers":[{"sku":"lamp-"#),
            "{text}"
        );
    }

    #[test]
    fn a_bad_query_gets_400_and_the_share_of_failures_is_as_scripted() {
        configure_for_tests();
        let mut config = BackendConfig::new("beta", Duration::ZERO);
        config.fail_fraction = 0.5;
        let backend = Backend::start(config).unwrap();
        let addr = backend.addr;
        let statuses = go!(move || {
            let bad = get(addr, "/search?q=a%20b").status;
            let runs: Vec<u16> = (0..200).map(|_| get(addr, "/search?q=x").status).collect();
            (bad, runs)
        })
        .join()
        .unwrap();
        assert_eq!(statuses.0, 400);
        let failed = statuses.1.iter().filter(|&&s| s == 500).count();
        assert!((70..130).contains(&failed), "about half of 200: {failed}");
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 201);
    }

    #[test]
    fn an_oversized_or_unfinished_request_head_gets_400_with_the_reason() {
        configure_for_tests();
        let backend = Backend::start(BackendConfig::new("delta", Duration::ZERO)).unwrap();
        let answer = |request: Vec<u8>| {
            let mut client = std::net::TcpStream::connect(backend.addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = client.write_all(&request);
            let _ = client.shutdown(std::net::Shutdown::Write);
            let mut text = String::new();
            let _ = client.read_to_string(&mut text);
            text
        };
        let mut huge = b"GET /search?q=x HTTP/1.1\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 70_000));
        huge.extend(b"\r\n\r\n");
        let oversized = answer(huge);
        assert!(oversized.starts_with("HTTP/1.1 400"), "{oversized}");
        assert!(
            oversized.contains("message head longer than"),
            "{oversized}"
        );
        let unfinished = answer(b"GET /search?q=x HTTP/1.1\r\n".to_vec());
        assert!(unfinished.starts_with("HTTP/1.1 400"), "{unfinished}");
        assert!(
            unfinished.contains("middle of a message head"),
            "{unfinished}"
        );
        assert_eq!(backend.stats.failed.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_client_that_leaves_is_noticed_at_once() {
        configure_for_tests();
        let mut config = BackendConfig::new("gamma", Duration::from_millis(5));
        config.hang = true;
        let backend = Backend::start(config).unwrap();
        let mut client = std::net::TcpStream::connect(backend.addr).unwrap();
        client
            .write_all(b"GET /search?q=x HTTP/1.1\r\n\r\n")
            .unwrap();
        while backend.stats.requests.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(client);
        let started = Instant::now();
        while backend.stats.client_gone.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the close went unnoticed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        while backend.stats.open.load(Ordering::SeqCst) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the connection stayed open"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_running_backend_changes_behaviour_for_the_next_requests() {
        configure_for_tests();
        let backend = Backend::start(BackendConfig::new("eps", Duration::ZERO)).unwrap();
        let addr = backend.addr;
        let status = move || go!(move || get(addr, "/search?q=x").status).join().unwrap();
        assert_eq!(status(), 200);
        let healthy = backend.behaviour();
        backend.set_behaviour(Behaviour {
            fail_fraction: 1.0,
            ..healthy
        });
        assert_eq!(status(), 500);
        backend.set_behaviour(Behaviour {
            latency: Duration::from_millis(30),
            ..healthy
        });
        let started = Instant::now();
        assert_eq!(status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(30));
        backend.set_behaviour(healthy);
        assert_eq!(status(), 200);
        // Both counted before the answer is written (`answered` is counted
        // after, so a client can read its answer first).
        assert_eq!(backend.stats.failed.load(Ordering::SeqCst), 1);
        assert_eq!(backend.stats.requests.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn backends_overlap_but_differ() {
        let a = offers_json("alpha", "q");
        let b = offers_json("beta", "q");
        assert_ne!(a, b);
        let skus = |s: &str| {
            s.split("\"sku\":\"")
                .skip(1)
                .map(|p| p.split('"').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(skus(&a).len(), 3);
        assert!(skus(&a).iter().any(|s| skus(&b).contains(s)), "{a} / {b}");
    }
}
