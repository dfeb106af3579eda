//! The processes the proxy bench runs: the nginx origin and the three
//! proxies, each on a loopback port from its config in
//! `benches/proxy_server/`, and what /proc says about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::procfs;

/// A process listening on `addr`, killed (with its children) on drop.
pub struct Proc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    /// Holds the generated config, pid file and logs; removed on drop.
    _dir: tempfile::TempDir,
}

const NGINX: &str = "/usr/sbin/nginx";
const TINYPROXY: &str = "/usr/bin/tinyproxy";
const SQUID: &str = "/usr/sbin/squid";

fn require(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: apt-get install -y {package} (the proxy bench needs it)"
    );
}

/// nginx serving `/1k` (1,024 bytes) with keep-alive.
pub fn origin() -> Proc {
    require(NGINX, "nginx-light");
    start("nginx (origin)", |dir, port| {
        std::fs::create_dir_all(dir.join("site")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(dir.join("site/1k"), [b'x'; 1024]).unwrap();
        let conf = fill(include_str!("origin_nginx.conf.in"), dir, port, 0);
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(NGINX);
        cmd.arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"]);
        cmd
    })
}

/// tinyproxy in the foreground (`-d`), CONNECT allowed to `origin_port`.
pub fn tinyproxy(origin_port: u16) -> Proc {
    require(TINYPROXY, "tinyproxy");
    start("tinyproxy 1.11", |dir, port| {
        let path = dir.join("tinyproxy.conf");
        let conf = fill(include_str!("tinyproxy.conf.in"), dir, port, origin_port);
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(TINYPROXY);
        cmd.arg("-d").arg("-c").arg(&path);
        cmd
    })
}

/// squid in the foreground (`-N`), no cache, CONNECT allowed to `origin_port`.
pub fn squid(origin_port: u16) -> Proc {
    require(SQUID, "squid");
    start("squid 5.7", |dir, port| {
        let path = dir.join("squid.conf");
        let conf = fill(include_str!("squid.conf.in"), dir, port, origin_port);
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(SQUID);
        cmd.arg("-N").arg("-f").arg(&path);
        cmd
    })
}

/// The book's `proxy_server`, a release build, allowed to reach loopback
/// and to open `CONNECT` tunnels to `origin_port` (by default only 443).
pub fn proxy_server(origin_port: u16) -> Proc {
    let program = build_proxy_server();
    start("proxy_server (this book)", |_, port| {
        let mut cmd = Command::new(&program);
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-dest",
            "127.0.0.1/32",
            "--allow-connect-port",
            &origin_port.to_string(),
            "--max-connections",
            "10000",
        ]);
        cmd
    })
}

fn build_proxy_server() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--quiet", "--release", "--example", "proxy_server"])
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "the example proxy_server does not build (yet?): `cargo build --release --example proxy_server` failed, so the bench cannot measure it beside tinyproxy and squid"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(root).join("target"));
    target.join("release/examples/proxy_server")
}

fn fill(template: &str, dir: &Path, port: u16, origin_port: u16) -> String {
    template
        .replace("@DIR@", dir.to_str().unwrap())
        .replace("@ORIGIN_PORT@", &origin_port.to_string())
        .replace("@PORT@", &port.to_string())
}

/// Start `command(dir, port)` on a free port until it accepts there: the
/// programs bind the port themselves, so another process may take it
/// between our probe and their bind; then try another.
fn start(name: &'static str, command: impl Fn(&Path, u16) -> Command) -> Proc {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = procfs::free_port();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = command(dir.path(), port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut proc = Proc {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        };
        if procfs::wait_until_accepts(&mut proc.child, proc.addr) {
            return proc;
        }
        let log = std::fs::read_to_string(proc._dir.path().join("stderr.log")).unwrap_or_default();
        eprintln!("{name} did not accept on port {port}; its stderr: {log}");
    }
    panic!("{name} did not accept connections on any of 5 ports within 10 s each");
}

impl Proc {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The process and all its descendants (a forking proxy's workers).
    pub fn tree(&self) -> Vec<u32> {
        procfs::tree(self.child.id())
    }

    /// VmRSS summed over [`Proc::tree`], in bytes (pages two processes
    /// share are counted in each; a process gone meanwhile, none).
    pub fn rss(&self) -> u64 {
        self.tree()
            .iter()
            .map(|&pid| procfs::status_bytes(pid, "VmRSS").unwrap_or(0))
            .sum()
    }

    /// User + system CPU time of the process and its descendants so far.
    pub fn cpu(&self) -> Duration {
        procfs::tree_cpu(self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Children first (squid's helpers, tinyproxy's workers if it forks).
        for pid in self.tree().into_iter().skip(1) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
