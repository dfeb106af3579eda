//! End-to-end: the finished `reactive_pipeline` program, started with its
//! command line, typed into with `nc` as a user would and with a Rust
//! client where a test needs exact timing, against search backends run by
//! this test (so it can count what each backend saw). `.ci/run` installs
//! `nc` (netcat-openbsd); without it the first test fails and says so.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::runtime::configure_for_tests;
use serde_json::Value;

/// How long a test waits for a line or an exit before calling it stuck.
const STUCK: Duration = Duration::from_secs(20);

fn program() -> std::path::PathBuf {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["reactive_pipeline"]))
        .join("reactive_pipeline")
}

/// A running server: its port, stdout lines after "listening on", and the
/// process, killed if the test fails before stopping it.
struct Server {
    child: Child,
    stdout: Receiver<String>,
    addr: SocketAddr,
}

impl Server {
    fn start(backends: &[SocketAddr], extra: &[&str]) -> Server {
        let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
        let mut command = Command::new(program());
        command
            .args(["--listen", "127.0.0.1:0", "--backends", &list.join(",")])
            .args(extra);
        let (child, stdout, _stderr) = support::spawn_with_lines(&mut command);
        let first = stdout.recv_timeout(STUCK).expect("a first line");
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
        Server {
            child,
            stdout,
            addr,
        }
    }

    /// Ctrl-C; the summary it prints (as JSON: the tests pass `--json`).
    fn stop(mut self) -> Value {
        support::interrupt(&self.child);
        let status = support::wait_bounded(&mut self.child, STUCK);
        assert!(status.success(), "the server exited with {status}");
        let last = self.stdout.iter().last().expect("a summary line");
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn backend(name: &str, latency_ms: u64) -> Backend {
    configure_for_tests();
    Backend::start(BackendConfig::new(name, Duration::from_millis(latency_ms))).unwrap()
}

/// A typist with exact timing: lines go out when the test says, and every
/// line that comes back is parsed as JSON.
struct Client {
    keys: TcpStream,
    screen: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let keys = TcpStream::connect(addr).unwrap();
        keys.set_read_timeout(Some(STUCK)).unwrap();
        let screen = BufReader::new(keys.try_clone().unwrap());
        Client { keys, screen }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.keys, "{line}").unwrap();
    }

