//! The client against small scripted servers on loopback. The servers run
//! on plain threads with std sockets (they are the test's, not a may
//! worker's); every fetch runs on a coroutine of exactly [`STACK_SIZE`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use url::Url;

use super::*;
use crate::runtime::configure_for_tests;
use crate::tls::{self, TestCa};

/// What a scripted server does with one request.
enum Reply {
    /// Write these bytes; keep the connection for the next request.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Write the head, then one body byte per `every`, for ever.
    Trickle(Vec<u8>, Duration),
    /// Write these bytes, then send nothing more (the connection stays open).
    Stall(Vec<u8>),
}

type Handler = dyn Fn(&str) -> Reply + Send + Sync;

/// A server on a thread per connection, answering each request head with
/// `handler(head)`.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (count, seen) = (accepted.clone(), heads.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, tls) = (handler.clone(), seen.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => converse(tcp, &*handler, &seen),
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        converse(rustls::StreamOwned::new(conn, tcp), &*handler, &seen)
                    }
                });
            }
        });
        Server {
            addr,
            accepted,
            heads,
        }
    }

    fn plain(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        Server::start(None, handler)
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answer requests on one connection until the client or the script ends it.
fn converse<S: Read + Write>(stream: S, handler: &Handler, seen: &Mutex<Vec<String>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => head.push_str(&line),
            }
            if line == "\r\n" {
                break;
            }
        }
        seen.lock().unwrap().push(head.clone());
        let out = stream.get_mut();
        let sent = match handler(&head) {
            Reply::Send(bytes) => out.write_all(&bytes).and_then(|_| out.flush()),
            Reply::SendAndClose(bytes) => {
                let _ = out.write_all(&bytes).and_then(|_| out.flush());
                return;
            }
            Reply::Trickle(head, every) => {
                let _ = out.write_all(&head).and_then(|_| out.flush());
                while out.write_all(b"x").and_then(|_| out.flush()).is_ok() {
                    std::thread::sleep(every); // a plain thread: std's sleep is right here
                }
                return;
            }
            Reply::Stall(bytes) => {
                let _ = out.write_all(&bytes).and_then(|_| out.flush());
                // Hold the connection open without a word until the client goes.
                let _ = stream.read_to_end(&mut Vec::new());
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A response with a `Content-Length` body.
fn sized(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn ok(body: &str) -> Reply {
    Reply::Send(sized(
        "200 OK",
        "Content-Type: text/plain\r\n",
        body.as_bytes(),
    ))
}

/// A chunked response of `chunks`.
fn chunked(headers: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{headers}\r\n").into_bytes();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn redirect(status: u16, location: &str) -> Reply {
    let headers = format!("Location: {location}\r\n");
    Reply::Send(sized(&format!("{status} Moved"), &headers, b"moved"))
}

/// Run `f` on a coroutine with exactly the stack the client asks for.
fn on_coroutine<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    configure_for_tests();
    let words = STACK_SIZE / std::mem::size_of::<usize>();
    let builder = may::coroutine::Builder::new().stack_size(words);
    may::go!(builder, f).unwrap().join().unwrap()
}

fn fetch(client: &Client, url: Url) -> Result<Fetched, FetchError> {
    let client = client.clone();
    on_coroutine(move || client.get(&url))
}

fn client(config: ClientConfig) -> Client {
    Client::new(config)
}

fn kind(result: Result<Fetched, FetchError>) -> FetchErrorKind {
    result.expect_err("the fetch must fail").kind
}

#[test]
fn keep_alive_connections_are_reused_and_counted() {
    let server = Server::plain(|head| ok(head.lines().next().unwrap()));
    let client = client(ClientConfig::default());
    for path in ["/a", "/b", "/c?q=1"] {
        let page = fetch(&client, server.url(path)).unwrap();
        assert_eq!(page.status, 200);
        assert_eq!(page.body, format!("GET {path} HTTP/1.1").as_bytes());
        assert_eq!(page.reused_connection, path != "/a");
    }
    let stats = client.stats();
    assert_eq!((stats.connections_opened, stats.connections_reused), (1, 2));
    assert_eq!(stats.idle_now, 1);
    assert_eq!(server.accepted(), 1);
    let head = server.heads.lock().unwrap()[0].clone();
    assert!(
        head.contains(&format!("\r\nHost: {}\r\n", server.addr)),
        "{head}"
    );
    assert!(head.contains("\r\nUser-Agent: may-patterns/"), "{head}");
    assert!(head.contains("\r\nAccept-Encoding: gzip\r\n"), "{head}");
}

#[test]
fn many_coroutines_share_one_client_and_its_pool() {
    let server = Server::plain(|head| ok(head.split(' ').nth(1).unwrap()));
    let client = client(ClientConfig {
        max_idle_per_host: 8,
        ..Default::default()
    });
    configure_for_tests();
    let words = STACK_SIZE / std::mem::size_of::<usize>();
    let fetchers: Vec<_> = (0..20)
        .map(|f| {
            let (client, base) = (client.clone(), server.url("/"));
            let builder = may::coroutine::Builder::new().stack_size(words);
            may::go!(builder, move || {
                (0..10).all(|i| {
                    let url = base.join(&format!("/{f}/{i}")).unwrap();
                    let page = client.get(&url).unwrap();
                    page.body == url.path().as_bytes()
                })
            })
            .unwrap()
        })
        .collect();
    for fetcher in fetchers {
        assert!(fetcher.join().unwrap(), "every answer matched its request");
    }
    let stats = client.stats();
    assert_eq!(stats.connections_opened + stats.connections_reused, 200);
    assert!(stats.connections_opened <= 20, "{stats:?}");
    assert!(stats.idle_now <= 8, "{stats:?}");
    assert_eq!(server.accepted() as u64, stats.connections_opened);
}

#[test]
fn an_idle_connection_past_the_idle_timeout_is_closed_not_reused() {
    let server = Server::plain(|_| ok("x"));
    let idle_timeout = Duration::from_millis(100);
    let client = client(ClientConfig {
        idle_timeout,
        ..Default::default()
    });
    assert!(!fetch(&client, server.url("/")).unwrap().reused_connection);
    assert_eq!(client.stats().idle_now, 1);
    // Time passing is what this test is about, not a way to wait for an event.
    std::thread::sleep(idle_timeout + Duration::from_millis(50));
    assert!(!fetch(&client, server.url("/")).unwrap().reused_connection);
    let stats = client.stats();
    assert_eq!((stats.connections_opened, stats.connections_reused), (2, 0));
    assert_eq!(server.accepted(), 2);
}

#[test]
fn a_chunked_body_is_read_whole_and_the_connection_kept() {
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let wire = chunked("", &[&body[..1], &body[1..20_000], &body[20_000..]]);
    let server = Server::plain(move |_| Reply::Send(wire.clone()));
    let client = client(ClientConfig::default());
    let page = fetch(&client, server.url("/")).unwrap();
    assert_eq!(page.body, body);
    assert_eq!(page.wire_bytes, body.len() as u64);
    assert!(fetch(&client, server.url("/")).unwrap().reused_connection);
}

#[test]
fn gzip_is_asked_for_and_decoded_and_a_bomb_stops_at_the_cap() {
    let page: Vec<u8> = b"<p>hello</p>".repeat(1000);
    let compressed = gzipped(&page);
    let bomb = gzipped(&vec![0u8; 4 << 20]);
    let (small, bomb_len) = (compressed.len(), bomb.len());
    let server = Server::plain(move |head| match head.starts_with("GET /bomb") {
        true => Reply::Send(sized("200 OK", "Content-Encoding: gzip\r\n", &bomb)),
        false => Reply::Send(chunked("Content-Encoding: gzip\r\n", &[&compressed])),
    });
    let client = client(ClientConfig {
        max_body: 1 << 20,
        ..Default::default()
    });
    let fetched = fetch(&client, server.url("/page")).unwrap();
    assert_eq!(fetched.body, page);
    assert_eq!(fetched.wire_bytes, small as u64);
    assert!(fetched.header("content-encoding").is_some());
    assert!(
        bomb_len < 1 << 20,
        "the bomb is small on the wire: {bomb_len}"
    );
    let e = fetch(&client, server.url("/bomb")).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::BodyTooLarge, "{e}");
    assert!(!e.is_transient());
    // The chunked gzip body was read to its last chunk: its connection was
    // reused for the bomb, which then closed it.
    assert_eq!(client.stats().connections_reused, 1);
    assert_eq!(client.stats().idle_now, 0);
}

#[test]
fn gzip_in_tiny_chunks_with_header_fields_is_decoded_and_corruption_is_caught() {
    let page = b"<title>t</title>".repeat(300);
    let mut named = flate2::GzBuilder::new()
        .filename("page.html")
        .comment("a comment")
        .extra(vec![1, 2, 3])
        .write(Vec::new(), flate2::Compression::best());
    named.write_all(&page).unwrap();
    let named = named.finish().unwrap();
    let mut bad_crc = gzipped(&page);
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 1;
    let truncated = gzipped(&page)[..40].to_vec();
    let server = Server::plain(move |head| {
        let gzip = "Content-Encoding: gzip\r\n";
        Reply::Send(match head.split(' ').nth(1).unwrap() {
            "/named" => chunked(gzip, &named.chunks(1).collect::<Vec<_>>()),
            "/crc" => sized("200 OK", gzip, &bad_crc),
            "/truncated" => sized("200 OK", gzip, &truncated),
            "/garbage" => sized("200 OK", gzip, b"this is not gzip at all"),
            _ => sized("200 OK", "Content-Encoding: br\r\n", b"xx"),
        })
    });
    let client = client(ClientConfig::default());
    assert_eq!(fetch(&client, server.url("/named")).unwrap().body, page);
    for (path, why) in [
        ("/crc", "bad gzip: the CRC or length"),
        (
            "/truncated",
            "bad gzip: the body ended inside the deflate stream",
        ),
        ("/garbage", "bad gzip: not a gzip stream"),
        ("/br", "Content-Encoding br is not supported"),
    ] {
        let e = fetch(&client, server.url(path)).unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Protocol, "{path}: {e}");
        assert!(e.reason.starts_with(why), "{path}: {e}");
    }
}

