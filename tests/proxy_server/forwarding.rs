//! Plain HTTP forwarding (`curl -x` with an `http://` URL): nginx's pages
//! as curl gets them directly, keep-alive both sides, request bodies sized
//! and chunked, `Expect: 100-continue`, a dead origin, a client that goes
//! away in the middle of its body.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use may_patterns::testsite::{Features, Nginx, NginxOptions, SiteSpec};

use crate::clients::{self, curl, curl_ok};
use crate::origins;
use crate::pattern::Pattern;
use crate::proxy::Proxy;

/// Loopback origins are refused by default.
const REACH_LOOPBACK: [&str; 2] = ["--allow-dest", "127.0.0.1/32"];

/// nginx serving a small generated site (pages, a 1.5 MiB page, 404s).
fn nginx() -> Nginx {
    let spec = SiteSpec {
        hosts: 1,
        pages_per_host: 4,
        links_per_page: 2,
        seed: 16,
        features: Features {
            large_page: true,
            not_found: true,
            ..Features::none()
        },
    };
    Nginx::start(&spec, NginxOptions::default())
        .unwrap_or_else(|e| panic!("nginx did not start ({e}); .ci/run installs Debian's nginx"))
        .0
}

/// `len` pattern bytes in a file under `dir`, for `curl --data-binary @FILE`.
fn pattern_file(dir: &Path, len: u64) -> String {
    let path = dir.join(format!("body-{len}"));
    let mut file = std::fs::File::create(&path).unwrap();
    std::io::copy(&mut Pattern::new(len), &mut file).unwrap();
    file.flush().unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn curl_gets_nginx_pages_through_the_proxy_as_it_gets_them_directly() {
    let nginx = nginx();
    let proxy = Proxy::start(&REACH_LOOPBACK);
    let paths = ["/", "/p/1.html", "/big.html", "/no-such-page"];
    for path in paths {
        let url = format!("{}{path}", nginx.origins[0]);
        // The body, then the status on a line of its own.
        let direct = curl_ok(&["-sS", "-w", "\n%{http_code}", &url]);
        let proxied = curl_ok(&["-sS", "-x", &proxy.url(), "-w", "\n%{http_code}", &url]);
        assert!(direct == proxied, "{path}: through the proxy differs");
        assert!(direct.len() > 3, "{path}: nginx said something");
    }
    // The answer says who relayed it.
    let url = format!("{}/", nginx.origins[0]);
    let head = curl_ok(&[
        "-sS",
        "-x",
        &proxy.url(),
        "-o",
        "/dev/null",
        "-D",
        "-",
        &url,
    ]);
    assert!(
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("via: 1.1 proxy_server")),
        "no Via in {head}"
    );
    // nginx saw each request once per fetch: none lost, none sent twice.
    let log = nginx.access_log().expect("nginx's access log");
    for path in paths {
        let want = if path == "/" { 3 } else { 2 };
        let got = log.iter().filter(|l| l.path == path).count();
        assert_eq!(got, want, "nginx's log of {path}");
    }
    let summary = proxy.stop();
    assert_eq!(summary["forwarded"], paths.len() + 1, "{summary}");
}

