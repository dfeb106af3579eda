//! The two servers the bench compares, each started in its own process on
//! a loopback port, and what /proc says about them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::procfs;

/// A server under load: its address and its process (killed on drop).
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    /// Holds ngircd's generated config; removed on drop.
    _dir: tempfile::TempDir,
}

/// The config in the repo, with the port and pid file filled in.
const NGIRCD_CONF: &str = include_str!("ngircd.conf.in");
const NGIRCD: &str = "/usr/sbin/ngircd";

/// Start ngircd (Debian's `ngircd`) with the repo's config on a free port,
/// in the foreground (`-n`), and wait until it accepts.
pub fn ngircd() -> Server {
    assert!(
        Path::new(NGIRCD).exists(),
        "{NGIRCD} is missing: apt-get install -y ngircd (the bench compares the chat server with it)"
    );
    // ngircd binds the port itself: take a free one from the kernel, let it
    // go, and retry with another if someone took it in between.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = procfs::free_port();
        let conf = NGIRCD_CONF
            .replace("@PORT@", &port.to_string())
            .replace("@PIDFILE@", dir.path().join("ngircd.pid").to_str().unwrap());
        let path = dir.path().join("ngircd.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(NGIRCD)
            .arg("-n")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{NGIRCD}: {e}"));
        let mut server = Server {
            name: "ngircd 26",
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        };
        if procfs::wait_until_accepts(&mut server.child, server.addr) {
            return server;
        }
    }
    panic!("ngircd did not accept connections on any of 5 ports within 10 s each");
}

/// The release build of the book's `chat_server`, started with a flood
/// quota far above the load and a sendq as roomy as ngircd's, reporting
/// its address on its first `--json` line.
pub fn chat_server() -> Server {
    let program = build_chat_server();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&program)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--max-clients",
            "10000",
            "--flood-rate",
            "100000/1s",
            "--sendq",
            "1048576",
            "--db",
        ])
        .arg(dir.path().join("chat.db"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // Keep reading, so its last line (on stop) never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let json: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("chat_server's first line is not JSON ({e}): {first:?}"));
    let addr = json["irc"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no irc address in {first}"));
    Server {
        name: "chat_server (this book)",
        addr,
        child,
        _dir: dir,
    }
}

fn build_chat_server() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "--release", "--example", "chat_server"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building chat_server failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(root).join("target"));
    target.join("release/examples/chat_server")
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
    pub fn status_bytes(&self, field: &str) -> u64 {
        procfs::status_bytes(self.pid(), field).unwrap_or_else(|| {
            panic!(
                "{}: no {field} in /proc/{}/status (has it exited?)",
                self.name,
                self.pid()
            )
        })
    }

    /// User + system CPU time the server has used so far (with any
    /// children it started; neither server forks).
    pub fn cpu(&self) -> Duration {
        procfs::tree_cpu(self.pid())
    }
}

impl Server {
    /// The process's memory mappings grouped by size: for each size in
    /// KiB, how many mappings have it and their resident KiB in total
    /// (/proc/PID/smaps). A coroutine's stack is one mapping of its size.
    pub fn mappings(&self) -> BTreeMap<u64, (u64, u64)> {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid()))
            .unwrap_or_else(|e| panic!("{}: /proc/{}/smaps: {e}", self.name, self.pid()));
        let mut groups = BTreeMap::new();
        let mut size = 0;
        for line in smaps.lines() {
            if let Some(rss) = line.strip_prefix("Rss:") {
                let kib: u64 = rss.trim().trim_end_matches("kB").trim().parse().unwrap();
                let group: &mut (u64, u64) = groups.entry(size).or_default();
                group.0 += 1;
                group.1 += kib;
            } else if let Some((range, _)) = line.split_once(' ') {
                // A mapping's first line: `start-end perms ...` in hex.
                if let Some((start, end)) = range.split_once('-') {
                    if let (Ok(start), Ok(end)) =
                        (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
                    {
                        size = (end - start) / 1024;
                    }
                }
            }
        }
        groups
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