#[test]
fn redirects_are_followed_up_to_the_limit_and_loops_and_other_schemes_end() {
    let server = Server::plain(|head| {
        let path = head.split(' ').nth(1).unwrap().to_owned();
        match path.as_str() {
            "/start" => redirect(301, "/middle"),
            "/middle" => redirect(307, "end?x=1"),
            "/end?x=1" => ok("arrived"),
            "/loop-a" => redirect(302, "/loop-b"),
            "/loop-b" => redirect(302, "/loop-a"),
            "/ftp" => redirect(302, "ftp://example.com/file"),
            "/no-location" => Reply::Send(sized("302 Found", "", b"")),
            _ => Reply::Send(sized("404 Not Found", "", b"no")),
        }
    });
    let follow = client(ClientConfig::default());
    let page = fetch(&follow, server.url("/start")).unwrap();
    assert_eq!((page.status, page.body.as_slice()), (200, &b"arrived"[..]));
    assert_eq!(page.url, server.url("/end?x=1"));
    assert_eq!(
        page.redirects,
        [server.url("/middle"), server.url("/end?x=1")]
    );
    let e = fetch(&follow, server.url("/loop-a")).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::RedirectLoop, "{e}");
    let e = fetch(&follow, server.url("/ftp")).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::UnsupportedScheme, "{e}");
    assert_eq!(e.url, "ftp://example.com/file");
    assert_eq!(
        fetch(&follow, server.url("/no-location")).unwrap().status,
        302
    );

    let one = client(ClientConfig {
        max_redirects: 1,
        ..Default::default()
    });
    assert_eq!(
        kind(fetch(&one, server.url("/start"))),
        FetchErrorKind::TooManyRedirects
    );
    let none = client(ClientConfig {
        max_redirects: 0,
        ..Default::default()
    });
    let moved = fetch(&none, server.url("/start")).unwrap();
    assert_eq!(
        (moved.status, moved.header("location")),
        (301, Some("/middle"))
    );
    assert_eq!(moved.body, b"moved");
    // Every redirect's body was read, so one connection served it all.
    assert_eq!(server.accepted(), 3);
}

