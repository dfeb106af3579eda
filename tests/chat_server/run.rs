//! Running the `chat_server` program as a user runs it: started with its
//! flags, its addresses read from the first `--json` line, stopped with
//! SIGTERM (its last JSON line is the report), killed with `kill -9`, and
//! started again on the same database.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// How long a test waits for a line or an exit before calling it stuck.
pub const STUCK: Duration = Duration::from_secs(20);

/// The built program (debug or release, as this test was built).
pub fn program() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| support::build_examples(["chat_server"]))
        .join("chat_server")
}

/// A running `chat_server`. Dropping it kills the process, so a failing
/// test leaves nothing running.
pub struct ChatServer {
    pub irc: SocketAddr,
    pub ws: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    /// The flags it was started with (after `--listen 127.0.0.1:0 --json`),
    /// kept for [`ChatServer::restart`].
    args: Vec<String>,
    /// The descriptor limit its shell set before `exec` (None: inherited).
    fd_limit: Option<u64>,
    child: Option<Child>,
    stdout: Option<Receiver<String>>,
    stderr: Option<Receiver<String>>,
    /// Every stderr line read so far, for failure messages and panic checks.
    stderr_seen: Vec<String>,
}

impl ChatServer {
    /// `chat_server --listen 127.0.0.1:0 --json ARGS`, once it listens.
    pub fn start(args: &[&str]) -> ChatServer {
        ChatServer::launch(args, None)
    }

    /// As [`ChatServer::start`], with the process's open-file limit set to
    /// `limit` first (`ulimit -n` in a shell that then `exec`s it), for
    /// tests that hold thousands of connections.
    pub fn start_with_fd_limit(args: &[&str], limit: u64) -> ChatServer {
        ChatServer::launch(args, Some(limit))
    }

    fn launch(args: &[&str], fd_limit: Option<u64>) -> ChatServer {
        let mut server = ChatServer {
            irc: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws: None,
            tls: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            fd_limit,
            child: None,
            stdout: None,
            stderr: None,
            stderr_seen: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let program = program();
        let mut command = match self.fd_limit {
            None => Command::new(&program),
            Some(limit) => {
                let mut shell = Command::new("bash");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&program);
                shell
            }
        };
        command
            .args(["--listen", "127.0.0.1:0", "--json"])
            .args(&self.args)
            .stdin(Stdio::null());
        let (child, stdout, stderr) = support::spawn_with_lines(&mut command);
        self.child = Some(child);
        self.stdout = Some(stdout);
        self.stderr = Some(stderr);
        let first = self
            .next_json()
            .unwrap_or_else(|| panic!("no first JSON line from chat_server\n{}", self.describe()));
        assert_eq!(first["event"], "listening", "first line: {first}");
        let addr = |key: &str| -> Option<SocketAddr> {
            first[key].as_str().map(|a| {
                a.parse()
                    .unwrap_or_else(|e| panic!("{key} address {a:?}: {e}"))
            })
        };
        self.irc = addr("irc").expect("an irc address");
        self.ws = addr("ws");
        self.tls = addr("tls");
    }

    /// The process id (for /proc and `kill -STOP`), while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The next JSON line on stdout (other lines are skipped), None if the
    /// program ended or said nothing for [`STUCK`].
    pub fn next_json(&mut self) -> Option<Value> {
        let stdout = self.stdout.as_ref()?;
        let deadline = Instant::now() + STUCK;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        return Some(value);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the last JSON
    /// line (`{"event":"stopped",...}`). Fails on a non-zero exit or on a
    /// panic or stack overflow reported on stderr.
    pub fn stop(&mut self) -> Value {
        let child = self.child.as_ref().expect("the server runs");
        signal(child.id(), "TERM");
        let mut last = None;
        while let Some(value) = self.next_json() {
            last = Some(value);
        }
        let mut child = self.child.take().unwrap();
        let status = support::wait_bounded(&mut child, STUCK);
        self.drain_stderr();
        assert!(status.success(), "exit {status:?}\n{}", self.describe());
        self.assert_no_crash();
        let last = last.unwrap_or_else(|| panic!("no stopped line\n{}", self.describe()));
        assert_eq!(last["event"], "stopped", "last line: {last}");
        last
    }

    /// `kill -9`: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = support::wait_bounded(&mut child, STUCK);
        }
        self.drain_stderr();
    }

    /// Start it again with the same flags (so the same `--db`), after a
    /// [`ChatServer::stop`] or [`ChatServer::kill9`] (or stopping it first
    /// if it still runs). Its addresses are new ephemeral ports.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Stderr so far: for assertions on what the server logged.
    pub fn stderr_lines(&mut self) -> &[String] {
        self.drain_stderr();
        &self.stderr_seen
    }

    /// No panic, overflow or may timer crash on stderr so far.
    pub fn assert_no_crash(&mut self) {
        self.drain_stderr();
        for sign in [
            "panicked",
            "overflow",
            "stack backtrace",
            "Node value is None",
        ] {
            assert!(
                !self.stderr_seen.iter().any(|l| l.contains(sign)),
                "{sign:?} on stderr\n{}",
                self.describe()
            );
        }
    }

    /// A process-status field of the server (`VmRSS`, `VmHWM`), in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status (Linux)");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    fn drain_stderr(&mut self) {
        if let Some(stderr) = &self.stderr {
            self.stderr_seen.extend(stderr.try_iter());
        }
    }

    pub fn describe(&mut self) -> String {
        self.drain_stderr();
        format!(
            "chat_server {}\nstderr:\n{}",
            self.args.join(" "),
            self.stderr_seen.join("\n")
        )
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `chat_server --db DB --add-account NAME`, the password on stdin, as an
/// operator creates an account.
pub fn add_account(db: &str, name: &str, password: &str) {
    let mut child = Command::new(program())
        .args(["--db", db, "--add-account", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("chat_server starts");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let status = support::wait_bounded(&mut child, STUCK);
    assert!(status.success(), "--add-account {name}: {status:?}");
}

/// `kill -SIG pid`, as a user would send it.
pub fn signal(pid: u32, sig: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{sig} {pid} failed");
}
