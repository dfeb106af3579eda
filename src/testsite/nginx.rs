//! [`Nginx`]: the generated site served by a real nginx, one port per
//! host, from a config kept beside this file (`nginx.conf.in`,
//! `nginx-server.conf.in`).
//!
//! nginx serves the files [`Site::write_to`] wrote and answers redirects
//! and bare statuses from `return` directives. What a file server cannot
//! do (the calendar trap without end, slow and failing pages, a latency on
//! every page for benchmarks) goes through `proxy_pass` to one
//! [`SiteServer`] per host, so nginx's access log still sees every request.
//!
//! The harness blocks (it starts a process, waits for its ports, reads its
//! log): call it from a test's or a program's own thread, not from a coroutine.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::generate::{Resource, Site};
use super::log::AccessLine;
use super::server::SiteServer;
use super::spec::SiteSpec;
use crate::tls::Issued;

const CONFIG: &str = include_str!("nginx.conf.in");
const SERVER: &str = include_str!("nginx-server.conf.in");

/// How long nginx may take to listen on every port.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Start attempts: a port picked free can be taken before nginx binds it.
const ATTEMPTS: usize = 5;

/// How the harness serves the site.
#[derive(Default)]
pub struct NginxOptions {
    /// Serve every host over HTTPS with this certificate (issued by a
    /// [`TestCa`](crate::tls::TestCa) for `127.0.0.1`); origins are then
    /// `https://127.0.0.1:PORT`.
    pub tls: Option<Issued>,
    /// Answer every request this late: nginx then passes every request to
    /// the backends (which wait on the process's alarm thread), as a site
    /// whose pages take time to make would. For benchmarks.
    pub per_page_latency: Option<Duration>,
}

/// nginx serving a [`Site`]; killed, waited for and its directory removed
/// on drop.
pub struct Nginx {
    /// Host `i`'s origin, `http://127.0.0.1:PORT` (or `https://`).
    pub origins: Vec<String>,
    ports: Vec<u16>,
    dir: PathBuf,
    child: Child,
    backends: Vec<SiteServer>,
}

impl Nginx {
    /// Generate `spec`'s site, write it and its config to a fresh scratch
    /// directory and start nginx on one free port per host. Fails with a
    /// message naming the cause when nginx is not installed or does not start.
    pub fn start(spec: &SiteSpec, options: NginxOptions) -> io::Result<(Nginx, Site)> {
        let program = find_nginx()?;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            match try_start(&program, spec, &options) {
                Ok(started) => return Ok(started),
                Err(e) if e.kind() == ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// The scratch directory: `nginx.conf`, `access.log`, `error.log`, `site/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where nginx writes its access log.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    // ANCHOR: access_log
    /// Every request nginx has answered so far, in the order it logged
    /// them. nginx writes a line just after the response's last byte, so
    /// a client can read its answer before the line exists: this first
    /// sends a marker request and waits (at most 5 s) for the marker's
    /// line, which nginx, one process, writes after every line of a
    /// request answered before it. The marker lines are left out.
    pub fn access_log(&self) -> io::Result<Vec<AccessLine>> {
        static MARKS: AtomicUsize = AtomicUsize::new(0);
        let mark = format!(
            "/.testsite-log-mark/{}",
            MARKS.fetch_add(1, Ordering::SeqCst)
        );
        let mut stream = StdStream::connect(("127.0.0.1", self.ports[0]))?;
        stream.set_read_timeout(Some(READY_WITHIN))?;
        let request = format!("GET {mark} HTTP/1.1\r\nHost: h0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes())?;
        let _ = io::copy(&mut stream, &mut io::sink()); // TLS or not: the close is the answer
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = fs::read_to_string(self.access_log_path())?;
            let lines = text
                .lines()
                .map(|line| AccessLine::parse(line, &self.ports))
                .collect::<io::Result<Vec<_>>>()?;
            if lines.iter().any(|l| l.path == mark) {
                let marker = |l: &AccessLine| l.path.starts_with("/.testsite-log-mark/");
                return Ok(lines.into_iter().filter(|l| !marker(l)).collect());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("nginx never logged {mark}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(5)); // a plain thread, see the module doc
        }
    }

    // ANCHOR_END: access_log

    /// Host `host`'s backend: make its proxied pages (`/slow/`, `/fail/`,
    /// the trap; every page with `per_page_latency`) slow or failing with
    /// [`SiteServer::set_delay`] and [`SiteServer::fail`].
    pub fn backend(&self, host: usize) -> &SiteServer {
        &self.backends[host]
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill(); // one process (`master_process off`)
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `nginx` on the PATH, or in `/usr/sbin` (not on a normal user's PATH).
fn find_nginx() -> io::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::NotFound,
                "nginx is not installed (Debian: apt-get install nginx-light); the test site's harness needs it",
            )
        })
}

/// A fresh, empty scratch directory under the system's temporary one.
fn scratch_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("may-patterns-nginx-{}-{n}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?; // left by an earlier process of the same id
    }
    fs::create_dir_all(dir.join("tmp"))?;
    Ok(dir)
}

/// Ports that were free a moment ago: bound to 127.0.0.1:0, then released.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| StdListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn try_start(program: &Path, spec: &SiteSpec, options: &NginxOptions) -> io::Result<(Nginx, Site)> {
    let ports = free_ports(spec.hosts)?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let origins: Vec<String> = ports
        .iter()
        .map(|p| format!("{scheme}://127.0.0.1:{p}"))
        .collect();
    let site = Arc::new(Site::generate(spec, &origins));
    let backends = (0..spec.hosts)
        .map(|host| {
            SiteServer::serve(
                site.clone(),
                host,
                may::net::TcpListener::bind("127.0.0.1:0")?,
            )
        })
        .collect::<io::Result<Vec<_>>>()?;
    if let Some(latency) = options.per_page_latency {
        for backend in &backends {
            backend.set_delay("/", latency);
        }
    }
    let dir = scratch_dir()?;
    site.write_to(&dir.join("site"))?;
    if let Some(issued) = &options.tls {
        fs::write(dir.join("cert.pem"), &issued.cert_pem)?;
        fs::write(dir.join("key.pem"), &issued.key_pem)?;
    }
    let backend_addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    fs::write(
        dir.join("nginx.conf"),
        config(&site, &dir, &ports, &backend_addrs, options),
    )?;
    let stderr = fs::File::create(dir.join("stderr.log"))?;
    let child = Command::new(program)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let mut nginx = Nginx {
        origins,
        ports,
        dir,
        child,
        backends,
    };
    wait_until_listening(&mut nginx)?;
    Ok((nginx, Site::clone(&site)))
}

/// Ask every port until nginx itself answers; fail at once if nginx exits.
///
/// A port that merely accepts is not enough. The ports were picked free and
/// released, so another process (a test running beside this one) can bind
/// one first: nginx then waits to bind it, and the other process answers
/// instead, or resets the connection when it ends. So each port must answer
/// an HTTP request with nginx's `Server` header (on a TLS port nginx still
/// answers plain HTTP, with a 400). A port held by someone else is reported
/// as `AddrInUse`, and [`Nginx::start`] tries again with other ports.
fn wait_until_listening(nginx: &mut Nginx) -> io::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    for &port in &nginx.ports.clone() {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            match answers_as_nginx(&addr) {
                Ok(true) => break,
                Ok(false) => {
                    return Err(io::Error::new(
                        ErrorKind::AddrInUse,
                        format!("port {port} is answered by something other than nginx"),
                    ))
                }
                Err(_) => {} // not listening yet
            }
            if let Some(status) = nginx.child.try_wait()? {
                let said = fs::read_to_string(nginx.dir.join("stderr.log")).unwrap_or_default()
                    + &fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                let kind = match said.contains("Address already in use") {
                    true => ErrorKind::AddrInUse,
                    false => ErrorKind::Other,
                };
                return Err(io::Error::new(
                    kind,
                    format!("nginx exited ({status}): {}", said.trim()),
                ));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("nginx did not listen on port {port} within {READY_WITHIN:?}"),
                ));
            }
            // A plain thread (see the module's doc), not a may worker.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Whether the server on `addr` is nginx: one request (a log-marker path,
