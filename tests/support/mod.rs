//! Shared by the end-to-end tests: build example programs as a user would
//! run them, and wait for a process with a bound.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Build the named examples (`cargo test` builds them only in test mode) and
/// return the directory holding their binaries.
pub fn build_examples<'a>(names: impl IntoIterator<Item = &'a str>) -> PathBuf {
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet"]);
    // cargo sets these for the test process itself. Passed on, they differ
    // from what a plain `cargo build` sees, and build scripts that watch them
    // (ring's does) would rebuild their crate here and again on the next
    // plain build, every time.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_this_test = key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if set_for_this_test {
            build.env_remove(key.as_ref());
        }
    }
    // `cargo test --release` drives release builds of the programs: build
    // them in the profile this test was built in, next to it.
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
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

/// Run `command` to completion with its output captured, as
/// `Command::output` would, but kill it after `limit`: a stuck program
/// fails the test instead of hanging it.
#[allow(dead_code)] // not every test binary that includes this module runs one-shot programs
pub fn output_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    // Read both pipes while waiting, so a chatty program cannot block on a full pipe.
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let status = wait_bounded(&mut child, limit);
    Output {
        status,
        stdout: out.join().unwrap().into_bytes(),
        stderr: err.join().unwrap().into_bytes(),
    }
}

/// Start `command`; its stdout and stderr lines arrive on two channels, read
/// by two threads so neither pipe can fill up while the test waits.
#[allow(dead_code)] // not every test binary that includes this module reads lines
pub fn spawn_with_lines(command: &mut Command) -> (Child, Receiver<String>, Receiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let lines = |pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().unwrap()));
    let stderr = lines(Box::new(child.stderr.take().unwrap()));
    (child, stdout, stderr)
}
