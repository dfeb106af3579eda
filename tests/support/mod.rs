//! Shared by the end-to-end tests: build example programs as a user would
//! run them, and wait for a process with a bound.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Build the named examples (`cargo test` builds them only in test mode) and
/// return the directory holding their binaries.
pub fn build_examples<'a>(names: impl IntoIterator<Item = &'a str>) -> PathBuf {
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet"]);
    for name in names {
        build.args(["--example", name]);
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building the examples failed");
    // A test binary is target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// Wait for `child` to exit, killing it after `limit`.
#[allow(dead_code)] // not every test binary that includes this module waits
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send SIGINT (what Ctrl-C sends) to `child`, as `kill -INT` would.
#[allow(dead_code)] // not every test binary that includes this module interrupts
pub fn interrupt(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -INT {} failed", child.id());
}
