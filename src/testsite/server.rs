//! [`SiteServer`]: one host of a [`Site`] served by may coroutines in the
//! calling process, with pages that can be made slow or failing on demand.

use std::collections::HashMap;
use std::io::{self, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use may::coroutine::{Builder, JoinHandle};
use may::go;
use may::net::{TcpListener, TcpStream};

use super::generate::{Resource, Site};
use crate::accept;
use crate::alarm;
use crate::http::{self, Limits};
use crate::shutdown::Shutdown;

/// Stack of a connection coroutine, in words: reading a request head with
/// httparse and writing an answer from memory (gzip copies are made when
/// the site is generated, not here). may's odd-stack report (set this to
/// `0x4001`, run `cargo test [--release] --lib testsite -- --nocapture`)
/// gave at most 1035 words used in a debug build and 453 in a release
/// build over every test of this module (rustc 1.95, x86_64, 2026-12-02):
/// 0x1000 holds the debug figure four times.
const CONNECTION_STACK_WORDS: usize = 0x1000;

/// Idle keep-alive connections are closed after this long. One may timer
/// per read, but a long one: may 0.3.51's timer race needs a timeout that
/// fires within a few scheduling slices of being armed.
const IDLE: Duration = Duration::from_secs(5);

/// How long `/slow/` pages of a site with `scripted` pages take.
pub const SLOW_PAGE_DELAY: Duration = Duration::from_millis(300);

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// When its head had been read.
    pub at: Instant,
    /// The request target as sent (path and query).
    pub path: String,
    /// The status it was answered with.
    pub status: u16,
    /// Requests of this host being worked on at that moment, this one included.
    pub in_flight: usize,
}

/// What a running server shares with its connections. The std mutexes are
/// held only to copy or push a few words, never across a park or I/O, so a
/// may worker waits on them for nanoseconds at most.
struct Shared {
    site: Arc<Site>,
    host: usize,
    delays: Mutex<Vec<(String, Duration)>>,
    failures: Mutex<HashMap<String, (u16, u32)>>,
    log: Mutex<Vec<Logged>>,
    in_flight: AtomicUsize,
}

/// One host of a site on `127.0.0.1:PORT`; stopped when dropped.
pub struct SiteServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    accept: Option<JoinHandle<io::Result<()>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these; a poisoned lock still holds a value.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SiteServer {
    /// Bind one ephemeral port per host of `spec`, generate the site with
    /// those origins, and serve every host. Call it from a coroutine or a
    /// plain thread; the servers run on may's workers.
    pub fn start_all(spec: &super::SiteSpec) -> io::Result<(Vec<SiteServer>, Site)> {
        let listeners = (0..spec.hosts)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()?;
        let origins = listeners
            .iter()
            .map(|l| Ok(format!("http://{}", l.local_addr()?)))
            .collect::<io::Result<Vec<_>>>()?;
        let site = Arc::new(Site::generate(spec, &origins));
        let servers = listeners
            .into_iter()
            .enumerate()
            .map(|(host, listener)| SiteServer::serve(site.clone(), host, listener))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((servers, Site::clone(&site)))
    }

    /// Serve host `host` of `site` on `listener` (the nginx harness's
    /// backend serves the site it wrote, on ports of its own).
    pub fn serve(site: Arc<Site>, host: usize, listener: TcpListener) -> io::Result<SiteServer> {
        let addr = listener.local_addr()?;
        let scripted = site.spec().features.scripted && host == 0;
        let shared = Arc::new(Shared {
            site,
            host,
            delays: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
        });
        let shutdown = Shutdown::new();
        let accept = {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            go!(move || accept_loop(listener, shutdown, shared))
        };
        let server = SiteServer {
            addr,
            shared,
            shutdown,
            accept: Some(accept),
        };
        if scripted {
            server.set_delay("/slow/", SLOW_PAGE_DELAY);
            server.fail("/fail/1.html", 503, 2);
        }
        Ok(server)
    }

