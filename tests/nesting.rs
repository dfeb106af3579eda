//! End to end: no program's input can overflow a stack. Each program that
//! parses JSON it did not write gets, over its real TCP input, a document
//! nested to its limit (accepted), one level past it and 127 levels deep
//! (serde_json's own limit; rejected and counted), then good input, and
//! must keep serving with its books balanced.
//!
//! `cargo test --test nesting` drives debug builds (what `cargo run`
//! makes); `cargo test --release --test nesting` drives release builds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{json, Value};

mod support;
use support::{build_examples, interrupt, output_bounded, spawn_with_lines, wait_bounded};

const LIMIT: Duration = Duration::from_secs(30);

/// Every program's limit (each states it as `MAX_DEPTH`).
const MAX_DEPTH: usize = 8;

/// `levels` nested arrays, innermost empty: `[[]]` is 2.
fn arrays(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// Start `name` with `args`; its stdout and stderr lines arrive on two
/// channels, read by two threads so neither pipe can fill up.
fn start(name: &str, args: &[&str]) -> (Child, Receiver<String>, Receiver<String>) {
    spawn_with_lines(Command::new(build_examples([name]).join(name)).args(args))
}

/// The next line containing `text`, waiting at most `LIMIT`; a line about
/// a stack overflow fails the test at once.
fn line_with(lines: &Receiver<String>, text: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no line with {text:?}"));
        assert!(!line.contains("overflow"), "{line}");
        if line.contains(text) {
            return line;
        }
    }
}

fn listening_addr(stderr: &Receiver<String>) -> String {
    let line = line_with(stderr, "listening on ");
    line["listening on ".len()..].to_owned()
}

fn send_lines(addr: &str, lines: &[String]) {
    let mut client = TcpStream::connect(addr).unwrap();
    for line in lines {
        writeln!(client, "{line}").unwrap();
    }
}

#[test]
fn the_stream_processor_refuses_deep_lines_and_keeps_serving() {
    let (mut child, stdout, stderr) = start(
        "stream_processing",
        &["--source", "tcp://127.0.0.1:0", "--json", "--idle", "60s"],
    );
    let addr = listening_addr(&stderr);
    let event =
        |ts: u64, extra: String| format!(r#"{{"ts":{ts},"sensor":"a","value":1,"x":{extra}}}"#);
    // The event object is one level, so MAX_DEPTH - 1 arrays inside it.
    send_lines(
        &addr,
        &[
            event(1, arrays(MAX_DEPTH - 1)),
            event(2, arrays(MAX_DEPTH)),
            event(3, arrays(127)),
            event(4, "0".into()),
        ],
    );
    let ended = line_with(&stderr, "connection from");
    assert!(
        ended.ends_with("(closed by the client): 4 lines, 2 malformed"),
        "{ended}"
    );
    // Still serving: a new client is heard.
    send_lines(&addr, &[event(5, "0".into())]);
    let ended = line_with(&stderr, "connection from");
    assert!(
        ended.ends_with("(closed by the client): 1 lines, 0 malformed"),
        "{ended}"
    );
    interrupt(&child);
    let status = wait_bounded(&mut child, LIMIT);
    assert!(status.success(), "exit status {status}");
    let out: Vec<Value> = stdout
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let (totals, windows) = out.split_last().unwrap();
    assert_eq!(totals["totals"]["events"], 3, "{totals}");
    assert_eq!(totals["totals"]["malformed"], 2, "{totals}");
    let counted: u64 = windows
        .iter()
        .map(|w| w["keys"]["a"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 3, "every event taken is in a window: {windows:?}");
}

#[test]
fn the_pipeline_rejects_deep_records_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("clean.jsonl");
    let (mut child, stdout, stderr) = start(
        "pipeline_data_processing",
        &[
            "--input",
            "tcp://127.0.0.1:0",
            "--format",
            "jsonl",
            "--output",
            output.to_str().unwrap(),
            "--json",
        ],
    );
    let addr = listening_addr(&stderr);
    let record = |id: &str, amount: &str, extra: &str| {
        format!(
            r#"{{"order_id":"{id}","customer":"c","country":"DE","amount":{amount},"currency":"EUR","ordered_at":"2024-03-01","x":{extra}}}"#
        )
    };
    let levels = MAX_DEPTH - 1; // inside the record's own level
    send_lines(
        &addr,
        &[
            record("A-1", "1.5", "0"),
            record("A-2", "2.5", &arrays(levels)), // extra field at the limit: kept
            record("A-3", &arrays(levels), "0"),   // parsed at the limit, not a number
            record("A-4", &arrays(levels + 1), "0"),
            record("A-5", &arrays(127), "0"),
            record("A-6", "6.5", &arrays(levels + 1)),
            record("A-7", "7.5", "0"),
        ],
    );
    let status = wait_bounded(&mut child, LIMIT);
    let summary: Value = serde_json::from_str(&line_with(&stdout, "{")).unwrap();
    assert!(status.success(), "exit status {status}: {summary}");
    assert_eq!(
        (&summary["read"], &summary["written"], &summary["rejected"]),
        (&json!(7), &json!(3), &json!(4)),
        "{summary}"
    );
    assert_eq!(summary["conserved"], true);
    let written = std::fs::read_to_string(&output).unwrap();
    let ids: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["order_id"].clone())
        .collect();
    assert_eq!(ids, [json!("A-1"), json!("A-2"), json!("A-7")]);
    let rejects = std::fs::read_to_string(dir.path().join("clean.jsonl.rejects.csv")).unwrap();
    let too_deep = "invalid JSON: JSON nested deeper than 8 levels";
    let lines: Vec<&str> = rejects.lines().collect();
    assert!(
        lines[1].starts_with("3,amount is not a number: [[[[[[[]]]]]]]"),
        "{rejects}"
    );
    for (row, line) in lines[2..].iter().zip([4, 5, 6]) {
        assert!(row.starts_with(&format!("{line},{too_deep}")), "{rejects}");
    }
    assert_eq!(lines.len(), 5, "{rejects}");
}

