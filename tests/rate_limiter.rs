//! End-to-end: the `rate_limiter` gateway as a user runs it, in front of its
//! demo upstream or a `search_backend` process, driven by curl and, for ten
//! seconds, by wrk.
//!
//! `.ci/run` installs curl and wrk (Debian packages `curl`, `wrk`); without
//! them the tests that need them fail and say so.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn examples() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["rate_limiter", "search_backend"]))
}

/// A running gateway, killed if a test fails before stopping it.
struct Gateway {
    child: Child,
    addr: String,
    stdout: Receiver<String>,
}

impl Gateway {
    /// Start `rate_limiter` on an ephemeral port with `args`; returns once
    /// it has printed the address it listens on.
    fn start(args: &[&str]) -> Gateway {
        let mut command = Command::new(examples().join("rate_limiter"));
        command
            .args(["--listen", "127.0.0.1:0", "--json"])
            .args(args);
        let (child, stdout, stderr) = support::spawn_with_lines(&mut command);
        let first = stdout
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "no banner; stderr: {:?}",
                    stderr.try_iter().collect::<Vec<_>>()
                )
            });
        let addr = first
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .trim_end_matches(',')
            .to_owned();
        Gateway {
            child,
            addr,
            stdout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Ctrl-C, then the JSON summary it prints on the way out.
    fn stop(mut self) -> serde_json::Value {
        support::interrupt(&self.child);
        let status = support::wait_bounded(&mut self.child, Duration::from_secs(20));
        assert!(status.success(), "{status:?}");
        let line = self
            .stdout
            .recv_timeout(Duration::from_secs(5))
            .expect("a summary line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One response as curl saw it: status and headers (names lower-cased).
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name}: {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {self:?}"))
    }
}

fn curl_command() -> Command {
    let mut command = Command::new("curl");
    command.args(["--silent", "--show-error", "--include", "--max-time", "10"]);
    command
}

/// `curl -i` with `extra` flags; one response.
fn curl(url: &str, extra: &[&str]) -> Seen {
    let out = support::output_bounded(curl_command().args(extra).arg(url), Duration::from_secs(20));
    assert!(
        out.status.success(),
        "curl (Debian package curl) must be installed; .ci/run installs it: {out:?}"
    );
    parse_response(&String::from_utf8_lossy(&out.stdout))
}

fn parse_response(text: &str) -> Seen {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Seen {
        status,
        headers,
        body: body.to_owned(),
    }
}

const SEARCH: &str = "/search?q=lamp";

#[test]
fn responses_carry_the_limit_and_a_retry_after_the_wait_is_admitted() {
    // One request per 3 s: coarse enough that a loaded machine cannot
    // blur "one second early" and "on time".
    let gateway = Gateway::start(&["--demo", "--rate", "1", "--period", "3s", "--burst", "1"]);
    let url = gateway.url(SEARCH);

    let first = curl(&url, &[]);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        first.body.contains("\"offers\""),
        "the upstream's body: {first:?}"
    );
    assert_eq!(first.number("ratelimit-limit"), 1);
    assert_eq!(first.number("ratelimit-remaining"), 0);
    assert_eq!(first.number("ratelimit-reset"), 3);
    assert_eq!(first.header("retry-after"), None);

    let denied = curl(&url, &[]);
    let denied_at = Instant::now();
    assert_eq!(denied.status, 429, "{denied:?}");
    assert_eq!(denied.number("ratelimit-remaining"), 0);
    let retry_after = denied.number("retry-after");
    assert!((2..=3).contains(&retry_after), "{denied:?}");
    assert!(denied.body.contains("retry after"), "{denied:?}");

    // A second before Retry-After runs out: still too early.
    std::thread::sleep(Duration::from_secs(retry_after - 1));
    let early = curl(&url, &[]);
    assert_eq!(early.status, 429, "one second early: {early:?}");
    // Retry-After counted from the 429: admitted.
    let due = denied_at + Duration::from_secs(retry_after) + Duration::from_millis(50);
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
    let on_time = curl(&url, &[]);
    assert_eq!(on_time.status, 200, "after Retry-After: {on_time:?}");

    let summary = gateway.stop();
    assert_eq!(summary["admitted"], 2, "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");
    assert_eq!(
        summary["upstream_answered"], 2,
        "counted at the upstream: {summary}"
    );
    assert_eq!(summary["keys"], 1, "{summary}");
}