    /// The next line, or `None` once the server has closed the connection.
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self
            .screen
            .read_line(&mut line)
            .expect("a line within the bound")
        {
            0 => None,
            _ => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))),
        }
    }

    /// Every line until the server closes the connection.
    fn rest(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

fn eventually(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < STUCK, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn nc_types_a_query_and_sees_every_answer_and_the_summary() {
    let shops = [backend("alpha", 5), backend("beta", 20)];
    let server = Server::start(&[shops[0].addr, shops[1].addr], &["--json"]);
    // -N: shut the socket's sending side at the end of the input, as a
    // user's Ctrl-D would; the server answers, then closes.
    let mut nc = Command::new("nc")
        .args([
            "-N",
            "-w",
            "10",
            "127.0.0.1",
            &server.addr.port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("`nc` (Debian package netcat-openbsd) must be installed; .ci/run installs it");
    nc.stdin
        .take()
        .unwrap()
        .write_all(b"l\nla\nlam\nlamp\n")
        .unwrap();
    assert!(support::wait_bounded(&mut nc, STUCK).success(), "nc failed");
    let mut seen = String::new();
    nc.stdout.take().unwrap().read_to_string(&mut seen).unwrap();
    let lines: Vec<Value> = seen
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Four keystrokes at once: the debounce lets only the last through.
    assert_eq!(lines[0]["searching"], "lamp", "{seen}");
    let mut shops_seen: Vec<&str> = lines[1..3]
        .iter()
        .map(|l| l["backend"].as_str().unwrap())
        .collect();
    shops_seen.sort_unstable();
    assert_eq!(shops_seen, ["alpha", "beta"], "{seen}");
    assert_eq!(lines[3]["done"], "lamp", "{seen}");
    assert_eq!(lines[3]["answered"], 2);
    assert_eq!(lines.len(), 4, "{seen}");
    let summary = server.stop();
    assert_eq!(summary["lines"], 4);
    assert_eq!(summary["debounced"], 1);
    assert_eq!(summary["searched"], 1);
}

#[test]
fn a_newer_query_cancels_the_stale_search_and_its_answer_never_arrives() {
    configure_for_tests();
    let fast = backend("fast", 2);
    // The slow backend's first request (the stale query's) would take 60 s.
    let mut config = BackendConfig::new("slow", Duration::from_millis(2));
    config.script = vec![Duration::from_secs(60), Duration::from_millis(2)];
    let slow = Backend::start(config).unwrap();
    // A call's own deadline far beyond the test's bound: only a cancel can
    // end the stale call in time.
    let server = Server::start(
        &[fast.addr, slow.addr],
        &["--json", "--debounce", "30ms", "--timeout", "60s"],
    );
    let mut client = Client::connect(server.addr);
    client.type_line("desk");
    assert_eq!(client.next().unwrap()["searching"], "desk");
    let answer = client.next().unwrap();
    assert_eq!(
        (&answer["query"], &answer["backend"]),
        (&"desk".into(), &"fast".into())
    );
    eventually("the slow backend has the stale request", || {
        slow.stats.requests.load(Ordering::SeqCst) == 1
    });
    let typed = Instant::now();
    client.type_line("lamp");
    let superseded = client.next().unwrap();
    assert_eq!(superseded["superseded"], "desk", "{superseded}");
    assert_eq!(superseded["answered"], 1);
    eventually("the slow backend sees its client leave", || {
        slow.stats.client_gone.load(Ordering::SeqCst) == 1
    });
    assert!(
        typed.elapsed() < Duration::from_secs(5),
        "cancelled, not waited out"
    );
    let _ = client.keys.shutdown(std::net::Shutdown::Write);
    let rest = client.rest();
    assert_eq!(rest[0]["searching"], "lamp");
    assert!(
        rest.iter().all(|l| l["query"] != "desk"),
        "no answer of the stale query arrives: {rest:?}"
    );
    assert_eq!(rest.last().unwrap()["done"], "lamp", "{rest:?}");
    assert_eq!(rest.last().unwrap()["answered"], 2);
    let summary = server.stop();
    assert_eq!(summary["superseded"], 1);
    assert_eq!(summary["calls_cancelled"], 1);
}

#[test]
fn a_line_longer_than_the_limit_gets_an_error_line_and_the_connection_closes() {
    let shop = backend("alpha", 1);
    let server = Server::start(&[shop.addr], &["--json", "--max-line", "16"]);
    let mut client = Client::connect(server.addr);
    client.type_line(&"x".repeat(17));
    let error = client.next().unwrap();
    assert_eq!(error["error"], "line longer than 16 bytes", "{error}");
    assert!(client.next().is_none(), "then the server closes");
    // A line of exactly the limit is fine.
    let mut client = Client::connect(server.addr);
    client.type_line(&"y".repeat(16));
    assert_eq!(client.next().unwrap()["searching"], "y".repeat(16));
    drop(client);
    let summary = server.stop();
    assert_eq!(summary["too_long"], 1);
}

#[test]
fn an_unreachable_backend_is_an_error_line_and_the_server_goes_on() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let alive = backend("alpha", 1);
    let server = Server::start(&[dead, alive.addr], &["--json"]);
    let mut client = Client::connect(server.addr);
    client.type_line("lamp");
    let _ = client.keys.shutdown(std::net::Shutdown::Write);
    let lines = client.rest();
    let failed = lines
        .iter()
        .find(|l| l["backend"] == dead.to_string())
        .unwrap();
    assert!(
        failed["failed"].as_str().unwrap().starts_with("connect: "),
        "{failed}"
    );
    let done = lines.last().unwrap();
    assert_eq!(
        (&done["done"], &done["answered"]),
        (&"lamp".into(), &1.into())
    );
    let summary = server.stop();
    assert_eq!(summary["searched"], 1);
}

#[test]
fn a_backend_slower_than_the_timeout_is_an_error_line() {
    let (fast, hung) = (backend("fast", 1), backend("hung", 60_000));
    let server = Server::start(&[fast.addr, hung.addr], &["--json", "--timeout", "300ms"]);
    let mut client = Client::connect(server.addr);
    client.type_line("lamp");
    let _ = client.keys.shutdown(std::net::Shutdown::Write);
    let lines = client.rest();
    let late = lines.iter().find(|l| l["backend"] == hung.addr.to_string());
    let late = late.unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(late["failed"], "no answer within 300ms", "{late}");
    assert!(late["ms"].as_f64().unwrap() >= 300.0, "{late}");
    assert_eq!(lines.last().unwrap()["answered"], 1);
    eventually("the hung backend sees its client leave", || {
        hung.stats.client_gone.load(Ordering::SeqCst) == 1
    });
    let summary = server.stop();
    assert_eq!(summary["calls_cancelled"], 0, "timed out, not cancelled");
}

#[test]
fn idle_clients_and_clients_over_the_cap_are_told_why_and_closed() {
    let shop = backend("alpha", 1);
    let server = Server::start(
        &[shop.addr],
        &[
            "--json",
            "--idle-timeout",
            "300ms",
            "--max-connections",
            "1",
        ],
    );
    let mut first = Client::connect(server.addr);
    first.type_line(""); // the box cleared: nothing searched, but served
    assert_eq!(first.next().unwrap()["cleared"], true);
    let mut second = Client::connect(server.addr);
    let mut refused = String::new();
    second.screen.read_line(&mut refused).unwrap();
    assert_eq!(refused, "error: 1 connections already; try later\n");
    let idle = first.next().unwrap();
    assert_eq!(idle["error"], "nothing received for 300ms", "{idle}");
    assert!(first.next().is_none());
    let summary = server.stop();
    assert_eq!(
        (&summary["rejected"], &summary["idle"]),
        (&1.into(), &1.into())
    );
}

/// A client that goes away with a line unread: its socket is closed with a
/// reset (Linux does that when unread data is left), as when a browser tab
/// is closed. Its search is cancelled, down to the backend's socket. (A
/// client that only closes its sending side, as `nc -N` does, still gets
/// its last search: the test above.)
#[test]
fn a_client_that_resets_mid_search_cancels_its_calls() {
    configure_for_tests();
    let slow = backend("slow", 60_000);
    let server = Server::start(
        &[slow.addr],
        &["--json", "--debounce", "10ms", "--timeout", "60s"],
    );
    let mut client = Client::connect(server.addr);
    client.type_line("lamp");
    eventually("the backend has the request", || {
        slow.stats.requests.load(Ordering::SeqCst) == 1
    });
    // The "searching" line was written before the call started, and is unread.
    drop(client);
    eventually("the backend sees its client leave", || {
        slow.stats.client_gone.load(Ordering::SeqCst) == 1
    });
    let summary = server.stop();
    assert_eq!(summary["calls_cancelled"], 1);
}

#[test]
fn out_of_file_descriptors_it_pauses_and_serves_again_when_clients_leave() {
    let shop = backend("alpha", 1);
    let script = format!(
        "ulimit -n 64 && exec '{}' --listen 127.0.0.1:0 --json --backends {}",
        program().display(),
        shop.addr
    );
    let (child, stdout, stderr) =
        support::spawn_with_lines(Command::new("sh").args(["-c", &script]));
    let first = stdout.recv_timeout(STUCK).expect("a first line");
    let addr: SocketAddr = first
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let server = Server {
        child,
        stdout,
        addr,
    };
    // Each served client holds 3 descriptors (its socket, the registry's
    // and the screen's clones): 40 of them need more than the 64 there are.
    let crowd: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let complaint = stderr.recv_timeout(STUCK).expect("a line on stderr");
    assert!(
        complaint.starts_with("cannot take a connection: "),
        "{complaint}"
    );
    drop(crowd);
    let mut client = Client::connect(server.addr);
    client.type_line("lamp");
    let _ = client.keys.shutdown(std::net::Shutdown::Write);
    let lines = client.rest();
    assert_eq!(lines.last().unwrap()["done"], "lamp", "{lines:?}");
    let summary = server.stop();
    assert!(summary["connections"].as_u64().unwrap() >= 2, "{summary}");
}

#[test]
fn the_demo_cancels_the_stale_search_and_drops_the_repeat() {
    let out = support::output_bounded(Command::new(program()).args(["--demo", "--json"]), STUCK);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let searched: Vec<&Value> = lines.iter().filter_map(|l| l.get("searching")).collect();
    assert_eq!(searched, ["lamp", "lamps", "desk"]);
    let shop2_lamp = lines
        .iter()
        .filter(|l| l["backend"] == "shop2" && l["query"] == "lamp");
    assert_eq!(shop2_lamp.count(), 0, "the stale answer never arrives");
    let summary = lines
        .iter()
        .find(|l| l.get("connections").is_some())
        .unwrap();
    for (counter, expected) in [
        ("lines", 10),
        ("debounced", 6),
        ("searched", 3),
        ("superseded", 1),
        ("calls_cancelled", 1),
        ("too_long", 1),
    ] {
        assert_eq!(summary[counter], expected, "{counter}: {summary}");
    }
    let shop2 = lines
        .iter()
        .find(|l| l["backend"] == "shop2" && l.get("client_gone").is_some());
    assert_eq!(
        shop2.unwrap()["client_gone"],
        1,
        "the backend saw the cancel"
    );
}

#[test]
fn bad_command_lines_exit_2_with_a_reason() {
    for (args, needle) in [
        (
            &["--debounce", "0ms", "--demo"][..],
            "must be longer than 0",
        ),
        (&["--max-line", "0", "--demo"], "must be at least 1"),
        (&["--idle-timeout", "0s", "--demo"], "must be longer than 0"),
        (&["--backends", "localhost:80"], "invalid socket address"),
        (&["--debounce", "50ms"], "--backends"),
    ] {
        let out = support::output_bounded(Command::new(program()).args(args), STUCK);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn ctrl_c_stops_a_session_whose_search_is_in_flight() {
    let slow = backend("slow", 60_000);
    let server = Server::start(&[slow.addr], &["--json", "--timeout", "60s"]);
    let mut client = Client::connect(server.addr);
    client.type_line("lamp");
    let _ = client.keys.shutdown(std::net::Shutdown::Write); // still wants the answer
    assert_eq!(client.next().unwrap()["searching"], "lamp");
    eventually("the backend has the request", || {
        slow.stats.requests.load(Ordering::SeqCst) == 1
    });
    let stopping = Instant::now();
    let summary = server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "not waited out"
    );
    assert_eq!(summary["calls_cancelled"], 1);
    assert!(client.next().is_none(), "the connection is closed");
    eventually("the backend sees its client leave", || {
        slow.stats.client_gone.load(Ordering::SeqCst) == 1
    });
}