/// so `access_log` leaves it out), its answer's head read with a bound.
fn answers_as_nginx(addr: &SocketAddr) -> io::Result<bool> {
    let mut stream = StdStream::connect_timeout(addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /.testsite-log-mark/ready HTTP/1.0\r\nHost: h0\r\n\r\n")?;
    let mut head = Vec::new();
    (&mut stream).take(4096).read_to_end(&mut head)?;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    Ok(head.contains("\r\nserver: nginx"))
}

/// The whole config: `nginx.conf.in` with one `nginx-server.conf.in` per host.
fn config(
    site: &Site,
    dir: &Path,
    ports: &[u16],
    backends: &[SocketAddr],
    options: &NginxOptions,
) -> String {
    let dir = dir.display().to_string();
    let tls = match options.tls {
        Some(_) => format!(
            "        ssl_certificate {dir}/cert.pem;\n        ssl_certificate_key {dir}/key.pem;"
        ),
        None => String::new(),
    };
    let servers: String = (0..ports.len())
        .map(|host| {
            SERVER
                .replace("@HOST@", &host.to_string())
                .replace("@PORT@", &ports[host].to_string())
                .replace("@SSL@", if options.tls.is_some() { " ssl" } else { "" })
                .replace("@BACKEND@", &backends[host].to_string())
                .replace("@TLS@", &tls)
                .replace("@LOCATIONS@", &locations(site, host, options))
                .replace("@DIR@", &dir)
        })
        .collect();
    let gzip = if site.spec().features.gzip {
        "on"
    } else {
        "off"
    };
    CONFIG
        .replace("@SERVERS@", &servers)
        .replace("@GZIP@", gzip)
        .replace("@DIR@", &dir)
}

// ANCHOR: locations
/// Host `host`'s `location` blocks: what nginx passes to the backend, and
/// a `return` for every redirect and bare status it answers itself.
fn locations(site: &Site, host: usize, options: &NginxOptions) -> String {
    let proxy = |prefix: &str| {
        format!("        location {prefix} {{\n            proxy_pass http://backend_{host};\n        }}\n")
    };
    if options.per_page_latency.is_some() {
        return proxy("/");
    }
    let features = site.spec().features;
    let proxied: Vec<&str> = match host {
        0 => [
            ("/cal/", features.trap),
            ("/slow/", features.scripted),
            ("/fail/", features.scripted),
        ]
        .into_iter()
        .filter_map(|(prefix, on)| on.then_some(prefix))
        .collect(),
        _ => Vec::new(),
    };
    let mut out: String = proxied.iter().map(|p| proxy(p)).collect();
    for (path, resource) in site.resources(host) {
        if proxied.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        let answer = match resource {
            Resource::Page { .. } => continue, // a file
            Resource::Redirect { status, location } => format!("{status} \"{location}\""),
            Resource::Status(status) => status.to_string(),
        };
        let _ = writeln!(
            out,
            "        location = {path} {{\n            return {answer};\n        }}"
        );
    }
    out
}
// ANCHOR_END: locations