#[test]
fn a_header_key_limits_each_api_key_and_a_request_without_one_gets_400() {
    let gateway = Gateway::start(&[
        "--demo",
        "--key",
        "header:X-Api-Key",
        "--rate",
        "1",
        "--period",
        "10s",
        "--burst",
        "1",
    ]);
    let url = gateway.url(SEARCH);
    let as_key = |key: &str| curl(&url, &["--header", &format!("X-Api-Key: {key}")]).status;
    assert_eq!(as_key("alice"), 200);
    assert_eq!(as_key("alice"), 429, "alice's one request is spent");
    assert_eq!(as_key("bob"), 200, "bob has his own limit");
    let anonymous = curl(&url, &[]);
    assert_eq!(anonymous.status, 400, "{anonymous:?}");
    assert!(
        anonymous.body.contains("missing the X-Api-Key header"),
        "{anonymous:?}"
    );
    let summary = gateway.stop();
    assert_eq!(summary["keys"], 2, "{summary}");
    assert_eq!(summary["bad_requests"], 1, "{summary}");
}

#[test]
fn the_leaky_bucket_delays_instead_of_rejecting() {
    // 10 per second, a queue 5 deep: five requests in a row all pass, each
    // held until 100 ms after the one before.
    let gateway = Gateway::start(&[
        "--demo",
        "--algorithm",
        "leaky-bucket",
        "--rate",
        "10",
        "--burst",
        "5",
    ]);
    let url = gateway.url(SEARCH);
    let started = Instant::now();
    // One curl, one kept-alive connection, five requests one after another.
    let mut curl = Command::new("curl");
    curl.args(["--silent", "--write-out", "%{http_code}\\n"]);
    for _ in 0..5 {
        curl.args(["--output", "/dev/null", &url]);
    }
    let out = support::output_bounded(&mut curl, Duration::from_secs(20));
    let took = started.elapsed();
    let codes = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(codes.lines().collect::<Vec<_>>(), ["200"; 5], "{out:?}");
    assert!(
        took >= Duration::from_millis(400),
        "smoothed to 10/s: {took:?}"
    );
    let summary = gateway.stop();
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert!(summary["queued"].as_u64().unwrap() >= 4, "{summary}");
}

#[test]
fn requests_it_cannot_forward_are_refused_with_a_reason() {
    let gateway = Gateway::start(&["--demo"]);
    let url = gateway.url(SEARCH);
    let chunked = curl(
        &url,
        &[
            "--header",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "hello",
        ],
    );
    // A chunked body is read (http.rs decodes it) and forwarded with a
    // Content-Length; another transfer coding is refused.
    assert_eq!(chunked.status, 200, "{chunked:?}");
    let gzipped = curl(
        &url,
        &[
            "--header",
            "Transfer-Encoding: gzip",
            "--data-binary",
            "hello",
        ],
    );
    assert_eq!(gzipped.status, 411, "{gzipped:?}");
    assert!(gzipped.body.contains("chunked"), "{gzipped:?}");
    let head = curl(&url, &["--head"]);
    assert_eq!(head.status, 501, "{head:?}");
    let summary = gateway.stop();
    assert_eq!(summary["bad_requests"], 2, "{summary}");
    assert_eq!(summary["admitted"], 1, "{summary}");
}

/// A port nothing listens on: bound, then released.
fn dead_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn run(args: &[&str]) -> Output {
    let mut command = Command::new(examples().join("rate_limiter"));
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    support::output_bounded(&mut command, Duration::from_secs(30))
}

#[test]
fn an_upstream_down_at_start_is_an_error_unless_allowed() {
    let dead = dead_port();
    let out = run(&["--upstream", &dead]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the upstream {dead} is down")),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-upstream-down"), "{stderr}");

    let gateway = Gateway::start(&["--upstream", &dead, "--allow-upstream-down"]);
    let seen = curl(&gateway.url(SEARCH), &[]);
    assert_eq!(seen.status, 502, "{seen:?}");
    assert!(
        seen.body.contains("cannot connect to the upstream"),
        "{seen:?}"
    );
    assert!(seen.header("ratelimit-remaining").is_some(), "{seen:?}");
    let summary = gateway.stop();
    assert_eq!(summary["upstream_errors"], 1, "{summary}");
}

/// A `search_backend` process, killed if a test fails before stopping it.
struct Backend {
    child: Child,
    addr: String,
}