#[test]
fn an_error_status_is_a_response_not_an_error() {
    let server = Server::plain(|_| Reply::Send(sized("404 Not Found", "", b"gone")));
    let page = fetch(&client(ClientConfig::default()), server.url("/x")).unwrap();
    assert_eq!((page.status, page.reason.as_str()), (404, "Not Found"));
    assert_eq!(page.body, b"gone");
}

#[test]
fn a_refused_connection_is_a_transient_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let e = fetch(&client(ClientConfig::default()), url).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Connect, "{e}");
    assert!(e.is_transient());
    assert!(
        e.to_string()
            .starts_with(&format!("http://127.0.0.1:{port}/: connect: ")),
        "{e}"
    );
}

#[test]
fn a_name_is_resolved_off_the_workers_and_every_address_is_tried() {
    // `localhost` comes from /etc/hosts (no network), and may resolve to
    // ::1 first, where nothing listens: the client goes on to 127.0.0.1.
    let server = Server::plain(|_| ok("by name"));
    let url = Url::parse(&format!("http://localhost:{}/", server.addr.port())).unwrap();
    let page = fetch(&client(ClientConfig::default()), url).unwrap();
    assert_eq!(page.body, b"by name");
}

#[test]
fn a_trickling_server_ends_at_the_total_timeout() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    let every = Duration::from_millis(50);
    let server = Server::plain(move |_| Reply::Trickle(head.clone(), every));
    let total = Duration::from_millis(600);
    let client = client(ClientConfig {
        total_timeout: total,
        ..Default::default() // a 10 s read timeout: each byte resets it
    });
    let started = Instant::now();
    let e = fetch(&client, server.url("/")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind, FetchErrorKind::Timeout(TimeoutPhase::Total), "{e}");
    assert!(e.is_transient());
    assert!(
        took >= total && took < total + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn a_silent_server_ends_at_the_read_timeout() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec();
    let server = Server::plain(move |_| Reply::Stall(head.clone()));
    let read = Duration::from_millis(300);
    let client = client(ClientConfig {
        read_timeout: read,
        ..Default::default()
    });
    let started = Instant::now();
    let e = fetch(&client, server.url("/")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind, FetchErrorKind::Timeout(TimeoutPhase::Read), "{e}");
    assert!(
        took >= read && took < read + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn a_body_past_the_cap_fails_and_its_connection_is_not_kept() {
    let server = Server::plain(|head| match head.starts_with("GET /sized") {
        true => Reply::Send(sized("200 OK", "", &[b'a'; 1000])),
        false => Reply::Send(chunked("", &[&[b'b'; 60], &[b'c'; 60]])),
    });
    let client = client(ClientConfig {
        max_body: 100,
        ..Default::default()
    });
    for path in ["/sized", "/chunked"] {
        let e = fetch(&client, server.url(path)).unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::BodyTooLarge, "{e}");
        assert_eq!(e.reason, "over 100 bytes");
        assert_eq!(client.stats().idle_now, 0, "{path}: not pooled");
    }
    assert_eq!(server.accepted(), 2, "each fetch needed a new connection");
}

#[test]
fn a_malformed_status_line_is_a_protocol_error() {
    let server = Server::plain(|_| Reply::SendAndClose(b"HTTP/1.1 OK\r\n\r\n".to_vec()));
    let e = fetch(&client(ClientConfig::default()), server.url("/")).unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Protocol, "{e}");
    assert!(e.reason.contains("malformed response"), "{e}");
    assert!(!e.is_transient());
}

