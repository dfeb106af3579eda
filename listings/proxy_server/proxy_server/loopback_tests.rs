//! The whole path on loopback: a client on a test thread, the proxy's
//! handler on `server::run`, and origins on `server::run` that echo what
//! they got, drop a pooled connection, or never answer.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream as StdStream;
use std::time::Duration;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::http::{header, read_request, read_response, write_response};
use may_patterns::http::{ChunkedWriter, Limits};
use may_patterns::runtime::configure_for_tests;
use may_patterns::server::{self, Conn, Report};
use may_patterns::shutdown::Shutdown;

use crate::access_log;
use crate::auth::Users;
use crate::cli::Args;
use crate::handler::{self, Settings, Stats};
use crate::resolve::Resolver;
use crate::tunnel;
use crate::upstream::Pool;

/// What the origin sends to a `GET /chunked` without a body.
fn page() -> Vec<u8> {
    (0..50_000u32).map(|i| (i % 251) as u8).collect()
}

/// Echo each request's body (`/chunked`: in chunks of 3000 bytes;
/// otherwise with a Content-Length), with the Host and Via it saw.
pub(crate) fn echo_origin(conn: Conn) {
    let limits = Limits {
        body_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(request)) = read_request(&mut reader, &limits) {
        let seen = |name| header(&request.headers, name).unwrap_or("-").to_owned();
        let (host, via, auth) = (seen("host"), seen("via"), seen("proxy-authorization"));
        let out = reader.get_mut();
        let body = match request.body.is_empty() {
            true => page(),
            false => request.body.clone(),
        };
        let extra = [
            ("X-Seen-Host", &*host),
            ("X-Seen-Via", &via),
            ("X-Seen-Auth", &auth),
        ];
        let sent = match request.target.as_str() {
            "/chunked" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Seen-Host: {host}\r\n\r\n"
                );
                let mut chunked = ChunkedWriter::new(Vec::new());
                body.chunks(3000)
                    .for_each(|c| chunked.write_all(c).unwrap());
                let mut wire = head.into_bytes();
                wire.extend(chunked.finish().unwrap());
                out.write_all(&wire).and_then(|()| out.flush())
            }
            _ => write_response(out, 200, "OK", "application/octet-stream", &extra, &body),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Start `server::run` with `handler` on a thread.
pub(crate) fn start(
    handler: impl Fn(Conn) + Send + Sync + 'static,
) -> (
    std::net::SocketAddr,
    Shutdown,
    std::thread::JoinHandle<std::io::Result<Report>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || {
        server::run(listener, &stop, server::Config::default(), handler)
    });
    (addr, shutdown, thread)
}

pub(crate) fn settings() -> Settings {
    let args = Args::try_parse_from(["proxy_server", "--allow-dest", "127.0.0.1/32"]).unwrap();
    Settings {
        policy: args.policy(),
        users: None,
        connect_timeout: args.connect_timeout(),
        idle_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(5),
        resolver: Resolver::new(args.dns()),
        pool: Pool::start(args.pool_limits()),
        tunnel_stack_words: tunnel::COPY_STACK_WORDS,
        access_log: None,
    }
}

pub(crate) fn chunked_body(body: &[u8], piece: usize) -> Vec<u8> {
    let mut chunked = ChunkedWriter::new(Vec::new());
    body.chunks(piece)
        .for_each(|c| chunked.write_all(c).unwrap());
    chunked.finish().unwrap()
}