impl Backend {
    fn start(args: &[&str]) -> Backend {
        let mut command = Command::new(examples().join("search_backend"));
        let (child, lines, _) = support::spawn_with_lines(command.args(args));
        let banner = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("backend banner");
        let addr = banner.rsplit(' ').next().unwrap().to_owned();
        Backend { child, addr }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_upstream_that_dies_mid_run_gets_502_with_the_reason() {
    let mut backend = Backend::start(&["--latency", "0ms"]);
    let upstream = backend.addr.clone();
    let gateway = Gateway::start(&["--upstream", &upstream, "--rate", "100", "--burst", "100"]);
    let url = gateway.url(SEARCH);
    assert_eq!(curl(&url, &[]).status, 200);
    support::interrupt(&backend.child);
    support::wait_bounded(&mut backend.child, Duration::from_secs(10));
    let seen = curl(&url, &[]);
    assert_eq!(seen.status, 502, "{seen:?}");
    assert!(
        seen.body.contains(&format!("upstream {upstream}")),
        "{seen:?}"
    );
    let summary = gateway.stop();
    assert_eq!(
        (
            summary["admitted"].as_u64(),
            summary["upstream_errors"].as_u64()
        ),
        (Some(2), Some(1))
    );
}

/// Connect with a plain socket, send `bytes`, and read until the gateway
/// closes the connection (bounded): what it answered, and how long it took.
fn send_and_read(addr: &str, bytes: &[u8]) -> (String, Duration) {
    use std::io::Read;
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    socket.write_all(bytes).unwrap();
    let mut answer = String::new();
    socket
        .read_to_string(&mut answer)
        .expect("closed within 10 s");
    (answer, started.elapsed())
}

#[test]
fn a_request_cut_short_by_a_half_close_is_told_why() {
    use std::io::Read;
    let gateway = Gateway::start(&["--demo"]);
    // What `printf 'GET / HTTP/1.1\r\n' | nc HOST PORT` sends: part of a
    // head, then end-of-file on the client's sending side.
    let mut socket = std::net::TcpStream::connect(&gateway.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"GET /search?q=x HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    socket
        .read_to_string(&mut answer)
        .expect("closed within 10 s");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(
        answer.contains("in the middle of a message head"),
        "says what was wrong: {answer:?}"
    );
    let summary = gateway.stop();
    assert_eq!(summary["bad_requests"], 1, "{summary}");
}

#[test]
fn slow_clients_and_a_hanging_upstream_meet_their_deadlines() {
    let backend = Backend::start(&["--hang"]);
    let gateway = Gateway::start(&[
        "--upstream",
        &backend.addr,
        "--upstream-timeout",
        "300ms",
        "--header-timeout",
        "300ms",
        "--idle-timeout",
        "600ms",
    ]);
    let hung = curl(&gateway.url(SEARCH), &[]);
    assert_eq!(hung.status, 504, "{hung:?}");
    assert!(hung.body.contains("no answer within 300ms"), "{hung:?}");

    let (answer, took) = send_and_read(&gateway.addr, b"GET /search?q=x HTTP/1.1\r\nHost: a\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "an unfinished head: {answer:?}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");

    let (answer, took) = send_and_read(&gateway.addr, b"");
    assert_eq!(answer, "", "an idle client is closed without a word");
    assert!(took >= Duration::from_millis(600), "{took:?}");

    let summary = gateway.stop();
    assert_eq!(summary["upstream_timeouts"], 1, "{summary}");
    assert_eq!(summary["client_timeouts"], 2, "{summary}");
    assert_eq!(summary["bad_requests"], 1, "the 408: {summary}");
}

#[test]
fn connections_over_the_cap_get_503() {
    let gateway = Gateway::start(&["--demo", "--max-connections", "2"]);
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&gateway.addr).unwrap())
        .collect();
    // The gateway counts a connection once it has accepted it: wait until
    // a request on a held one is answered, so both are in.
    let mut first = &held[1];
    first
        .write_all(b"GET /search?q=x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut reply = std::io::BufReader::new(first);
    let mut status = String::new();
    std::io::BufRead::read_line(&mut reply, &mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let third = curl(&gateway.url(SEARCH), &[]);
    assert_eq!(third.status, 503, "{third:?}");
    drop(held);
    let summary = gateway.stop();
    assert_eq!(summary["refused_connections"], 1, "{summary}");
}

#[test]
fn bad_command_lines_are_refused_with_one_sentence() {
    for (args, needle) in [
        (
            &["--demo", "--rate", "0"][..],
            "must be a whole number of at least 1",
        ),
        (
            &["--demo", "--rate", "-3"],
            "must be a whole number of at least 1",
        ),
        (&["--demo", "--burst", "0"], "the cost of one request"),
        (&["--demo", "--algorithm", "magic"], "leaky-bucket"),
        (
            &["--demo", "--key", "header:Bad Name"],
            "is not a header name",
        ),
        (&["--demo", "--period", "0s"], "must be longer than 0"),
        (&["--upstream", "localhost:80"], "invalid socket address"),
        (&["--rate", "5"], "--upstream"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// wrk's Lua hooks: count every status, and check that every 429 carries
/// `Retry-After` equal to the one correct value (passed as the script's
/// argument) and that every response carries `RateLimit-Remaining`.
const WRK_SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  expected_retry_after = tonumber(args[1])
  counts, bad_retry_after, no_fields = {}, 0, 0
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if headers["RateLimit-Remaining"] == nil then no_fields = no_fields + 1 end
  if status == 429 and tonumber(headers["Retry-After"]) ~= expected_retry_after then
    bad_retry_after = bad_retry_after + 1
  end
end
function done(summary, latency, requests)
  local total, bad, missing = {}, 0, 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do total[status] = (total[status] or 0) + n end
    bad = bad + t:get("bad_retry_after")
    missing = missing + t:get("no_fields")
  end
  for status, n in pairs(total) do io.write(string.format("status %d %d\n", status, n)) end
  io.write(string.format("bad_retry_after %d\nno_fields %d\n", bad, missing))
end
"#;

#[test]
fn under_wrk_for_ten_seconds_the_admitted_rate_is_the_configured_one() {
    const RATE: u64 = 500;
    // Half a second's worth: a stall of the machine shorter than that (a
    // busy CI box) costs no admission, since GCRA keeps up to a burst.
    const BURST: u64 = 250;
    let gateway = Gateway::start(&[
        "--demo",
        "--rate",
        &RATE.to_string(),
        "--burst",
        &BURST.to_string(),
    ]);
    let mut script = tempfile::NamedTempFile::new().unwrap();
    script.write_all(WRK_SCRIPT.as_bytes()).unwrap();
    let script_path = script.path().to_str().unwrap().to_owned();
    // GCRA at 500/s denies for at most one emission interval (2 ms):
    // rounded up to whole seconds, every Retry-After must say 1.
    let mut wrk = Command::new("wrk");
    wrk.args(["-t2", "-c50", "-d10s", "--latency", "-s", &script_path])
        .arg(gateway.url(SEARCH))
        .args(["--", "1"]);
    if let Err(e) = Command::new("wrk").arg("--version").output() {
        panic!("wrk (Debian package wrk) must be installed; .ci/run installs it: {e}");
    }
    let out = support::output_bounded(&mut wrk, Duration::from_secs(60));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let mut statuses = BTreeMap::new();
    let mut value_of = BTreeMap::new();
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["status", code, n] => {
                statuses.insert(code.parse::<u16>().unwrap(), n.parse::<u64>().unwrap());
            }
            [name @ ("bad_retry_after" | "no_fields"), n] => {
                value_of.insert(name, n.parse::<u64>().unwrap());
            }
            _ => {}
        }
    }
    let summary = gateway.stop();
    println!("{report}\n{summary}");

    let codes: Vec<u16> = statuses.keys().copied().collect();
    assert_eq!(codes, [200, 429], "only admitted and rejected: {report}");
    assert_eq!(
        value_of["bad_retry_after"], 0,
        "every 429 says Retry-After: 1: {report}"
    );
    assert_eq!(
        value_of["no_fields"], 0,
        "every response has the fields: {report}"
    );

    let admitted = summary["admitted"].as_u64().unwrap();
    let answered = summary["upstream_answered"].as_u64().unwrap();
    assert_eq!(
        answered, admitted,
        "the upstream answered every admitted request: {summary}"
    );
    assert_eq!(summary["upstream_errors"], 0, "{summary}");
    let span = summary["decision_span_s"].as_f64().unwrap();
    assert!((9.0..12.0).contains(&span), "wrk ran for 10 s: {summary}");
    let expected = BURST as f64 + RATE as f64 * span;
    let error = (admitted as f64 - expected).abs() / expected;
    assert!(
        error <= 0.02,
        "admitted {admitted} in {span:.2}s, expected {expected:.0} ({:.2}% off): {summary}",
        error * 100.0
    );
    let rejected = summary["rejected"].as_u64().unwrap();
    assert!(
        rejected > admitted,
        "wrk offered more than twice the limit: {summary}"
    );
    // wrk stops counting at 10 s; at most its 50 connections' last
    // requests were still in flight.
    for (seen, counted) in [(statuses[&200], admitted), (statuses[&429], rejected)] {
        assert!(
            seen <= counted && counted - seen <= 50,
            "wrk {seen} vs gateway {counted}"
        );
    }
}
