//! The program as a person starts it: the lines it prints without
//! `--json`, and the errors for settings it cannot use.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::clients;
use crate::proxy::{program, STUCK};
use crate::support;

#[test]
fn without_json_it_prints_a_listening_line_and_a_stopped_summary() {
    let mut command = Command::new(program());
    command
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null());
    let (mut child, stdout, _stderr) = support::spawn_with_lines(&mut command);
    let first = stdout.recv_timeout(STUCK).expect("a first line");
    let addr = first
        .strip_prefix("proxy_server listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"));
    // It really listens there, and answers: a request it refuses (port 25)
    // is served and closed before the interrupt, so the summary counts it
    // (a bare connect could still be in the accept queue when Ctrl-C lands).
    let answer = clients::exchange(
        addr.parse().unwrap(),
        b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n",
    );
    assert_eq!(answer.status, 403, "{}", answer.head);
    support::interrupt(&child);
    let status = support::wait_bounded(&mut child, STUCK);
    assert!(status.success(), "{status:?}");
    let last = stdout.iter().last().expect("a summary line");
    assert!(
        last.starts_with("stopped: accepted 1, refused_full 0,"),
        "last line: {last:?}"
    );
}

#[test]
fn settings_it_cannot_use_are_refused_with_the_reason() {
    let missing = "/nonexistent/proxy-users";
    // Held for the whole test, so its port stays taken.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--auth-file", missing], missing),
        (&["--listen", &taken], "cannot listen on"),
        (&["--allow-dest", "10.0.0.0/40"], "prefix length"),
    ];
    for (args, says) in cases {
        let mut command = Command::new(program());
        command.args(args).stdin(Stdio::null());
        let out = support::output_bounded(&mut command, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: stderr {stderr:?}");
    }
}