/// A backend answering every request with `body`, on a thread of this test.
fn backend(body: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn scatter_gather_fails_a_backend_whose_answer_is_too_deep_and_merges_the_rest() {
    let answer = |shop: &str, extra: String| {
        format!(
            r#"{{"offers":[{{"sku":"s-{shop}","shop":"{shop}","price_cents":5}}],"x":{extra}}}"#
        )
    };
    let addrs = [
        backend(answer("at-limit", arrays(MAX_DEPTH - 1))), // the answer is level 1
        backend(answer("past", arrays(MAX_DEPTH))),
        backend(answer("deepest", arrays(127))),
        backend(answer("plain", "0".into())),
    ];
    let list = addrs.map(|a| a.to_string()).join(",");
    let name = "scatter_gather";
    let mut command = Command::new(build_examples([name]).join(name));
    let out = output_bounded(
        command.args(["--backends", &list, "--timeout", "5s", "--json"]),
        LIMIT,
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("overflow"),
        "{out:?}"
    );
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["answered"], 2, "{report}");
    let backends = report["backends"].as_array().unwrap();
    let status = |i: usize| {
        (
            backends[i]["status"].as_str().unwrap(),
            backends[i]["reason"].as_str(),
        )
    };
    assert_eq!(status(0).0, "answered");
    assert_eq!(status(3).0, "answered");
    for past in [1, 2] {
        let (status, reason) = status(past);
        assert_eq!(status, "failed");
        assert!(
            reason
                .unwrap()
                .starts_with("JSON nested deeper than 8 levels"),
            "{report}"
        );
    }
    let skus: Vec<&str> = report["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["s-at-limit", "s-plain"]);
}

/// A backend that answers `/search?q=WORD` with the body `answer(WORD)`,
/// on a plain thread with std sockets (this is the test, not a may worker).
fn word_backend(answer: fn(&str) -> String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            let word = head.split(['=', ' ']).nth(2).unwrap_or_default();
            let body = answer(word);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Nested `levels` deep in all: the answer, its offers, one offer, then
/// objects inside that offer.
fn nested_answer(levels: usize) -> String {
    let inner = levels.saturating_sub(3);
    let deep = format!("{}1{}", r#"{"k":"#.repeat(inner), "}".repeat(inner));
    format!(
        r#"{{"backend":"odd","offers":[{{"sku":"a","shop":"odd","price_cents":1,"x":{deep}}}]}}"#
    )
}

#[test]
fn the_type_ahead_server_fails_a_backend_answer_too_deep_or_too_big_and_keeps_serving() {
    let odd = word_backend(|word| match word {
        "limit" => nested_answer(MAX_DEPTH),
        "deeper" => nested_answer(MAX_DEPTH + 1),
        "serde" => nested_answer(127),
        _ => format!(
            r#"{{"backend":"odd","offers":[],"pad":"{}"}}"#,
            "x".repeat(1 << 20)
        ),
    });
    let backends = odd.to_string();
    let (mut child, stdout, _stderr) = start(
        "reactive_pipeline",
        &[
            "--listen",
            "127.0.0.1:0",
            "--backends",
            &backends,
            "--json",
            "--debounce",
            "10ms",
        ],
    );
    let addr = line_with(&stdout, "listening on ")["listening on ".len()..].to_owned();
    let keys = TcpStream::connect(&addr).unwrap();
    keys.set_read_timeout(Some(LIMIT)).unwrap();
    let mut screen = BufReader::new(keys.try_clone().unwrap());
    let mut keys = keys;
    let mut next = || {
        let mut line = String::new();
        screen
            .read_line(&mut line)
            .expect("a line within the bound");
        assert!(!line.contains("overflow"), "{line}");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let mut answer = |query: &str| {
        writeln!(keys, "{query}").unwrap();
        assert_eq!(next()["searching"], query);
        let answer = next();
        assert_eq!(next()["done"], query, "then the summary");
        answer
    };
    assert_eq!(answer("limit")["offers"][0]["sku"], "a");
    for deep in ["deeper", "serde"] {
        let refused = answer(deep);
        let why = refused["failed"].as_str().unwrap();
        assert!(
            why.starts_with("JSON nested deeper than 8 levels"),
            "{refused}"
        );
    }
    let huge = answer("huge");
    assert!(
        huge["failed"]
            .as_str()
            .unwrap()
            .contains("over the limit of 1048576"),
        "{huge}"
    );
    assert_eq!(answer("limit")["backend"], "odd", "it goes on serving");
    interrupt(&child);
    let status = wait_bounded(&mut child, LIMIT);
    assert!(status.success(), "the server exited with {status}");
}

/// The crawler's worst page for a fetcher's stack, over HTTPS and gzip:
/// a robots.txt of 500 KiB of rules, and a home page whose one link comes
/// before 10,000 nested `div`s (as deep as the crawler's parser memory
/// admits). A std-thread TLS server with a test CA serves them; the
/// crawler trusts it with `--ca-file`. The crawler's `STACK_BYTES` names
/// what its fetchers used here, debug and release.
fn worst_case_site(ca: &may_patterns::tls::TestCa) -> SocketAddr {
    use flate2::{write::GzEncoder, Compression};
    let config = may_patterns::tls::server_config(&ca.issue(&["127.0.0.1"])).unwrap();
    let gzip = |bytes: &[u8]| {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    let mut robots = b"User-agent: *\n".to_vec();
    for i in 0.. {
        if robots.len() >= 500 * 1024 {
            break;
        }
        robots.extend_from_slice(format!("Disallow: /dir{i}/\n").as_bytes());
    }
    let deep = format!(
        "<html><head><title>deep</title></head><body><a href=\"/leaf.html\">leaf</a>{}{}</body></html>",
        "<div>".repeat(10_000),
        "</div>".repeat(10_000)
    );
    let pages = std::sync::Arc::new([
        ("/robots.txt", "text/plain", gzip(&robots)),
        ("/", "text/html", gzip(deep.as_bytes())),
        ("/leaf.html", "text/html", gzip(b"<title>leaf</title>")),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, pages) = (config.clone(), pages.clone());
            std::thread::spawn(move || {
                let tls = rustls::ServerConnection::new(config).unwrap();
                let mut stream = BufReader::new(rustls::StreamOwned::new(tls, tcp));
                let mut request_line = String::new();
                if stream.read_line(&mut request_line).is_err() {
                    return; // a handshake the client gave up on
                }
                let mut line = String::new();
                while stream.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split(' ').nth(1).unwrap_or("/");
                let head = match pages.iter().find(|(p, _, _)| *p == path) {
                    Some((_, kind, body)) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                };
                let body = pages
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map_or(&[][..], |(_, _, b)| b);
                let stream = stream.get_mut();
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
                stream.conn.send_close_notify();
                let _ = stream.flush();
            });
        }
    });
    addr
}

#[test]
fn the_crawlers_fetchers_survive_its_worst_page_over_https_and_gzip() {
    let ca = may_patterns::tls::TestCa::new("nesting test CA");
    let addr = worst_case_site(&ca);
    let dir = tempfile::tempdir().unwrap();
    let (pem, out) = (dir.path().join("ca.pem"), dir.path().join("crawl.jsonl"));
    std::fs::write(&pem, ca.cert_pem()).unwrap();
    let seed = format!("https://127.0.0.1:{}/", addr.port());
    let output = output_bounded(
        Command::new(build_examples(["web_crawler"]).join("web_crawler"))
            .args([
                "--ca-file",
                pem.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--checkpoint", dir.path().join("ckpt").to_str().unwrap()])
            .args([
                "--delay",
                "1ms",
                "--depth",
                "1",
                "--max-bytes",
                "8388608",
                "--json",
                &seed,
            ]),
        LIMIT,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        !format!("{stdout}{stderr}").contains("overflow"),
        "{stdout}\n{stderr}"
    );
    let records: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let status_of = |path: &str| {
        let url = format!("{seed}{}", path.trim_start_matches('/'));
        records
            .iter()
            .find(|r| r["url"] == url)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status_of("/"), Some(json!(200)), "{records:?}");
    assert_eq!(status_of("/leaf.html"), Some(json!(200)), "{records:?}");
}

/// The HTTP client's own margin: its deepest fetch (a refused TLS
/// handshake, then a TLS handshake, a redirect and a chunked gzip body) on
/// a coroutine of exactly `client::STACK_SIZE`, in this build (debug or
/// release). A std-thread TLS server with a test CA answers on loopback.
#[test]
fn the_http_clients_deepest_fetch_fits_its_stack_size() {
    use may_patterns::http::client::{Client, ClientConfig, FetchErrorKind, Resolve, STACK_SIZE};
    use may_patterns::tls::{self, TestCa};

    let ca = TestCa::new("client stack CA");
    let config = tls::server_config(&ca.issue(&["a.test"])).unwrap();
    let page = b"<p><a href=/x>x</a></p>".repeat(4000);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&page).unwrap();
    let gzip = gzip.finish().unwrap();
    let mut answer =
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in gzip.chunks(1000) {
        answer.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        answer.extend_from_slice(chunk);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"0\r\n\r\n");
    let answer = std::sync::Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, answer) = (config.clone(), answer.clone());
            std::thread::spawn(move || {
                let tls = rustls::ServerConnection::new(config).unwrap();
                let mut stream = BufReader::new(rustls::StreamOwned::new(tls, tcp));
                loop {
                    let mut head = String::new();
                    while !head.ends_with("\r\n\r\n") {
                        if stream.read_line(&mut head).unwrap_or(0) == 0 {
                            return; // the client left (or refused the handshake)
                        }
                    }
                    let reply = match head.starts_with("GET /moved ") {
                        true => {
                            &b"HTTP/1.1 302 Found\r\nLocation: /page\r\nContent-Length: 0\r\n\r\n"[..]
                        }
                        false => &answer[..],
                    };
                    let _ = stream.get_mut().write_all(reply);
                    let _ = stream.get_mut().flush();
                }
            });
        }
    });
    let table = std::collections::HashMap::from([(format!("a.test:{}", addr.port()), addr)]);
    let client = |roots| {
        Client::new(ClientConfig {
            tls: tls::client_config(roots),
            resolve: Resolve::Static(table.clone()),
            ..Default::default()
        })
    };
    let (trusting, stranger) = (client(ca.roots()), client(TestCa::new("stranger").roots()));
    let url = url::Url::parse(&format!("https://a.test:{}/moved", addr.port())).unwrap();
    may_patterns::runtime::configure_for_tests();
    let words = STACK_SIZE / std::mem::size_of::<usize>();
    let builder = may::coroutine::Builder::new().stack_size(words);
    let fetched = may::go!(builder, move || {
        let refused = stranger.get(&url).unwrap_err();
        assert_eq!(refused.kind, FetchErrorKind::Tls, "{refused}");
        trusting
            .get(&url)
            .map(|page| (page.redirects.len(), page.body))
    })
    .unwrap()
    .join()
    .expect("the fetch ran to its end on STACK_SIZE bytes");
    assert_eq!(fetched.unwrap(), (1, page));
}
