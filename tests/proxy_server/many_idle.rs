//! Thousands of idle client connections at once: each one a coroutine and
//! a socket in the proxy, none of them in anybody's way.

use std::fs;
use std::process::Command;

use crate::clients;
use crate::limits::{still_serves, BODY};
use crate::origins::TlsOrigin;
use crate::proxy::Proxy;
use crate::tunnels::reach;

/// Idle connections held open at once.
const IDLE: usize = 5_000;
/// Descriptors the proxy (which inherits the test process's limit) needs:
/// two per connection, since its handler splits each into a reading and a
/// writing half with a descriptor each (`dup`), and room for the rest.
const FD_LIMIT: u64 = 2 * IDLE as u64 + 1_000;

#[test]
fn five_thousand_idle_connections_are_held_and_a_request_still_passes() {
    raise_fd_limit(FD_LIMIT);
    let origin = TlsOrigin::start(BODY);
    let port = origin.port().to_string();
    let mut args = reach(&port);
    let max = (IDLE + 100).to_string();
    // Idle clients are cut at the header timeout: longer than this test.
    args.extend(["--max-connections", &max, "--header-timeout", "120"]);
    let proxy = Proxy::start(&args);
    let before = proxy.open_fds();
    let idle: Vec<_> = (0..IDLE).map(|_| clients::connect(proxy.addr)).collect();
    proxy.wait_until("held every idle connection", |p| {
        p.open_fds() >= before + 2 * IDLE
    });
    still_serves(&proxy, &origin);
    drop(idle);
    // Each idle connection's EOF ends its coroutine and frees its socket.
    proxy.wait_until("closed every idle connection", |p| p.open_fds() <= before);
    let summary = proxy.stop();
    assert_eq!(summary["accepted"], IDLE + 1, "{summary}");
    assert_eq!(summary["refused_full"], 0, "{summary}");
    assert_eq!(summary["tunnels"], 1, "{summary}");
}

/// Raise this process's soft open-file limit to `want` (children inherit
/// it) with util-linux's `prlimit`, unless it is that high already; fails
/// if the hard limit is lower.
fn raise_fd_limit(want: u64) {
    if soft_fd_limit() >= want {
        return;
    }
    clients::require("prlimit", "util-linux");
    let pid = std::process::id().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={want}:")])
        .status()
        .expect("prlimit runs");
    assert!(
        status.success() && soft_fd_limit() >= want,
        "could not raise the open-file limit to {want} (the hard limit is lower: raise it, e.g. ulimit -Hn)"
    );
}

/// The soft "Max open files" of this process, from /proc/self/limits.
fn soft_fd_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").expect("/proc/self/limits (Linux)");
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("a Max open files line")
}
