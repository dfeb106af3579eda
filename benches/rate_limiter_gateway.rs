//! The rate-limiting gateway against nginx's `limit_req`, the system a user
//! would otherwise put in front of a service, side by side in one run: same
//! backend (a `search_backend` process that answers at once), same load
//! (`wrk -t2 -c50 -d10s --latency`, 50 connections from one address), same
//! limit per client address.
//!
//! For each system, two runs: limited to 1,000 requests a second with a
//! burst of 500, far under what wrk offers, to see how exactly the limit
//! holds (admitted, counted by the backend itself, against burst + rate x
//! wrk's duration); and limited far above what wrk offers, so every request
//! is forwarded, to see what the proxying costs. A fresh backend per run.
//!
//! nginx's config is `benches/rate_limiter_gateway/nginx.conf`; the bench
//! fills in ports and the limit, and starts nginx itself. It needs `nginx`
//! (Debian's `nginx` or `nginx-light`) and `wrk`, and stops with a sentence
//! saying which is missing. Ports for nginx are found by binding port 0 and
//! releasing it, so another program could take one in between: the run
//! then fails, saying nginx could not start.
//!
//! `cargo bench --bench rate_limiter_gateway` rewrites
//! `book/rate_limiter/gateway.md`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::Cell;

/// 1,000 a second with a burst worth half a second: a stall of the machine
/// shorter than that costs either system no admission.
const LIMITED: (u64, u64) = (1_000, 500);
/// A limit wrk cannot reach: every request is forwarded.
const UNLIMITED: (u64, u64) = (10_000_000, 10_000_000);
const PATH: &str = "/search?q=lamp";
/// What the table's cells are (the bench adds the machine's load).
const NOTE: &str =
    "wrk -t2 -c50 -d10s --latency from one address, each system in front of a fresh \
         `search_backend` that answers at once, three rounds. Admitted: what the backend \
         answered, in the round furthest off the limit; expected: burst + rate × that \
         round's wrk duration. Retry-After: on a 429 right after each round's wrk run, in \
         every round. Responses per second (200 and 429 alike), p50 and p99: \
         the round with the median responses per second.";
/// Runs per configuration; the table shows the median and the worst.
const ROUNDS: usize = 3;

/// A child process, killed when dropped (a bench that fails midway leaves
/// nothing running).
struct Running {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().map(BufReader::new);
        Running { child, stdout }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.as_mut().unwrap().read_line(&mut line).unwrap();
        line
    }

    /// Ctrl-C, then everything it prints on the way out.
    fn interrupt(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let mut rest = String::new();
        for line in self.stdout.take().unwrap().lines() {
            rest.push_str(&line.unwrap());
            rest.push('\n');
        }
        let _ = self.child.wait();
        rest
    }
}

impl Drop for Running {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILL
    /// would leave them running, holding the port); SIGKILL after 5 s.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already ended (interrupted)
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10)); // a bench thread, not a coroutine
        }
    }
}

/// The release builds of the gateway and the backend.
fn examples() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "--release"])
        .args(["--example", "rate_limiter", "--example", "search_backend"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the examples failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(root).join("target"));
    target.join("release").join("examples")
}

/// The last word of a program's first line: the address it listens on.
fn address(first_line: &str) -> String {
    let word = first_line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"));
    word.unwrap_or_else(|| panic!("no address in {first_line:?}"))
        .trim_end_matches(',')
        .to_owned()
}

fn backend(examples: &Path) -> (Running, String) {
    let mut backend =
        Running::start(Command::new(examples.join("search_backend")).args(["--latency", "0ms"]));
    let addr = address(&backend.line());
    (backend, addr)
}

/// What the backend answered in all, from its exit summary
/// (`served N requests: A answered, ...`).
fn answered(backend: Running) -> u64 {
    let summary = backend.interrupt();
    let words: Vec<&str> = summary.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "answered,") else {
        // It died during the run (its message is above): under this load
        // the backend's own socket timeouts can hit may 0.3.51's races.
        panic!("the backend died during the run, so this round has no count; run the bench again");
    };
    words[at - 1].parse().unwrap()
}

