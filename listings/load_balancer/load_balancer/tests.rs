//! The balancer on loopback, in front of the crate's scripted backends,
//! driven by a plain client on the test thread (not a coroutine, so std
//! sockets are fine there).

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use may_patterns::backend::{Backend, BackendConfig as Scripted};
use may_patterns::balance::BackendConfig;
use std::sync::atomic::AtomicU64;

use may_patterns::http::{
    header, read_request, read_request_head, read_response, write_request, write_response, Limits,
    Response,
};
use may_patterns::runtime::configure_for_tests;

use super::*;

/// How long a test waits for a state before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The scripted backend answers searches only (400 otherwise).
const SEARCH: &str = "/search?q=lamp";

/// How a test's balancer differs from the usual one.
struct Options {
    retries: u32,
    check_interval: Duration,
    check_timeout: Duration,
    response_timeout: Duration,
    header_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 1,
            check_interval: Duration::from_millis(100),
            check_timeout: Duration::from_millis(100),
            response_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
        }
    }
}

struct Balancer {
    addr: SocketAddr,
    settings: Arc<Settings>,
    shutdown: Shutdown,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<io::Result<Report>>>,
}

impl Balancer {
    fn start(backends: &[SocketAddr], retries: u32) -> Balancer {
        let options = Options {
            retries,
            ..Options::default()
        };
        Balancer::start_with(backends, options)
    }

