//! For benches that run servers in processes of their own: a free loopback
//! port, waiting until a process accepts on it, and what /proc says about
//! it (memory, CPU time, its descendants). Included with `#[path]` by the
//! benches that need it, not through `support`, so the others do not carry
//! it unused.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A port the kernel had free a moment ago. A program that binds it
/// itself may find it taken meanwhile: start it again on another.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `child` accepts a connection on `addr` within 10 s; false at once
/// if it exits first (its port was taken, its config refused).
pub fn wait_until_accepts(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `pid` and all its descendants (a forking server's workers).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(fields) = stat_fields(child) {
            // Field 4 of proc(5), the second after the command name.
            parents.push((child, fields[1].parse::<u32>().unwrap()));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    tree
}

/// A field of /proc/PID/status (`VmRSS`, `VmHWM`) in bytes; `None` if
/// the process is gone or has no such field.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// User + system CPU time process `pid` has used so far (all its
/// threads); `None` if it is gone.
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    // utime and stime, fields 14 and 15 of proc(5), counted from field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// [`cpu_of`] summed over [`tree`]; a process that ended meanwhile counts
/// nothing.
pub fn tree_cpu(pid: u32) -> Duration {
    tree(pid).into_iter().filter_map(cpu_of).sum()
}

/// /proc/PID/stat from field 3 on. The command name (field 2) is in
/// parentheses and may hold spaces: split after its closing one.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split(' ').map(str::to_owned).collect())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), the unit of
/// /proc/PID/stat's CPU times; asked once.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("CLK_TCK is a number")
    })
}
