//! Step 10 of the rate-limiting chapter as a user runs it: three processes
//! against one redis-server share one limit, and processes whose Redis is
//! killed under them say why and stop on time. The step's own tests cover
//! the client (the script against the in-process GCRA, a killed or stalled
//! Redis, replies of the wrong shape); here the processes are real.
//! Needs redis-server (Debian's `redis-server`; `.ci/run` installs it).

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEP: &str = "step10_redis_gcra";

/// The number after the `~` that follows `label` in `line`.
fn measured(line: &str, label: &str) -> u64 {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {line:?}"))
        + label.len()..];
    let digits: String = rest
        .trim_start_matches([' ', '~'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {label:?} in {line:?}"))
}

#[test]
fn three_processes_on_one_key_are_admitted_one_quota_not_three() {
    let examples = support::build_examples([STEP]);
    let out = support::output_bounded(
        &mut Command::new(examples.join(STEP)),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{STEP} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let per_process: Vec<u64> = lines
        .iter()
        .filter(|l| l.starts_with("process "))
        .map(|l| measured(l, ":"))
        .collect();
    assert_eq!(per_process.len(), 3, "{stdout}");
    assert!(
        per_process.iter().all(|&n| n > 0),
        "every process got some: {per_process:?}"
    );
    let together = lines
        .iter()
        .find(|l| l.starts_with("together:"))
        .expect("a total");
    let (admitted, allowed) = (
        measured(together, "together:"),
        measured(together, "at most"),
    );
    assert_eq!(per_process.iter().sum::<u64>(), admitted);
    // 100 per second, burst 10, for a run of at least 1 s: at most the
    // quota over the run (the program's bound), and far from three times it;
    // at least the burst and 70% of the rate (loose, for a busy machine).
    assert!(admitted <= allowed, "{together}");
    assert!(
        admitted >= 80,
        "the limit was shared, but hardly used: {together}"
    );
    assert!(
        stdout.contains("within the quota: true; failed decisions: 0"),
        "{stdout}"
    );
}

#[test]
fn a_process_whose_redis_is_not_there_says_so_and_exits() {
    let examples = support::build_examples([STEP]);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = support::output_bounded(
        Command::new(examples.join(STEP)).args(["--hammer", &free.to_string(), "1000"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("{STEP}: redis at {free}: connecting: Connection refused (os error 111)")
    );
    let out = support::output_bounded(
        Command::new(examples.join(STEP)).args(["--hammer", "nowhere", "1000"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("address \"nowhere\""),
        "{out:?}"
    );
}

/// A child process killed when dropped, so a failing test leaves no
/// redis-server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare redis-server on a free port, answering PING.
fn redis_server() -> (KillOnDrop, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = KillOnDrop(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("this test needs redis-server (Debian: apt-get install redis-server)"),
    );
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        let pong = std::net::TcpStream::connect(&addr).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(1)))?;
            c.write_all(b"PING\r\n")?;
            let mut reply = [0; 7];
            c.read_exact(&mut reply).map(|()| reply)
        });
        if matches!(pong, Ok(reply) if &reply == b"+PONG\r\n") {
            return (child, addr);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server on {addr} did not answer PING"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn processes_whose_redis_is_killed_mid_run_say_why_and_stop_on_time() {
    let examples = support::build_examples([STEP]);
    let (redis, addr) = redis_server();
    let run = Duration::from_secs(3);
    let mut hammers: Vec<_> = (0..2)
        .map(|_| {
            support::spawn_with_lines(Command::new(examples.join(STEP)).args([
                "--hammer",
                &addr,
                &run.as_millis().to_string(),
            ]))
        })
        .collect();
    for (_, stdout, _) in &hammers {
        let line = stdout
            .recv_timeout(Duration::from_secs(10))
            .expect("a hammer starts");
        assert_eq!(line, format!("hammering demo on {addr}"));
    }
    drop(redis);
    let killed = Instant::now();
    for (child, stdout, stderr) in &mut hammers {
        let status = support::wait_bounded(child, run + Duration::from_secs(10));
        assert!(status.success(), "{status}");
        let tally = stdout
            .recv_timeout(Duration::from_secs(1))
            .expect("a tally");
        let words: Vec<&str> = tally.split_whitespace().collect();
        let failed: u64 = match words.as_slice() {
            ["admitted", _, "denied", _, "failed", f] => f.parse().unwrap(),
            _ => panic!("not a tally: {tally}"),
        };
        assert!(failed > 0, "{tally}");
        // The first failure, once; which step failed depends on where the
        // hammer was when the server died.
        let why = stderr
            .recv_timeout(Duration::from_secs(1))
            .expect("the error");
        assert!(
            [
                "reading the reply: ",
                "sending the command: ",
                "connecting: "
            ]
            .iter()
            .any(|step| why.starts_with(step)),
            "{why}"
        );
    }
    // Each stopped at the end of its run, not stuck on the dead server.
    assert!(
        killed.elapsed() < run + Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
}