#[test]
fn bodies_arrive_intact_and_the_origin_connection_is_reused() {
    configure_for_tests();
    let (origin, origin_stop, origin_thread) = start(echo_origin);
    let stats = std::sync::Arc::new(Stats::default());
    let counted = stats.clone();
    let proxy_settings = settings();
    let (proxy, proxy_stop, proxy_thread) =
        start(move |conn| handler::serve(conn, &proxy_settings, &counted));

    let mut client = StdStream::connect(proxy).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let up: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    let mut wire = format!(
        "POST http://{origin}/chunked HTTP/1.1\r\nHost: wrong.test\r\n\
         Proxy-Authorization: Basic eDp5\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    wire.extend(chunked_body(&up, 7000));
    wire.extend(
        format!(
            "PUT http://{origin}/sized HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            up.len()
        )
        .into_bytes(),
    );
    wire.extend(&up);
    client.write_all(&wire).unwrap(); // two requests, pipelined
    let limits = Limits {
        body_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut answers = BufReader::new(client.try_clone().unwrap());
    let chunked = read_response(&mut answers, &limits).unwrap();
    assert_eq!(chunked.status, 200);
    assert_eq!(
        header(&chunked.headers, "transfer-encoding"),
        Some("chunked")
    );
    assert_eq!(
        header(&chunked.headers, "x-seen-host"),
        Some(&*origin.to_string())
    );
    assert!(chunked.body == up, "the chunked body is intact both ways");
    let sized = read_response(&mut answers, &limits).unwrap();
    let length = up.len().to_string();
    assert_eq!(header(&sized.headers, "content-length"), Some(&*length));
    assert_eq!(
        header(&sized.headers, "x-seen-via"),
        Some("1.1 proxy_server")
    );
    assert_eq!(header(&sized.headers, "x-seen-auth"), Some("-"));
    assert!(sized.body == up, "the sized body is intact both ways");

    // An HTTP/1.0 client, on a new connection: the chunked answer comes
    // raw and ends with the close; the origin connection is reused.
    let mut old = StdStream::connect(proxy).unwrap();
    old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(old, "GET http://{origin}/chunked HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    old.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..split]);
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(raw[split..] == page(), "the body raw, to the close");

    drop((client, answers));
    proxy_stop.trigger();
    proxy_thread.join().unwrap().unwrap();
    origin_stop.trigger();
    let origin_report = origin_thread.join().unwrap().unwrap();
    assert_eq!(origin_report.accepted, 1, "one origin connection for all");
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((n(&stats.forwarded), n(&stats.origin_reused)), (3, 2));
}

/// Answer the first request on each connection; read the next and
/// close without a word, as an origin does that drops an idle
/// keep-alive connection just as the proxy reuses it.
fn one_answer_origin(conn: Conn) {
    let mut reader = BufReader::new(conn);
    let limits = Limits::default();
    if let Ok(Some(_)) = read_request(&mut reader, &limits) {
        let out = reader.get_mut();
        if write_response(out, 200, "OK", "text/plain", &[], b"answered").is_err() {
            return;
        }
    }
    let _ = read_request(&mut reader, &limits);
}

#[test]
fn a_dead_pooled_connection_is_retried_only_for_an_idempotent_request() {
    configure_for_tests();
    let (origin, origin_stop, origin_thread) = start(one_answer_origin);
    let stats = std::sync::Arc::new(Stats::default());
    let counted = stats.clone();
    let proxy_settings = settings();
    let (proxy, proxy_stop, proxy_thread) =
        start(move |conn| handler::serve(conn, &proxy_settings, &counted));

    // One client connection, so each request starts after the one
    // before has put its origin connection back in the pool.
    let mut client = StdStream::connect(proxy).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        client,
        "GET http://{origin}/a HTTP/1.1\r\n\r\n\
         GET http://{origin}/b HTTP/1.1\r\n\r\n\
         POST http://{origin}/c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
    )
    .unwrap();
    let mut answers = BufReader::new(client.try_clone().unwrap());
    let limits = Limits::default();
    let first = read_response(&mut answers, &limits).unwrap();
    assert_eq!((first.status, &first.body[..]), (200, &b"answered"[..]));
    let retried = read_response(&mut answers, &limits).unwrap();
    assert_eq!(
        (retried.status, &retried.body[..]),
        (200, &b"answered"[..]),
        "the GET went again on a fresh connection"
    );
    let post = read_response(&mut answers, &limits).unwrap();
    let body = String::from_utf8_lossy(&post.body);
    assert_eq!(post.status, 502, "a POST is never sent twice: {body}");
    assert!(body.contains("without an answer"), "{body}");

    drop((client, answers));
    proxy_stop.trigger();
    proxy_thread.join().unwrap().unwrap();
    origin_stop.trigger();
    let origin_report = origin_thread.join().unwrap().unwrap();
    assert_eq!(origin_report.accepted, 2, "the first, and the retry's");
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((n(&stats.origin_reused), n(&stats.origin_retried)), (2, 1));
}

#[test]
fn a_quiet_keep_alive_client_is_closed_after_the_idle_timeout() {
    configure_for_tests();
    let (origin, origin_stop, origin_thread) = start(echo_origin);
    let idle = Duration::from_secs(1);
    let proxy_settings = Settings {
        idle_timeout: idle,
        ..settings()
    };
    let stats = Stats::default();
    let (proxy, proxy_stop, proxy_thread) =
        start(move |conn| handler::serve(conn, &proxy_settings, &stats));

    let mut client = StdStream::connect(proxy).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        client,
        "PUT http://{origin}/sized HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
    )
    .unwrap();
    let mut answers = BufReader::new(client.try_clone().unwrap());
    let answer = read_response(&mut answers, &Limits::default()).unwrap();
    assert_eq!((answer.status, &answer.body[..]), (200, &b"hi"[..]));
    let answered = std::time::Instant::now();
    let mut rest = Vec::new();
    answers.read_to_end(&mut rest).unwrap(); // until the proxy closes
    let waited = answered.elapsed();
    assert!(rest.is_empty(), "nothing more was sent");
    assert!(
        waited >= idle * 9 / 10 && waited < idle * 5,
        "closed {waited:?} after the answer, for an idle timeout of {idle:?}"
    );

    proxy_stop.trigger();
    proxy_thread.join().unwrap().unwrap();
    origin_stop.trigger();
    origin_thread.join().unwrap().unwrap();
}

/// Read requests and never answer, until the proxy closes.
fn silent_origin(mut conn: Conn) {
    let mut buf = vec![0u8; 4096];
    while let Ok(1..) = conn.read(&mut buf) {}
}

#[test]
fn a_silent_origin_gets_504_after_the_response_timeout() {
    configure_for_tests();
    let (origin, origin_stop, origin_thread) = start(silent_origin);
    let timeout = Duration::from_secs(1);
    let proxy_settings = Settings {
        response_timeout: timeout,
        // Far longer, so a 504 at `timeout` is the response timeout's.
        idle_timeout: Duration::from_secs(20),
        ..settings()
    };
    let stats = std::sync::Arc::new(Stats::default());
    let counted = stats.clone();
    let (proxy, proxy_stop, proxy_thread) =
        start(move |conn| handler::serve(conn, &proxy_settings, &counted));

    let mut client = StdStream::connect(proxy).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sent = std::time::Instant::now();
    write!(client, "GET http://{origin}/slow HTTP/1.1\r\n\r\n").unwrap();
    let mut answers = BufReader::new(client);
    let answer = read_response(&mut answers, &Limits::default()).unwrap();
    let waited = sent.elapsed();
    let body = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 504, "{body}");
    assert!(body.contains("--response-timeout"), "{body}");
    assert!(
        waited >= timeout * 9 / 10 && waited < timeout * 5,
        "answered {waited:?} after the request, for a response timeout of {timeout:?}"
    );

    drop(answers);
    proxy_stop.trigger();
    proxy_thread.join().unwrap().unwrap();
    origin_stop.trigger();
    origin_thread.join().unwrap().unwrap();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n(&stats.upstream_failed), 1);
}