struct Load {
    requests: u64,
    seconds: f64,
    per_second: f64,
    p50_ns: f64,
    p99_ns: f64,
}

fn nanos(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap();
    number
        * match unit {
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            other => panic!("unknown unit {other}"),
        }
}

/// Ten seconds of wrk against `url`.
fn wrk(url: &str) -> Load {
    let out = Command::new("wrk")
        .args(["-t2", "-c50", "-d10s", "--latency", url])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed: {text}");
    let (mut load, mut seen) = (
        Load {
            requests: 0,
            seconds: 0.0,
            per_second: 0.0,
            p50_ns: 0.0,
            p99_ns: 0.0,
        },
        0,
    );
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [n, "requests", "in", secs, ..] => {
                load.requests = n.parse().unwrap();
                load.seconds = secs
                    .trim_end_matches(',')
                    .trim_end_matches('s')
                    .parse()
                    .unwrap();
                seen += 1;
            }
            ["Requests/sec:", n] => (load.per_second, seen) = (n.parse().unwrap(), seen + 1),
            ["50%", t] => (load.p50_ns, seen) = (nanos(t), seen + 1),
            ["99%", t] => (load.p99_ns, seen) = (nanos(t), seen + 1),
            _ => {}
        }
    }
    assert_eq!(seen, 4, "unexpected wrk output: {text}");
    load
}

/// A free loopback port, for a program that cannot report the one it got.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Start nginx from the repository's config, in front of `upstream`.
fn nginx(upstream: &str, (rate, burst): (u64, u64), dir: &Path) -> (Running, String) {
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/rate_limiter_gateway/nginx.conf");
    let port = free_port();
    let config = std::fs::read_to_string(template)
        .unwrap()
        .replace("{{PREFIX}}", dir.to_str().unwrap())
        .replace("{{UPSTREAM}}", upstream)
        .replace("{{RATE}}", &rate.to_string())
        .replace("{{BURST}}", &burst.to_string())
        .replace("{{PORT}}", &port.to_string());
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let nginx = Running::start(
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&file),
    );
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start listening on {addr} (see its messages above)"
        );
        std::thread::sleep(Duration::from_millis(20)); // a bench thread, not a coroutine
    }
    (nginx, addr)
}

fn gateway(examples: &Path, upstream: &str, (rate, burst): (u64, u64)) -> (Running, String) {
    let mut gateway = Running::start(Command::new(examples.join("rate_limiter")).args([
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--rate",
        &rate.to_string(),
        "--burst",
        &burst.to_string(),
        // The backend closes every connection after one answer, and nginx
        // is configured to open one per request: so is the gateway.
        "--upstream-idle",
        "0",
    ]));
    let addr = address(&gateway.line());
    (gateway, addr)
}

/// One run: wrk against a system in front of a fresh backend, and what
/// the backend answered.
struct Run {
    load: Load,
    admitted: u64,
    /// Whether a 429 carried `Retry-After` (`None`: no 429 seen).
    retry_after: Option<bool>,
}

fn measure(start: impl FnOnce(&str) -> (Running, String)) -> Run {
    let (backend_process, upstream) = backend(&examples_dir());
    let (system, addr) = start(&upstream);
    let load = wrk(&format!("http://{addr}{PATH}"));
    let retry_after = retry_after_on_429(&addr);
    // Ctrl-C: the gateway prints its summary (nginx stops, printing nothing).
    let said = system.interrupt();
    if let Some(summary) = said.lines().last() {
        println!("  {summary}");
    }
    let admitted = answered(backend_process);
    Run {
        load,
        admitted,
        retry_after,
    }
}

/// Requests on one kept-alive connection until one gets a 429: whether
/// it carries `Retry-After`. `None` if none of a thousand was refused.
fn retry_after_on_429(addr: &str) -> Option<bool> {
    use may_patterns::http::{header, read_response, Limits};
    use std::io::Write;
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut replies = BufReader::new(socket.try_clone().unwrap());
    let mut socket = socket;
    for _ in 0..1_000 {
        let request = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        socket.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut replies, &Limits::default()).unwrap();
        if response.status == 429 {
            return Some(header(&response.headers, "retry-after").is_some());
        }
    }
    None
}

