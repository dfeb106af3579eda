//! Running the `proxy_server` program as a user runs it: started with its
//! flags and `--listen 127.0.0.1:0 --json`, its address read from the
//! first line, stopped with SIGINT (Ctrl-C), whose last line is the
//! summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// How long a test waits for a line or an exit before calling it stuck.
pub const STUCK: Duration = Duration::from_secs(20);

/// The built program (debug or release, as this test was built).
pub fn program() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["proxy_server"]))
        .join("proxy_server")
}

/// A running `proxy_server`. Dropping it kills the process, so a failing
/// test leaves nothing running.
pub struct Proxy {
    pub addr: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stderr line read so far, for failure messages and panic checks.
    stderr_seen: Vec<String>,
}

impl Proxy {
    /// `proxy_server --listen 127.0.0.1:0 --json ARGS`, once it listens.
    pub fn start(args: &[&str]) -> Proxy {
        let mut command = Command::new(program());
        command
            .args(["--listen", "127.0.0.1:0", "--json"])
            .args(args)
            .stdin(Stdio::null());
        let (child, stdout, stderr) = support::spawn_with_lines(&mut command);
        let mut proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: Some(child),
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        };
        let first = proxy
            .next_json(STUCK)
            .unwrap_or_else(|| panic!("no first JSON line\n{}", proxy.describe()));
        let addr = first["listening"]
            .as_str()
            .unwrap_or_else(|| panic!("first line {first} has no \"listening\""));
        proxy.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("listening address {addr:?}: {e}"));
        proxy
    }

    /// `http://ADDR`, as curl's `-x` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id, for /proc.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the proxy runs").id()
    }

    /// A process-status field (`VmRSS`, `VmHWM`), in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }

    /// How many descriptors the process has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd (Linux)")
            .count()
    }

    /// Wait (at most [`STUCK`]) until `done` holds for the process, polling.
    pub fn wait_until(&self, what: &str, done: impl Fn(&Proxy) -> bool) {
        let deadline = Instant::now() + STUCK;
        while !done(self) {
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then a bounded wait for a clean exit: the summary (the last
    /// JSON line). Fails on a non-zero exit or a panic on stderr.
    pub fn stop(mut self) -> Value {
        support::interrupt(self.child.as_ref().expect("the proxy runs"));
        let mut last = None;
        while let Some(value) = self.next_json(STUCK) {
            last = Some(value);
        }
        let mut child = self.child.take().unwrap();
        let status = support::wait_bounded(&mut child, STUCK);
        assert!(status.success(), "exit {status:?}\n{}", self.describe());
        self.assert_no_crash();
        last.unwrap_or_else(|| panic!("no summary line\n{}", self.describe()))
    }

    /// The next JSON line on stdout within `limit` (other lines skipped);
    /// None when the program ended or said nothing.
    fn next_json(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).ok()?;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return Some(value);
            }
        }
    }

    /// No panic or stack overflow on stderr so far.
    pub fn assert_no_crash(&mut self) {
        self.drain_stderr();
        for sign in ["panicked", "overflow", "stack backtrace"] {
            assert!(
                !self.stderr_seen.iter().any(|l| l.contains(sign)),
                "{sign:?} on stderr\n{}",
                self.describe()
            );
        }
    }

    fn drain_stderr(&mut self) {
        self.stderr_seen.extend(self.stderr.try_iter());
    }

    pub fn describe(&mut self) -> String {
        self.drain_stderr();
        format!(
            "proxy_server {}\nstderr:\n{}",
            self.args.join(" "),
            self.stderr_seen.join("\n")
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `/proc/PID/status` field of process `pid` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status (Linux)");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