    /// From now on, requests whose path starts with `path_prefix` are
    /// answered `delay` late (the longest matching prefix wins; `"/"` slows
    /// every page; a zero delay removes the prefix). The wait parks on the
    /// process's [`alarm`], not on a may timer.
    pub fn set_delay(&self, path_prefix: &str, delay: Duration) {
        let mut delays = locked(&self.shared.delays);
        delays.retain(|(p, _)| p != path_prefix);
        if !delay.is_zero() {
            delays.push((path_prefix.to_owned(), delay));
            delays.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
    }

    /// Answer the next `times` requests for `path` with `status` (a `503`
    /// or `429` carries `Retry-After: 1`), then serve it as usual again.
    pub fn fail(&self, path: &str, status: u16, times: u32) {
        locked(&self.shared.failures).insert(path.to_owned(), (status, times));
    }

    /// Every request answered so far, in the order they were answered.
    pub fn requests(&self) -> Vec<Logged> {
        locked(&self.shared.log).clone()
    }
}

impl Drop for SiteServer {
    fn drop(&mut self) {
        self.shutdown.trigger(); // the accept waker wakes the loop
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shutdown: Shutdown, shared: Arc<Shared>) -> io::Result<()> {
    let _waker = accept::wake_on_shutdown(&listener, &shutdown)?;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        };
        if shutdown.is_triggered() {
            return Ok(());
        }
        let shared = shared.clone();
        let builder = Builder::new().stack_size(CONNECTION_STACK_WORDS);
        // A coroutine that cannot be spawned is a connection dropped.
        let _ = go!(builder, move || {
            let _ = connection(stream, &shared);
        });
    }
}

/// Serve requests on one connection until the client closes it, asks to
/// close, idles past [`IDLE`] or sends something that is not HTTP.
fn connection(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(stream);
    loop {
        let request = match http::read_request(&mut reader, &Limits::default()) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let body = format!("{e}\n");
                let out = reader.get_mut();
                return http::write_response(
                    out,
                    400,
                    "Bad Request",
                    "text/plain",
                    &[],
                    body.as_bytes(),
                );
            }
            Err(e) => return Err(e),
        };
        let at = Instant::now();
        let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = shared.answer(&request);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        locked(&shared.log).push(Logged {
            at,
            path: request.target.clone(),
            status: answer.status,
            in_flight,
        });
        let extra: Vec<(&str, &str)> = answer
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        let out = reader.get_mut();
        let reason = reason(answer.status);
        http::write_response(
            out,
            answer.status,
            reason,
            answer.content_type,
            &extra,
            &answer.body,
        )?;
        let close = http::header(&request.headers, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            return Ok(());
        }
    }
}

/// A response, before it is written.
struct Answer {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn bare(status: u16, headers: Vec<(&'static str, String)>) -> Answer {
        Answer {
            status,
            content_type: "text/plain",
            headers,
            body: format!("{status} {}\n", reason(status)).into_bytes(),
        }
    }
}

impl Shared {
    fn answer(&self, request: &http::Request) -> Answer {
        if request.method != "GET" {
            return Answer::bare(405, vec![("Allow", "GET".into())]);
        }
        let path = request.target.split('?').next().unwrap_or("/");
        if let Some(status) = self.scripted_failure(path) {
            let retry = matches!(status, 429 | 503);
            let headers = retry.then(|| ("Retry-After", "1".to_owned()));
            return Answer::bare(status, headers.into_iter().collect());
        }
        let delay = locked(&self.delays)
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, delay)| *delay);
        if let Some(delay) = delay {
            alarm::shared().sleep(delay); // no lock held: `delay` is a copy
        }
        let gzip = http::header(&request.headers, "accept-encoding")
            .is_some_and(|v| v.split(',').any(|c| c.trim().starts_with("gzip")));
        match self.site.get(self.host, path).as_deref() {
            None => Answer::bare(404, Vec::new()),
            Some(Resource::Status(status)) => Answer::bare(*status, Vec::new()),
            Some(Resource::Redirect { status, location }) => {
                Answer::bare(*status, vec![("Location", location.clone())])
            }
            Some(Resource::Page { body, content_type }) => {
                match self.site.gzipped(self.host, path).filter(|_| gzip) {
                    Some(compressed) => Answer {
                        status: 200,
                        content_type,
                        headers: vec![
                            ("Content-Encoding", "gzip".into()),
                            ("Vary", "Accept-Encoding".into()),
                        ],
                        body: compressed.to_vec(),
                    },
                    None => Answer {
                        status: 200,
                        content_type,
                        headers: Vec::new(),
                        body: body.clone(),
                    },
                }
            }
        }
    }

    /// The status a scripted failure answers `path` with, using up one time.
    fn scripted_failure(&self, path: &str) -> Option<u16> {
        let mut failures = locked(&self.failures);
        let (status, times) = failures.get_mut(path)?;
        if *times == 0 {
            return None;
        }
        *times -= 1;
        Some(*status)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