/// HTTP/1.0 (`curl -0`): no chunked answer for such a client, and the
/// connection closes after the answer, but the bytes are the same.
#[test]
fn an_http_1_0_client_gets_the_same_pages() {
    let nginx = nginx();
    let proxy = Proxy::start(&REACH_LOOPBACK);
    for path in ["/", "/big.html"] {
        let url = format!("{}{path}", nginx.origins[0]);
        let direct = curl_ok(&["-sS", "-w", "\n%{http_code}", &url]);
        let proxied = curl_ok(&[
            "-sS",
            "-0",
            "-x",
            &proxy.url(),
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        assert!(
            direct == proxied,
            "{path}: through the proxy as HTTP/1.0 differs"
        );
    }
    let summary = proxy.stop();
    assert_eq!(summary["forwarded"], 2, "{summary}");
    assert_eq!(summary["accepted"], 2, "{summary}");
}

/// What a forward proxy cannot forward gets a 400 that says what to do.
#[test]
fn targets_a_forward_proxy_does_not_serve_get_400_saying_why() {
    let proxy = Proxy::start(&REACH_LOOPBACK);
    let cases = [
        (
            "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "absolute URL",
        ),
        (
            "GET https://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "CONNECT",
        ),
        (
            "GET ftp://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "http://",
        ),
    ];
    for (request, says) in cases {
        let answer = clients::exchange(proxy.addr, request.as_bytes());
        assert_eq!(answer.status, 400, "{request:?}: {}", answer.head);
        answer.assert_complete();
        answer.assert_says(says);
    }
    let summary = proxy.stop();
    assert_eq!(summary["bad_requests"], cases.len(), "{summary}");
    assert_eq!(summary["forwarded"], 0, "{summary}");
}

/// One curl run, two URLs: curl keeps its connection to the proxy, and
/// the proxy its connection to the origin.
#[test]
fn keep_alive_reuses_the_client_connection_and_the_origin_connection() {
    let origin = origins::http();
    let proxy = Proxy::start(&REACH_LOOPBACK);
    let first = format!("http://127.0.0.1:{}/pattern/1024", origin.port());
    let second = format!("http://127.0.0.1:{}/pattern/2048", origin.port());
    let out = curl(&[
        "-sS",
        "-v",
        "-x",
        &proxy.url(),
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &first,
        &second,
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl: {said}");
    assert!(
        said.contains("Re-using existing connection"),
        "curl opened a second connection to the proxy:\n{said}"
    );
    assert_eq!(
        origin.accepted(),
        1,
        "the proxy opened a second connection to the origin"
    );
    let summary = proxy.stop();
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["forwarded"], 2, "{summary}");
    assert_eq!(summary["origin_reused"], 1, "{summary}");
    assert_eq!(summary["bytes_down"], 1024 + 2048, "{summary}");
}

#[test]
fn request_bodies_arrive_whole_sized_chunked_and_after_100_continue() {
    let origin = origins::http();
    let proxy = Proxy::start(&REACH_LOOPBACK);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/upload", origin.port());
    let small = pattern_file(dir.path(), 64 * 1024);
    let sized = curl_ok(&[
        "-sS",
        "-x",
        &proxy.url(),
        "--data-binary",
        &format!("@{small}"),
        &url,
    ]);
    assert_eq!(sized, "65536 Length(65536) ok\n");
    let chunked = curl_ok(&[
        "-sS",
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{small}"),
        &url,
    ]);
    assert_eq!(chunked, "65536 Chunked ok\n");
    // curl asks for 100-continue before a body this large, and waits a
    // second for it before sending anyway: the 100 in its trace is the
    // proxy's (or the origin's, passed on).
    let large = pattern_file(dir.path(), 2 * 1024 * 1024);
    let data = format!("@{large}");
    let out = curl(&[
        "-sS",
        "-v",
        "-x",
        &proxy.url(),
        "--data-binary",
        &data,
        &url,
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl: {said}");
    assert!(said.contains("> Expect: 100-continue"), "{said}");
    assert!(said.contains("< HTTP/1.1 100 Continue"), "{said}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2097152 Length(2097152) ok\n"
    );
    let summary = proxy.stop();
    assert_eq!(summary["forwarded"], 3, "{summary}");
    // The bodies' bytes, counted as the proxy sent them on.
    assert_eq!(summary["bytes_up"], 2 * 65536 + 2097152, "{summary}");
}

#[test]
fn a_dead_origin_gets_502() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(&REACH_LOOPBACK);
    let request =
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let answer = clients::exchange(proxy.addr, request.as_bytes());
    assert_eq!(answer.status, 502, "{}", answer.head);
    answer.assert_complete();
    answer.assert_says(&port.to_string());
    let summary = proxy.stop();
    assert_eq!(summary["upstream_failed"], 1, "{summary}");
}

/// An origin that never completes the TCP handshake, and one that takes
/// the request and never answers: each 504 after its own timeout.
#[test]
fn an_origin_silent_past_its_timeout_gets_504() {
    // A listener nobody accepts on: once its accept queue is full, the
    // kernel drops further SYNs, so a connect neither succeeds nor fails.
    let unanswered = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let full = unanswered.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&full, Duration::from_millis(300)) {
            Ok(stream) => queued.push(stream),
            Err(e) => {
                // With net.ipv4.tcp_abort_on_overflow set (0 by default)
                // the kernel would refuse instead, and this test could not
                // make a silent origin this way.
                assert_eq!(
                    e.kind(),
                    ErrorKind::TimedOut,
                    "filling the accept queue: {e}"
                );
                break;
            }
        }
        assert!(queued.len() < 10_000, "the accept queue never filled");
    }
    let mute = origins::mute();
    let mut args = REACH_LOOPBACK.to_vec();
    args.extend(["--connect-timeout", "1", "--response-timeout", "1"]);
    let proxy = Proxy::start(&args);
    for (addr, says) in [
        (full, "connecting took over 1 s"),
        (mute.addr, "--response-timeout"),
    ] {
        let request = format!("GET http://{addr}/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let started = Instant::now();
        let answer = clients::exchange(proxy.addr, request.as_bytes());
        let took = started.elapsed();
        assert_eq!(answer.status, 504, "{addr}: {}", answer.head);
        answer.assert_complete();
        answer.assert_says(says);
        assert!(took < Duration::from_secs(4), "the 504 took {took:?}");
    }
    let summary = proxy.stop();
    assert_eq!(summary["upstream_failed"], 2, "{summary}");
}

/// Half of a declared body, then the client is gone: the proxy gives up
/// on that exchange, counts it, closes the origin's side, and serves the
/// next client.
#[test]
fn a_client_gone_in_the_middle_of_its_body_is_counted_and_the_next_is_served() {
    let origin = origins::http();
    let proxy = Proxy::start(&REACH_LOOPBACK);
    let before = proxy.open_fds();
    let port = origin.port();
    let mut stream = clients::connect(proxy.addr);
    let declared = 1024 * 1024;
    write!(
        stream,
        "POST http://127.0.0.1:{port}/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    let mut half = Vec::new();
    Pattern::new(declared / 2).read_to_end(&mut half).unwrap();
    stream.write_all(&half).unwrap();
    // The origin has the first bytes once the proxy connected to it.
    proxy.wait_until("reached the origin", |_| origin.accepted() == 1);
    drop(stream);
    // The exchange is over when both its sockets are closed.
    proxy.wait_until("closed both sides", |p| p.open_fds() <= before);
    let url = format!("http://127.0.0.1:{port}/pattern/4096");
    let out = curl(&[
        "-sS",
        "-x",
        &proxy.url(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 4096");
    let summary = proxy.stop();
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert_eq!(summary["client_gone"], 1, "{summary}");
    assert_eq!(summary["forwarded"], 1, "{summary}");
}
