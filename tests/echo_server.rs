//! End to end: start the compiled `echo_server` example as a user would, talk
//! to it with a real client (OpenBSD netcat), stop it with Ctrl-C (SIGINT) and
//! check its summary. `.ci/run` installs `nc`; without it this test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::{build_examples, interrupt, wait_bounded};

#[test]
fn netcat_gets_its_lines_back_and_ctrl_c_stops_the_server_cleanly() {
    let mut server = Command::new(build_examples(["echo_server"]).join("echo_server"))
        .args(["--addr", "127.0.0.1:0", "--idle-timeout-ms", "10000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo server starts");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_owned();
    let (host, port) = addr.rsplit_once(':').unwrap();

    // -N: shut the socket down after end of input; -w: give up after 10 s.
    let mut nc = Command::new("nc")
        .args(["-N", "-w", "10", host, port])
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

    interrupt(&server);
    let status = wait_bounded(&mut server, Duration::from_secs(20));
    assert!(status.success(), "the server exited with {status}");
    let mut summary = String::new();
    out.read_to_string(&mut summary).unwrap();
    assert_eq!(
        summary.trim(),
        "stopped: 1 connections served, 0 rejected, 0 timed out, 21 bytes echoed"
    );
}
