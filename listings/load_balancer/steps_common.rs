//! What the load balancer's steps share, written once: the backends of a
//! demo, the balancer running on its own thread, and the demo's client. A
//! step includes this file with `#[path = "steps_common.rs"] mod
//! steps_common;`; each step uses all of it, and the forwarding code, which
//! is what the steps change, stays in the steps.

use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

use may::net::TcpListener;
use may_patterns::backend::{Backend, BackendConfig};
use may_patterns::balance;
use may_patterns::http::{self, Limits};
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;

/// How long the demo client waits for an answer: a bound, not a
/// synchronisation (every answer in a demo comes within a second), so a
/// lost answer fails the demo instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

// ANCHOR: backends
/// Start one `may_patterns::backend` per `(name, latency)` on 127.0.0.1:0,
/// and the pool's view of each (named, weight 1). Keep the backends: each
/// stops when dropped.
pub fn start_backends(
    specs: &[(&str, Duration)],
) -> io::Result<(Vec<Backend>, Vec<balance::BackendConfig>)> {
    let mut running = Vec::new();
    let mut configs = Vec::new();
    for &(name, latency) in specs {
        let backend = Backend::start(BackendConfig::new(name, latency))?;
        configs.push(balance::BackendConfig {
            name: name.to_owned(),
            addr: backend.addr,
            weight: 1,
        });
        running.push(backend);
    }
    Ok((running, configs))
}
// ANCHOR_END: backends

/// A balancer serving on 127.0.0.1:0 on a thread of its own; stopped (and
/// waited for) when dropped.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<io::Result<server::Report>>>,
}

impl Running {
    /// Serve every connection with `handler`, on `may_patterns::server`'s
    /// accept loop (a cap on connections, a backoff when descriptors run
    /// out, every connection coroutine ended before it returns).
    pub fn start(handler: impl Fn(Conn) + Send + Sync + 'static) -> io::Result<Running> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread =
            std::thread::spawn(move || server::run(listener, &stop, Config::default(), handler));
        Ok(Running {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request on a connection of its own, as `curl` sends it; the whole
/// answer. Runs on a coroutine or on a plain thread (may's sockets block
/// the thread outside a coroutine).
pub fn fetch(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> io::Result<http::Response> {
    let mut stream = may_patterns::net::connect(addr)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    http::write_request(&mut stream, method, target, "lb", &[], body)?;
    http::read_response(&mut BufReader::new(stream), &Limits::default())
}

/// Who answered: the backend's name from its JSON body
/// (`{"backend":"alpha",...`), or the status of an answer that is not one.
pub fn answered_by(response: &http::Response) -> String {
    let body = String::from_utf8_lossy(&response.body);
    body.strip_prefix(r#"{"backend":""#)
        .and_then(|rest| rest.split('"').next())
        .filter(|_| response.status == 200)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("status {}", response.status))
}