#[test]
fn a_body_delimited_by_close_is_read_and_its_connection_dropped() {
    let server =
        Server::plain(|_| Reply::SendAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()));
    let client = client(ClientConfig::default());
    let page = fetch(&client, server.url("/")).unwrap();
    assert_eq!(page.body, b"until close");
    assert_eq!(client.stats().idle_now, 0);
}

#[test]
fn a_pooled_connection_closed_by_the_server_is_replaced_once() {
    // Each connection answers one request, without saying it will close.
    let server = Server::plain(|_| Reply::SendAndClose(sized("200 OK", "", b"once")));
    let client = client(ClientConfig::default());
    for _ in 0..3 {
        assert_eq!(fetch(&client, server.url("/")).unwrap().body, b"once");
    }
    let stats = client.stats();
    assert_eq!(stats.stale_retried, 2, "{stats:?}");
    assert_eq!(stats.connections_opened, 3, "{stats:?}");
    assert_eq!(server.accepted(), 3);
}

#[test]
fn https_with_a_test_ca_works_and_a_stranger_ca_is_refused() {
    let ca = TestCa::new("client tests CA");
    let issued = ca.issue(&["a.test", "127.0.0.1"]);
    let server_tls = tls::server_config(&issued).unwrap();
    let body = b"secret page ".repeat(500);
    let wire = chunked("Content-Encoding: gzip\r\n", &[&gzipped(&body)]);
    let server = Server::start(Some(server_tls), move |_| Reply::Send(wire.clone()));
    let port = server.addr.port();
    let table = HashMap::from([(format!("a.test:{port}"), server.addr)]);
    let trusting = client(ClientConfig {
        tls: tls::client_config(ca.roots()),
        resolve: Resolve::Static(table.clone()),
        ..Default::default()
    });
    for url in [
        format!("https://a.test:{port}/"),
        format!("https://127.0.0.1:{port}/"),
    ] {
        for reused in [false, true] {
            let page = fetch(&trusting, Url::parse(&url).unwrap()).unwrap();
            assert_eq!(page.body, body, "{url}");
            assert_eq!(page.reused_connection, reused, "{url}");
        }
    }
    let stranger = client(ClientConfig {
        tls: tls::client_config(TestCa::new("stranger").roots()),
        resolve: Resolve::Static(table),
        ..Default::default()
    });
    let e = fetch(
        &stranger,
        Url::parse(&format!("https://a.test:{port}/")).unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Tls, "{e}");
    assert!(e.reason.contains("unknown issuer"), "{e}");
    let unknown = Url::parse(&format!("https://b.test:{port}/")).unwrap();
    assert_eq!(kind(fetch(&stranger, unknown)), FetchErrorKind::Dns);
}