/// A log destination the test reads back.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_access_log_names_the_user_and_counts_refusal_bodies() {
    configure_for_tests();
    let (origin, origin_stop, origin_thread) = start(echo_origin);
    let out = Shared::default();
    let (log, writer) = access_log::start(Box::new(out.clone()), 16).unwrap();
    let proxy_settings = Settings {
        users: Some(Users::parse("alice:s3cret\n").unwrap()),
        access_log: Some(log),
        ..settings()
    };
    let stats = Stats::default();
    let (proxy, proxy_stop, proxy_thread) =
        start(move |conn| handler::serve(conn, &proxy_settings, &stats));

    // "alice:s3cret", then a wrong password.
    let alice = "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n";
    let wrong = "Proxy-Authorization: Basic YWxpY2U6d3Jvbmc=\r\n";
    let requests = [
        format!("PUT http://{origin}/sized HTTP/1.1\r\n{alice}Content-Length: 2\r\n\r\nhi"),
        format!("GET http://{origin}/ HTTP/1.1\r\n{wrong}\r\n"),
        format!("GET http://127.0.0.1:25/ HTTP/1.1\r\n{alice}\r\n"),
    ];
    let mut bodies = Vec::new();
    for request in &requests {
        let mut client = StdStream::connect(proxy).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(request.as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answers = BufReader::new(client);
        let answer = read_response(&mut answers, &Limits::default()).unwrap();
        bodies.push((answer.status, answer.body.len()));
    }
    assert_eq!(
        bodies.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [200, 407, 403]
    );

    proxy_stop.trigger();
    proxy_thread.join().unwrap().unwrap(); // drops the handler's log
    writer.finish().unwrap();
    origin_stop.trigger();
    origin_thread.join().unwrap().unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    // Fields: client, identity, user, [date, zone], "request line", status, bytes.
    for (fields, (status, body)) in lines.iter().zip(&bodies) {
        assert_eq!(fields[8], status.to_string(), "{text}");
        assert_eq!(fields[9], body.to_string(), "the body's bytes: {text}");
    }
    let users: Vec<&str> = lines.iter().map(|f| f[2]).collect();
    assert_eq!(users, ["alice", "-", "alice"], "{text}");
}