/// A row from one configuration's runs: how far off the limit the worst run
/// was (admitted and expected from that run), and the throughput and
/// latency of the run with the median throughput.
fn row(what: &str, (rate, burst): (u64, u64), mut runs: Vec<Run>) -> (String, Vec<Cell>) {
    let expected = |run: &Run| burst as f64 + rate as f64 * run.load.seconds;
    let off = |run: &Run| run.admitted as f64 / expected(run) - 1.0;
    let limited = (rate, burst) == LIMITED;
    let mut cells = match limited {
        true => {
            let worst = runs
                .iter()
                .max_by(|a, b| off(a).abs().total_cmp(&off(b).abs()))
                .unwrap();
            let retry_after = runs.iter().all(|run| run.retry_after == Some(true));
            vec![
                Cell::Whole(worst.admitted),
                Cell::Whole(expected(worst).round() as u64),
                Cell::Percent(off(worst)),
                Cell::Flag(retry_after),
            ]
        }
        false => vec![Cell::Empty, Cell::Empty, Cell::Empty, Cell::Empty],
    };
    runs.sort_by(|a, b| a.load.per_second.total_cmp(&b.load.per_second));
    let median = &runs[runs.len() / 2];
    cells.extend([
        Cell::PerSecond(median.load.per_second),
        Cell::Nanos(median.load.p50_ns),
        Cell::Nanos(median.load.p99_ns),
    ]);
    let label = match limited {
        true => format!("{what}, {rate}/s, burst {burst}"),
        false => format!("{what}, limit never reached (all forwarded)"),
    };
    (label, cells)
}

fn examples_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(examples).clone()
}

/// Whether `program` can be run at all.
fn installed(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn main() {
    for (program, arg, package) in [("wrk", "--version", "wrk"), ("nginx", "-v", "nginx-light")] {
        if !installed(program, arg) {
            eprintln!("error: {program} is not installed; this bench needs it (Debian: apt-get install {package})");
            std::process::exit(1);
        }
    }
    let examples = &examples_dir();
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_average = load_average.split_whitespace().next().unwrap_or("unknown");
    let dir = &tempfile::tempdir().unwrap();
    type Start<'a> = Box<dyn Fn(&str) -> (Running, String) + 'a>;
    let configurations: Vec<(&str, (u64, u64), Start)> = [LIMITED, UNLIMITED]
        .into_iter()
        .flat_map(|limit| {
            let ours: Start = Box::new(move |up| gateway(examples, up, limit));
            let nginx: Start = Box::new(move |up| nginx(up, limit, dir.path()));
            [
                ("rate_limiter (GCRA)", limit, ours),
                ("nginx limit_req", limit, nginx),
            ]
        })
        .collect();
    // Rounds, each system in turn, so a noisy moment on the machine does
    // not land on one system's runs only.
    let mut runs: Vec<Vec<Run>> = configurations.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (i, (what, limit, start)) in configurations.iter().enumerate() {
            let run = measure(start);
            println!(
                "round {round}, {what} {limit:?}: {} requests in {:.2}s, {:.0}/s, {} admitted",
                run.load.requests, run.load.seconds, run.load.per_second, run.admitted
            );
            runs[i].push(run);
        }
    }
    let rows: Vec<_> = configurations
        .iter()
        .zip(runs)
        .map(|((what, limit, _), runs)| row(what, *limit, runs))
        .collect();
    let note = format!(
        "{NOTE} The machine's load average (1 minute) before the runs: {load_average}; \
         other work on the same cores stalls both systems, and a limiter cannot admit \
         requests it does not get to see."
    );
    support::write_cells_table_of(
        "rate_limiter_gateway",
        "rate_limiter",
        "gateway.md",
        &note,
        &[
            "admitted",
            "expected",
            "off by",
            "Retry-After on 429",
            "responses",
            "p50",
            "p99",
        ],
        &rows,
    );
}