#[test]
fn bad_requests_and_a_refusing_sink_fail_with_a_reason() {
    let server = Server::plain(|_| ok("body"));
    let client = client(ClientConfig::default());
    let ftp = Url::parse("ftp://127.0.0.1/file").unwrap();
    assert_eq!(kind(fetch(&client, ftp)), FetchErrorKind::UnsupportedScheme);
    let (url, c) = (server.url("/"), client.clone());
    let e = on_coroutine(move || {
        c.get_streaming(&url, &[("X-Bad", "a\r\nInjected: 1")], &mut |_| Ok(()))
    });
    assert_eq!(e.unwrap_err().kind, FetchErrorKind::InvalidUrl);
    let (url, c) = (server.url("/"), client.clone());
    let e = on_coroutine(move || {
        c.get_streaming(&url, &[("X-Ok", "1")], &mut |_| {
            Err(std::io::Error::other("full"))
        })
    })
    .unwrap_err();
    assert_eq!(e.kind, FetchErrorKind::Protocol, "{e}");
    assert!(e.reason.ends_with("full"), "{e}");
    let head = server.heads.lock().unwrap().last().unwrap().clone();
    assert!(head.contains("\r\nX-Ok: 1\r\n"), "{head}");
}

/// Not a check but the measurement behind [`STACK_SIZE`]: the deepest work
/// a fetch does (a TLS handshake, a refused one, a chunked gzip body, a
/// redirect) on a coroutine with an odd stack size, for which may prints
/// the stack it used when the coroutine ends. Run it in both builds:
/// `cargo test [--release] --lib http::client::tests::stack -- --ignored --nocapture`.
#[test]
#[ignore]
fn stack_use_of_the_deepest_fetch() {
    let ca = TestCa::new("stack CA");
    let issued = ca.issue(&["a.test"]);
    let body = b"<a href=x>deep</a>".repeat(5000);
    let wire = chunked("Content-Encoding: gzip\r\n", &[&gzipped(&body)]);
    let server = Server::start(
        Some(tls::server_config(&issued).unwrap()),
        move |head| match head.starts_with("GET /moved") {
            true => redirect(302, "/page"),
            false => Reply::Send(wire.clone()),
        },
    );
    let port = server.addr.port();
    let table = HashMap::from([(format!("a.test:{port}"), server.addr)]);
    let config = |roots| ClientConfig {
        tls: tls::client_config(roots),
        resolve: Resolve::Static(table.clone()),
        ..Default::default()
    };
    let (trusting, stranger) = (
        client(config(ca.roots())),
        client(config(TestCa::new("x").roots())),
    );
    let url = Url::parse(&format!("https://a.test:{port}/moved")).unwrap();
    configure_for_tests();
    let builder = may::coroutine::Builder::new()
        .name("deepest fetch".into())
        .stack_size((1 << 17) + 1); // odd: may measures; 1 MiB: never overflows
    let fetched = may::go!(builder, move || {
        assert_eq!(kind(stranger.get(&url)), FetchErrorKind::Tls);
        trusting.get(&url).map(|page| page.body.len())
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(fetched.unwrap(), body.len());
    // may prints its report as the coroutine ends, on its worker: wait for it.
    std::thread::sleep(Duration::from_millis(200));
}
