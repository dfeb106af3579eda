//! The processes the load-balancer bench runs: nginx backends and the three
//! balancers, each on loopback ports from its config in
//! `benches/load_balancer/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::procfs;

/// A process listening on `addrs`, killed (with its children) on drop.
pub struct Proc {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    child: Child,
    /// Holds the generated config, pid file, logs and sockets; removed on drop.
    dir: tempfile::TempDir,
}

/// Which balancer a [`Proc`] is: how its backends' states can be read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Haproxy,
    Nginx,
}

const NGINX: &str = "/usr/sbin/nginx";
const HAPROXY: &str = "/usr/sbin/haproxy";

/// Health checks every balancer is given (nginx has only passive ones).
pub const CHECK_INTERVAL_MS: u64 = 500;
pub const RISE: u32 = 2;
pub const FALL: u32 = 3;
/// Retries of a failed connect, as HAProxy's `retries 3`.
pub const RETRIES: u32 = 3;
/// The file every backend serves, and the path checks ask for.
pub const PATH: &str = "/1k";

/// Panic with the Debian package to install when `program` is missing.
pub fn require(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: apt-get install -y {package} (the load-balancer bench needs it)"
    );
}

/// Fail before measuring anything when a peer is missing.
pub fn require_peers() {
    require(NGINX, "nginx-light");
    require(HAPROXY, "haproxy");
}

/// Four backends in one nginx process (four `server` blocks).
pub fn backends_together() -> Proc {
    start("nginx (4 backends)".to_owned(), 4, |dir, ports| {
        nginx_command(dir, include_str!("backends_nginx.conf.in"), ports, &[])
    })
}

/// One backend in its own nginx process, so it can be killed alone.
pub fn backend_alone() -> Proc {
    start("nginx (1 backend)".to_owned(), 1, |dir, ports| {
        nginx_command(dir, include_str!("backend_nginx.conf.in"), ports, &[])
    })
}

/// `kind` in front of `backends`.
pub fn balancer(kind: Kind, backends: &[SocketAddr]) -> Proc {
    match kind {
        Kind::Ours => ours(backends),
        Kind::Haproxy => haproxy(backends),
        Kind::Nginx => start(
            version(NGINX, "nginx version: nginx/", "nginx"),
            1,
            |dir, ports| {
                nginx_command(dir, include_str!("balancer_nginx.conf.in"), ports, backends)
            },
        ),
    }
}

/// `NAME X.Y.Z` from what `program -v` prints after `prefix` (nginx
/// prints it on stderr, HAProxy on stdout), so the tables name the
/// version that was measured.
fn version(program: &str, prefix: &str, name: &str) -> String {
    let out = Command::new(program).arg("-v").output().expect("-v runs");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let number = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split(|c: char| c != '.' && !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no version after {prefix:?} in `{program} -v`: {text}"));
    format!("{name} {number}")
}

fn haproxy(backends: &[SocketAddr]) -> Proc {
    start(
        version(HAPROXY, "HAProxy version ", "HAProxy"),
        1,
        |dir, ports| {
            let path = dir.join("haproxy.cfg");
            let conf = fill(include_str!("haproxy.cfg.in"), dir, ports, backends);
            std::fs::write(&path, conf).unwrap();
            let mut cmd = Command::new(HAPROXY);
            // -db: stay in the foreground, one process.
            cmd.arg("-db").arg("-f").arg(&path);
            cmd
        },
    )
}

/// The book's `load_balancer`, a release build, with the same checks and
/// retries as HAProxy's config.
fn ours(backends: &[SocketAddr]) -> Proc {
    let program = build_load_balancer();
    start("load_balancer (this book)".to_owned(), 1, |_, ports| {
        let mut cmd = Command::new(&program);
        cmd.args(["--listen", &format!("127.0.0.1:{}", ports[0])]);
        for b in backends {
            cmd.args(["--backend", &b.to_string()]);
        }
        cmd.args([
            "--algorithm",
            "round-robin",
            "--check-path",
            PATH,
            "--check-interval",
            &format!("{CHECK_INTERVAL_MS}ms"),
            "--rise",
            &RISE.to_string(),
            "--fall",
            &FALL.to_string(),
            "--retries",
            &RETRIES.to_string(),
            "--max-connections",
            "10000",
        ]);
        cmd
    })
}

fn build_load_balancer() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "--example",
            "load_balancer",
        ])
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "the example load_balancer does not build (yet?): `cargo build --release --example load_balancer` failed, so the bench cannot measure it beside HAProxy and nginx"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(root).join("target"));
    target.join("release/examples/load_balancer")
}

/// nginx from `template`, with a 1 KiB `/1k` in its site directory.
fn nginx_command(dir: &Path, template: &str, ports: &[u16], backends: &[SocketAddr]) -> Command {
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("site").join(&PATH[1..]), [b'x'; 1024]).unwrap();
    let path = dir.join("nginx.conf");
    std::fs::write(&path, fill(template, dir, ports, backends)).unwrap();
    let mut cmd = Command::new(NGINX);
    cmd.arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"]);
    cmd
}

fn fill(template: &str, dir: &Path, ports: &[u16], backends: &[SocketAddr]) -> String {
    let mut text = template.replace("@DIR@", dir.to_str().unwrap());
    for (i, port) in ports.iter().enumerate() {
        text = text.replace(&format!("@PORT{i}@"), &port.to_string());
    }
    for (i, b) in backends.iter().enumerate() {
        text = text.replace(&format!("@BACKEND{i}@"), &b.to_string());
    }
    assert!(!text.contains('@'), "a placeholder left unfilled: {text}");
    text
}

/// Start `command(dir, ports)` on `n` free ports until it accepts on all:
/// the programs bind the ports themselves, so another process may take one
/// between our probe and their bind; then try other ports.
fn start(name: String, n: usize, command: impl Fn(&Path, &[u16]) -> Command) -> Proc {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| procfs::free_port()).collect();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = command(dir.path(), &ports)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut proc = Proc {
            name: name.clone(),
            addrs: ports
                .iter()
                .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect(),
            child,
            dir,
        };
        let addrs = proc.addrs.clone();
        if addrs
            .into_iter()
            .all(|a| procfs::wait_until_accepts(&mut proc.child, a))
        {
            return proc;
        }
        eprintln!(
            "{name} did not accept on ports {ports:?}; its stderr: {}",
            proc.stderr()
        );
    }
    panic!("{name} did not accept connections within 10 s, 5 times on other ports");
}

impl Proc {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The scratch directory its config and sockets are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// User + system CPU time of the process and its children so far.
    pub fn cpu(&self) -> Duration {
        procfs::tree_cpu(self.child.id())
    }

    /// VmRSS summed over the process and its children, in bytes (pages
    /// they share counted in each).
    pub fn rss(&self) -> u64 {
        procfs::tree(self.child.id())
            .into_iter()
            .filter_map(|pid| procfs::status_bytes(pid, "VmRSS"))
            .sum()
    }

    /// `kill -9`, the way a crashed or unplugged backend goes.
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Children first (nginx's workers).
        for pid in procfs::tree(self.child.id()).into_iter().skip(1) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        self.kill9();
    }
}
