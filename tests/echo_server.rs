//! End to end: start the compiled `echo_server` example as a user would, talk
//! to it with a real client (OpenBSD netcat), stop it with Ctrl-C (SIGINT) and
//! check its summary; give it a bad address; run it out of file descriptors.
//! `.ci/run` installs `nc`; without it the first test fails. The
//! descriptor tests read `/proc` (Linux).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

mod support;
use support::{build_examples, interrupt, output_bounded, wait_bounded};

#[test]
fn netcat_gets_its_lines_back_and_ctrl_c_stops_the_server_cleanly() {
    let mut server = Server::start(
        Command::new(build_examples(["echo_server"]).join("echo_server")).args([
            "--addr",
            "127.0.0.1:0",
            "--idle-timeout-ms",
            "10000",
        ]),
    );
    let port = server.port.to_string();
    let host = "127.0.0.1";

    // -N: shut the socket down after end of input; -w: give up after 10 s.
    let mut nc = Command::new("nc")
        .args(["-N", "-w", "10", host, &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("`nc` (Debian package netcat-openbsd) must be installed; .ci/run installs it");
    nc.stdin
        .take()
        .unwrap()
        .write_all(b"hello\nmay coroutines\n")
        .unwrap();
    assert!(
        wait_bounded(&mut nc, Duration::from_secs(20)).success(),
        "nc failed"
    );
    let mut echoed = String::new();
    nc.stdout
        .take()
        .unwrap()
        .read_to_string(&mut echoed)
        .unwrap();
    assert_eq!(echoed, "hello\nmay coroutines\n");

    let (summary, _) = server.interrupt_and_wait();
    assert_eq!(
        summary.trim(),
        "stopped: 1 connections served, 0 rejected, 0 timed out, 21 bytes echoed, 0 accept errors"
    );
}

#[test]
fn a_bad_address_is_one_sentence_and_a_failure() {
    let bin = build_examples(["echo_server"]).join("echo_server");
    let out = output_bounded(
        Command::new(bin).args(["--addr", "999.1.1.1:80"]),
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "it must fail: {:?}", out.status);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("echo_server: cannot listen on 999.1.1.1:80: ")
            && stderr.trim_end().lines().count() == 1,
        "one sentence that names what failed, not a debug dump: {stderr:?}"
    );
}

/// A running echo server: the lines of its stdout (after the "listening
/// on" line) and stderr, read by two threads so every wait can be bounded,
/// and its port. Dropping it kills the process, so a failing test leaves
/// nothing running.
struct Server {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    port: u16,
}

/// How long a test waits for a line or an exit before calling it stuck.
const STUCK: Duration = Duration::from_secs(20);

fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Server {
    fn start(command: &mut Command) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the echo server starts");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            stdout,
            stderr,
            port: 0,
        };
        let first = server.stdout.recv_timeout(STUCK).expect("a first line");
        server.port = first
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
        server
    }

    /// Ctrl-C, then the rest of its stdout and stderr once it has exited
    /// successfully.
    fn interrupt_and_wait(&mut self) -> (String, String) {
        interrupt(&self.child);
        let status = wait_bounded(&mut self.child, STUCK);
        assert!(status.success(), "the server exited with {status}");
        // The pipes closed at exit: each channel ends after its last line.
        let rest = |lines: &Receiver<String>| lines.iter().collect::<Vec<_>>().join("\n");
        (rest(&self.stdout), rest(&self.stderr))
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

/// `ulimit -n LIMIT; exec echo_server`: `exec` keeps the shell's pid, so
/// the child's pid is the server's.
fn start_with_open_file_limit(limit: usize) -> Server {
    let bin = build_examples(["echo_server"]).join("echo_server");
    let script = format!(
        "ulimit -n {limit} && exec '{}' --addr 127.0.0.1:0 --idle-timeout-ms 20000",
        bin.display()
    );
    Server::start(Command::new("sh").args(["-c", &script]))
}

/// A client the server has answered: its one-byte echo came back.
fn served_client(port: u16) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_echoes(&mut c);
    c
}

fn assert_echoes(c: &mut TcpStream) {
    c.write_all(b"x").unwrap();
    let mut back = [0u8; 1];
    c.read_exact(&mut back).expect("the server echoes");
    assert_eq!(&back, b"x");
}

/// File descriptors the process holds right now (Linux).
fn open_files(server: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.id()))
        .unwrap()
        .count()
}

/// Clients that, held open, leave the limited server no descriptor at all.
const HELD: usize = 4;

/// The open-file limit at which `HELD` served clients take the server's
/// last descriptor: what it holds with one client (everything it always
/// holds, plus that client's socket and the clone its registry keeps),
/// plus two per further client. Measured, since the count depends on
/// what may and the Ctrl-C handler open.
fn limit_that_holds_exactly_the_held_clients() -> usize {
    let mut probe = start_with_open_file_limit(256);
    let client = served_client(probe.port);
    let with_one = open_files(&probe.child);
    drop(client);
    probe.interrupt_and_wait();
    with_one + 2 * (HELD - 1)
}

fn hold_every_descriptor(server: &Server, limit: usize) -> Vec<TcpStream> {
    let held: Vec<_> = (0..HELD).map(|_| served_client(server.port)).collect();
    assert_eq!(
        open_files(&server.child),
        limit,
        "the server holds its last descriptor"
    );
    held
}

#[test]
fn out_of_file_descriptors_it_logs_one_line_keeps_serving_and_recovers() {
    let limit = limit_that_holds_exactly_the_held_clients();
    let mut server = start_with_open_file_limit(limit);
    let mut held = hold_every_descriptor(&server, limit);

    // One more client: the kernel queues it, accept() fails with EMFILE.
    let mut waiting = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    waiting.write_all(b"x").unwrap();
    let log = server
        .stderr
        .recv_timeout(STUCK)
        .expect("a line on the first EMFILE");
    assert!(
        log.starts_with(
            "echo_server: cannot accept a connection: Too many open files (os error 24); "
        ),
        "{log:?}"
    );
    for c in &mut held {
        assert_echoes(c); // the open connections are still served
    }
    // Stay out of descriptors through a few retries (pauses of 10, 20, 40,
    // 80 ms), so a log line per retry would show below.
    std::thread::sleep(Duration::from_millis(200));

    // Clients leave: the server accepts the waiting one and new ones again.
    drop(held);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut back = [0u8; 1];
    waiting
        .read_exact(&mut back)
        .expect("the queued client is served");
    drop(waiting);
    drop(served_client(server.port));

    let (summary, rest) = server.interrupt_and_wait();
    assert_eq!(rest, "", "one line for the whole spell, not one per retry");
    let errors: u64 = summary
        .trim()
        .strip_prefix(&format!("stopped: {} connections served, ", HELD + 2))
        .and_then(|s| s.strip_suffix(" accept errors"))
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected summary: {summary:?}"));
    assert!(errors >= 2, "retried at least once: {summary:?}");
}

#[test]
fn ctrl_c_stops_a_server_that_holds_its_last_file_descriptor() {
    let limit = limit_that_holds_exactly_the_held_clients();
    let mut server = start_with_open_file_limit(limit);
    let _held = hold_every_descriptor(&server, limit);
    // With no descriptor free, accept() fails at once (Linux takes the new
    // connection's descriptor first) and the server pauses between retries:
    // the pause must end on Ctrl-C, and the loop must stop.
    server.interrupt_and_wait();
}
