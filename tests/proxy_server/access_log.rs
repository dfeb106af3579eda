//! `--access-log PATH`: one line per request in the combined log format,
//! whatever became of the request (forwarded, tunnelled, refused).

use std::io::Write;

use regex::Regex;

use crate::clients::{self, curl_ok};
use crate::origins::{self, TlsOrigin};
use crate::proxy::Proxy;

/// One combined-format line, as Apache and nginx write it.
struct Line {
    client: String,
    user: String,
    request: String,
    status: u16,
    bytes: u64,
    user_agent: String,
}

fn parse(text: &str) -> Vec<Line> {
    let combined = Regex::new(
        r#"^(\S+) - (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$"#,
    )
    .unwrap();
    text.lines()
        .map(|line| {
            let c = combined
                .captures(line)
                .unwrap_or_else(|| panic!("not a combined log line: {line:?}"));
            Line {
                client: c[1].to_owned(),
                user: c[2].to_owned(),
                request: c[4].to_owned(),
                status: c[5].parse().unwrap(),
                bytes: c[6].parse().unwrap(),
                user_agent: c[8].to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_request_gets_one_combined_format_line_with_its_status() {
    let http = origins::http();
    let tls = TlsOrigin::start("logged\n");
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:s3cret\n").unwrap();
    let log = dir.path().join("access.log");
    let tls_port = tls.port().to_string();
    let proxy = Proxy::start(&[
        "--allow-dest",
        "127.0.0.1/32",
        "--allow-connect-port",
        &tls_port,
        "--auth-file",
        users.to_str().unwrap(),
        "--access-log",
        log.to_str().unwrap(),
    ]);
    let (x, user) = (proxy.url(), "alice:s3cret");
    // Forwarded.
    let plain = format!("http://127.0.0.1:{}/pattern/1000", http.port());
    curl_ok(&[
        "-sS",
        "-x",
        &x,
        "--proxy-user",
        user,
        "-o",
        "/dev/null",
        &plain,
    ]);
    // Tunnelled.
    let ca = tls.ca_file.to_str().unwrap();
    let secure = format!("https://localhost:{tls_port}/");
    let body = curl_ok(&[
        "-sS",
        "-x",
        &x,
        "--proxy-user",
        user,
        "--cacert",
        ca,
        &secure,
    ]);
    assert_eq!(body, "logged\n");
    // Refused: no credentials, then a port closed to plain HTTP.
    let mut no_auth = clients::connect(proxy.addr);
    write!(no_auth, "CONNECT localhost:{tls_port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(clients::read_head(&mut no_auth).map(|a| a.0), Some(407));
    let basic = "Proxy-Authorization: Basic YWxpY2U6czNjcmV0"; // alice:s3cret
    let smtp =
        format!("GET http://127.0.0.1:25/ HTTP/1.1\r\nHost: 127.0.0.1:25\r\n{basic}\r\n\r\n");
    assert_eq!(clients::exchange(proxy.addr, smtp.as_bytes()).status, 403);
    // The writer thread flushes on shutdown.
    let summary = proxy.stop();
    assert_eq!(summary["log_dropped"], 0, "{summary}");

    let text = std::fs::read_to_string(&log).expect("the access log was written");
    let lines = parse(&text);
    // In the order each ended: a tunnel's line is written when it closes,
    // which can be after the next request's.
    let mut seen: Vec<(String, String, u16)> = lines
        .iter()
        .map(|l| (l.user.clone(), l.request.clone(), l.status))
        .collect();
    seen.sort();
    let tunnel = format!("CONNECT localhost:{tls_port} HTTP/1.1");
    let alice = || "alice".to_owned();
    let mut want = vec![
        (alice(), format!("GET {plain} HTTP/1.1"), 200),
        (alice(), tunnel.clone(), 200),
        ("-".to_owned(), tunnel.clone(), 407),
        (alice(), "GET http://127.0.0.1:25/ HTTP/1.1".to_owned(), 403),
    ];
    want.sort();
    assert_eq!(seen, want, "the log:\n{text}");
    let line = |request: &str, status: u16| {
        lines
            .iter()
            .find(|l| l.request == request && l.status == status)
            .unwrap()
    };
    assert!(lines.iter().all(|l| l.client == "127.0.0.1"), "{text}");
    let forwarded = line(&format!("GET {plain} HTTP/1.1"), 200);
    assert_eq!(
        forwarded.bytes, 1000,
        "a forwarded line counts the body sent"
    );
    assert!(forwarded.user_agent.starts_with("curl/"), "{text}");
    assert!(
        line(&tunnel, 200).bytes > 0,
        "a tunnel's line counts the bytes sent down: {text}"
    );
}