    fn start_with(backends: &[SocketAddr], options: Options) -> Balancer {
        configure_for_tests();
        let pool = Arc::new(Pool::new(
            backends.iter().map(|&a| BackendConfig::new(a)).collect(),
            PoolConfig::default(), // rise 2, fall 3, round-robin
            Arc::new(MonotonicClock::new()),
        ));
        let settings = Arc::new(Settings {
            upstreams: Upstreams::new(pool.addrs()),
            pool,
            retries: options.retries,
            connect_timeout: Duration::from_secs(2),
            response_timeout: options.response_timeout,
            idle_timeout: Duration::from_secs(5),
            header_timeout: options.header_timeout,
            stats_path: "/_lb/stats".to_owned(),
        });
        let check = CheckConfig {
            interval: options.check_interval,
            timeout: options.check_timeout,
            path: SEARCH.to_owned(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stats) = (Shutdown::new(), Arc::new(Stats::default()));
        let thread = {
            let (shutdown, stats) = (shutdown.clone(), stats.clone());
            let settings = settings.clone();
            std::thread::spawn(move || run(listener, &shutdown, 64, check, settings, stats))
        };
        Balancer {
            addr,
            settings,
            shutdown,
            stats,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn stop(mut self) -> Report {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

/// One keep-alive client connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn get(&mut self, target: &str) -> Response {
        write_request(&mut self.writer, "GET", target, "lb.test", &[], b"").unwrap();
        read_response(&mut self.reader, &Limits::default()).unwrap()
    }

    fn send(&mut self, text: &str) -> Response {
        std::io::Write::write_all(&mut self.writer, text.as_bytes()).unwrap();
        read_response(&mut self.reader, &Limits::default()).unwrap()
    }
}

/// Which scripted backend answered: its name is the shop in every offer.
fn shop(response: &Response) -> String {
    let body = String::from_utf8_lossy(&response.body);
    let at = body.find("\"shop\":\"").expect("an offer") + 8;
    body[at..].split('"').next().unwrap().to_owned()
}

/// `addr`'s entry in the stats page.
fn backend_stats(client: &mut Client, addr: SocketAddr) -> serde_json::Value {
    let stats = client.get("/_lb/stats");
    assert_eq!(stats.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .unwrap();
    entry.clone()
}

fn backend_state(client: &mut Client, addr: SocketAddr) -> String {
    backend_stats(client, addr)["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn requests_go_round_robin_and_a_stopped_backend_costs_no_get() {
    let a = Backend::start(Scripted::new("a", Duration::ZERO)).unwrap();
    let b = Backend::start(Scripted::new("b", Duration::ZERO)).unwrap();
    let b_addr = b.addr;
    let lb = Balancer::start(&[a.addr, b.addr], 1);
    let mut client = lb.connect();
    let shops: Vec<String> = (0..10).map(|_| shop(&client.get(SEARCH))).collect();
    let expected: Vec<&str> = ["a", "b"].repeat(5);
    assert_eq!(shops, expected, "strict turns on one keep-alive connection");

    drop(b); // its port now refuses connections
    let started = Instant::now();
    for i in 0..2 {
        let response = client.get(SEARCH);
        assert_eq!(response.status, 200, "GET {i} after the stop");
        assert_eq!(shop(&response), "a");
        assert_eq!(header(&response.headers, "via"), Some("1.1 load_balancer"));
    }
    assert_eq!(
        lb.stats.retried.load(Ordering::Relaxed),
        1,
        "b's turn went to a"
    );
    // No traffic now: the checker's failures complete the fall of 3.
    while backend_state(&mut client, b_addr) != "down" {
        assert!(started.elapsed() < PATIENCE, "b never went down");
        std::thread::sleep(Duration::from_millis(20));
    }
    let b_stats = backend_stats(&mut client, b_addr);
    assert_eq!(b_stats["errors"], 1, "one live request failed on b");
    assert!(b_stats["checks_failed"].as_u64().unwrap() >= 2, "{b_stats}");
    for _ in 0..20 {
        assert_eq!(shop(&client.get(SEARCH)), "a");
    }
    assert_eq!(
        lb.stats.retried.load(Ordering::Relaxed),
        1,
        "b is no longer picked"
    );
    assert_eq!(lb.stats.failed.load(Ordering::Relaxed), 0);
    let report = lb.stop();
    assert_eq!(report.accepted, 1);
}

#[test]
fn no_backend_up_is_503_and_a_retry_is_not_repeated_on_the_same_backend() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lb = Balancer::start(&[closed], 3);
    let mut client = lb.connect();
    // Up until checks or live traffic say otherwise: the connect fails and
    // there is no other backend to retry on.
    let first = client.get(SEARCH);
    assert_eq!(
        first.status,
        502,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(lb.stats.retried.load(Ordering::Relaxed), 0);
    let started = Instant::now();
    loop {
        let response = client.get(SEARCH);
        if response.status == 503 {
            assert_eq!(response.body, b"no backend is up\n");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "never marked down");
    }
    lb.stop();
}

#[test]
fn malformed_requests_are_refused_with_400() {
    let a = Backend::start(Scripted::new("a", Duration::ZERO)).unwrap();
    let lb = Balancer::start(&[a.addr], 1);
    let mut client = lb.connect();
    let no_host = client.send("GET / HTTP/1.1\r\n\r\n");
    assert_eq!(no_host.status, 400);
    let mut client = lb.connect();
    let smuggled = client.send(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(smuggled.status, 400);
    assert_eq!(header(&smuggled.headers, "connection"), Some("close"));
    assert_eq!(lb.stats.bad_requests.load(Ordering::Relaxed), 2);
    let mut client = lb.connect();
    let picks = &backend_stats(&mut client, a.addr)["picks"];
    assert_eq!(picks, 0, "nothing forwarded");
    lb.stop();
}

#[test]
fn drain_by_post_stops_new_requests_to_a_backend() {
    let a = Backend::start(Scripted::new("a", Duration::ZERO)).unwrap();
    let b = Backend::start(Scripted::new("b", Duration::ZERO)).unwrap();
    let lb = Balancer::start(&[a.addr, b.addr], 1);
    let mut client = lb.connect();
    let drain = format!(
        "POST /_lb/drain?backend={} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b.addr
    );
    let answer = client.send(&drain);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    for _ in 0..4 {
        assert_eq!(shop(&client.get(SEARCH)), "a");
    }
    assert_eq!(backend_state(&mut client, b.addr), "draining");
    assert_eq!(client.get("/_lb/drain?backend=x").status, 405, "POST only");
    lb.stop();
}

/// How an [`Origin`] treats a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answer `/chunked` with a chunked body, anything else with the
    /// request's body (`empty` if none); keep the connection.
    Echo,
    /// Read the request, then close the connection without a word.
    Reset,
    /// Answer 413 after the head, without reading the body, and close.
    EarlyAnswer,
}

/// An origin that keeps connections alive (the scripted backend closes
/// after each answer), or resets them. `best` is the most requests one
/// of its connections has served.
struct Origin {
    addr: SocketAddr,
    best: Arc<AtomicU64>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<io::Result<Report>>>,
}

impl Origin {
    fn start(mode: Mode) -> Origin {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, best) = (Shutdown::new(), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (shutdown, best) = (shutdown.clone(), best.clone());
            std::thread::spawn(move || {
                server::run(
                    listener,
                    &shutdown,
                    server::Config::default(),
                    move |conn| {
                        let _ = Origin::serve(conn, mode, &best);
                    },
                )
            })
        };
        Origin {
            addr,
            best,
            shutdown,
            thread: Some(thread),
        }
    }

    fn serve(conn: server::Conn, mode: Mode, best: &AtomicU64) -> io::Result<()> {
        let mut reader = BufReader::new(conn);
        let mut served = 0;
        if mode == Mode::EarlyAnswer {
            if read_request_head(&mut reader, &Limits::default())?.is_some() {
                let body = b"too large\n";
                let close = [("Connection", "close")];
                write_response(
                    reader.get_mut(),
                    413,
                    "Content Too Large",
                    "text/plain",
                    &close,
                    body,
                )?;
            }
            return Ok(()); // closed with the body unread
        }
        while let Some(request) = read_request(&mut reader, &Limits::default())? {
            if mode == Mode::Reset {
                return Ok(()); // dropped: closed with no answer
            }
            // Counted before the answer, which the test waits for.
            if request.target != SEARCH {
                served += 1; // not a health check
                best.fetch_max(served, Ordering::SeqCst);
            }
            let out = reader.get_mut();
            if request.target == "/chunked" {
                let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                            5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
                std::io::Write::write_all(out, text.as_bytes())?;
            } else {
                let body = match request.body.is_empty() {
                    true => b"empty".to_vec(),
                    false => request.body.clone(),
                };
                write_response(out, 200, "OK", "text/plain", &[], &body)?;
            }
            if header(&request.headers, "connection") == Some("close") {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn backend_connections_are_kept_alive_between_requests() {
    let origin = Origin::start(Mode::Echo);
    let lb = Balancer::start(&[origin.addr], 1);
    let mut client = lb.connect();
    for _ in 0..10 {
        assert_eq!(client.get("/x").body, b"empty");
    }
    assert_eq!(
        origin.best.load(Ordering::SeqCst),
        10,
        "one backend connection"
    );
    // A second client reuses it once the first has given it back.
    let started = Instant::now();
    while lb.settings.upstreams.idle(origin.addr) != 1 {
        assert!(started.elapsed() < PATIENCE, "never given back");
        std::thread::yield_now();
    }
    let mut other = lb.connect();
    for _ in 0..5 {
        assert_eq!(other.get("/x").body, b"empty");
    }
    assert_eq!(
        origin.best.load(Ordering::SeqCst),
        15,
        "still one connection"
    );
    lb.stop();
}

#[test]
fn bodies_are_streamed_both_ways_and_reframed_for_each_client() {
    let origin = Origin::start(Mode::Echo);
    let lb = Balancer::start(&[origin.addr], 1);
    let mut client = lb.connect();
    let post = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let echoed = client.send(post);
    assert_eq!(
        (echoed.status, echoed.body.as_slice()),
        (200, &b"abcde"[..])
    );
    let chunked = client.get("/chunked");
    assert_eq!(chunked.body, b"hello world");
    assert_eq!(
        header(&chunked.headers, "transfer-encoding"),
        Some("chunked")
    );
    // An HTTP/1.0 client knows no chunks: the body comes raw, then a close.
    let mut old = lb.connect();
    let answer = old.send("GET /chunked HTTP/1.0\r\n\r\n");
    assert_eq!(answer.body, b"hello world");
    assert_eq!(header(&answer.headers, "connection"), Some("close"));
    assert_eq!(header(&answer.headers, "transfer-encoding"), None);
    lb.stop();
}

#[test]
fn a_reset_is_retried_for_a_get_but_not_for_a_post() {
    let (resetter, good) = (Origin::start(Mode::Reset), Origin::start(Mode::Echo));
    // Checks far apart: the resetter stays up (its first check fails; it
    // takes three failures in a row to go down).
    let options = Options {
        check_interval: Duration::from_secs(60),
        check_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let lb = Balancer::start_with(&[resetter.addr, good.addr], options);
    let mut client = lb.connect();
    let get = client.get("/x"); // the resetter's turn, then the good one's
    assert_eq!((get.status, get.body.as_slice()), (200, &b"empty"[..]));
    assert_eq!(lb.stats.retried.load(Ordering::Relaxed), 1);
    // The resetter's turn again.
    let post = client.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 502, "a POST may have been acted on: no retry");
    assert_eq!(
        post.body,
        b"the backend closed the connection before answering\n"
    );
    assert_eq!(lb.stats.retried.load(Ordering::Relaxed), 1);
    assert_eq!(lb.stats.failed.load(Ordering::Relaxed), 1);
    lb.stop();
}

#[test]
fn a_backend_silent_past_the_response_timeout_is_504_then_goes_down() {
    let mut silent = Scripted::new("silent", Duration::ZERO);
    silent.hang = true;
    let silent = Backend::start(silent).unwrap();
    let timeout = Duration::from_millis(300);
    let options = Options {
        check_interval: Duration::from_secs(60),
        check_timeout: timeout,
        response_timeout: timeout,
        ..Options::default()
    };
    let lb = Balancer::start_with(&[silent.addr], options);
    let mut client = lb.connect();
    let asked = Instant::now();
    let first = client.get(SEARCH);
    assert_eq!(first.status, 504);
    assert!(asked.elapsed() >= timeout, "{:?}", asked.elapsed());
    // Three timeouts in a row take it down: the first check's and two
    // more requests', or three requests' if the check lands late.
    let mut timeouts = 1;
    loop {
        match client.get(SEARCH).status {
            504 => timeouts += 1,
            503 => break,
            other => panic!("answered {other}"),
        }
        assert!(timeouts <= 3, "still up after three timeouts");
    }
    assert!(timeouts >= 2, "down after {timeouts} timeouts");
    lb.stop();
}

#[test]
fn an_answer_before_the_whole_body_is_relayed() {
    let origin = Origin::start(Mode::EarlyAnswer);
    let lb = Balancer::start(&[origin.addr], 1);
    let mut client = lb.connect();
    let body = vec![b'x'; 4 * 1024 * 1024]; // more than the socket buffers hold
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    std::io::Write::write_all(&mut client.writer, head.as_bytes()).unwrap();
    // The balancer stops reading the body if its writes to the backend
    // fail: the rest may be refused, which is no failure of this test.
    let _ = std::io::Write::write_all(&mut client.writer, &body);
    let answer = read_response(&mut client.reader, &Limits::default()).unwrap();
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (413, &b"too large\n"[..])
    );
    // Whether the backend's close cut our copy of the body short depends
    // on when its reset arrives; if it did not, the client's connection is
    // whole and carries another request.
    if header(&answer.headers, "connection") != Some("close") {
        let next = client.send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(next.status, 413, "the same origin answers again");
    }
    assert_eq!(lb.stats.failed.load(Ordering::Relaxed), 0);
    lb.stop();
}

#[test]
fn a_shutdown_ends_a_request_waiting_for_a_silent_backend_at_once() {
    let mut silent = Scripted::new("silent", Duration::ZERO);
    silent.hang = true;
    let silent = Backend::start(silent).unwrap();
    let options = Options {
        check_interval: Duration::from_secs(60),
        check_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let lb = Balancer::start_with(&[silent.addr], options);
    let mut client = lb.connect();
    let waiting = std::thread::spawn(move || {
        write_request(&mut client.writer, "GET", SEARCH, "x", &[], b"").unwrap();
        read_response(&mut client.reader, &Limits::default()).map(|r| r.status)
    });
    let started = Instant::now();
    while lb.settings.pool.stats()[0].in_flight == 0 {
        assert!(started.elapsed() < PATIENCE, "the request never left");
        std::thread::yield_now();
    }
    let asked = Instant::now();
    lb.stop();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    // The client's socket was shut: no answer, or a 502 that got out first.
    let answer = waiting.join().unwrap();
    assert!(!matches!(answer, Ok(200)), "{answer:?}");
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let a = Backend::start(Scripted::new("a", Duration::ZERO)).unwrap();
    let timeout = Duration::from_millis(300);
    let options = Options {
        header_timeout: timeout,
        ..Options::default()
    };
    let lb = Balancer::start_with(&[a.addr], options);
    let client = lb.connect();
    let started = Instant::now();
    let mut writer = client.writer;
    // Each byte comes well within the per-read timeout: only the deadline
    // on the head as a whole can end this (Slowloris).
    let trickle = std::thread::spawn(move || {
        let mut head = b"GET / HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        while started.elapsed() < PATIENCE {
            let byte = [*head.next().unwrap()];
            if std::io::Write::write_all(&mut writer, &byte).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut reader = client.reader;
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest); // EOF or reset
    let elapsed = started.elapsed();
    assert!(rest.is_empty(), "no answer, a close: {rest:?}");
    assert!(elapsed >= timeout, "{elapsed:?}");
    // The deadline is checked at each read, so it ends within a read more.
    assert!(elapsed < 4 * timeout, "{elapsed:?}");
    trickle.join().unwrap();
    lb.stop();
}

#[test]
fn a_client_over_the_connection_limit_is_told_which_limit() {
    let message = String::from_utf8(full_message(7)).unwrap();
    let (head, body) = message.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(body.contains("limit of 7") && body.contains("--max-connections"));
}
