//! Keep-alive connections to the backends: a small idle pool per backend,
//! as nginx's `keepalive` does, so a request does not pay a TCP handshake
//! (and the backend a new connection) every time.
//!
//! - At most [`IDLE_PER_BACKEND`] idle connections per backend; one more
//!   is closed instead of kept.
//! - The most recently used one is taken first (it is the likeliest to be
//!   still open), and one idle for longer than [`MAX_IDLE`] is closed: a
//!   backend closes idle connections on its own timer, and a request sent
//!   on one it is closing fails.
//! - Before reuse, a non-blocking `peek` shows whether the backend has
//!   closed it (end-of-file) or sent something unasked; either way it is
//!   dropped. A close that crosses the request is still possible:
//!   `forward` retries such a request once on a fresh connection.
//!
//! The lock is may's, held for a push or a pop; the peek and any close
//! happen after it is released.
//!
//! A connection carrying a request is [`InUse`]: registered, so that on
//! shutdown [`Upstreams::shut_in_use`] can end a request still waiting for
//! a backend (its client's socket is already shut, so nobody would read
//! the answer) instead of letting it run to `--response-timeout`.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use may::net::TcpStream;
use may::sync::Mutex;

/// Idle connections kept per backend.
pub const IDLE_PER_BACKEND: usize = 32;

/// Idle connections older than this are closed, not reused: below the
/// keep-alive timeout of common servers (nginx 75 s, Apache httpd 5 s,
/// Node.js 5 s), so we close first.
pub const MAX_IDLE: Duration = Duration::from_secs(4);

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// The idle connections of every backend, fixed at start, and the
/// connections in use.
pub struct Upstreams {
    idle: HashMap<SocketAddr, Mutex<Vec<Idle>>>,
    in_use: Mutex<InUseSet>,
}

/// The descriptors of the connections in use, by registration id.
#[derive(Default)]
struct InUseSet {
    next_id: u64,
    fds: HashMap<u64, RawFd>,
    /// Set by [`Upstreams::shut_in_use`]: later registrations are shut at once.
    shut: bool,
}

impl Upstreams {
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Upstreams {
            idle: addrs
                .into_iter()
                .map(|a| (a, Mutex::new(Vec::with_capacity(IDLE_PER_BACKEND))))
                .collect(),
            in_use: Mutex::new(InUseSet::default()),
        }
    }

    /// `stream`, registered as in use until it is dropped or given back
    /// with [`InUse::into_idle`].
    pub fn use_stream(&self, stream: TcpStream) -> InUse<'_> {
        let mut set = self.in_use.lock().unwrap();
        if set.shut {
            shut(stream.as_raw_fd());
        }
        let id = set.next_id;
        set.next_id += 1;
        set.fds.insert(id, stream.as_raw_fd());
        InUse {
            stream: Some(stream),
            id,
            upstreams: self,
        }
    }

    /// Shut every connection in use, and any registered from now on: a
    /// read parked on one ends at once.
    pub fn shut_in_use(&self) {
        let mut set = self.in_use.lock().unwrap();
        set.shut = true;
        for &fd in set.fds.values() {
            shut(fd);
        }
    }

    /// An idle connection to `addr` that still looks open, if there is one.
    pub fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let slot = self.idle.get(&addr)?;
        loop {
            let idle = slot.lock().unwrap().pop()?;
            if idle.since.elapsed() < MAX_IDLE && still_open(&idle.stream) {
                return Some(idle.stream);
            }
            // Dropped (closed) here, outside the lock.
        }
    }

    /// Keep `stream` for the next request to `addr`, or close it if that
    /// backend already has enough idle connections.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream) {
        let Some(slot) = self.idle.get(&addr) else {
            return;
        };
        let mut idle = slot.lock().unwrap();
        if idle.len() < IDLE_PER_BACKEND {
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// How many idle connections `addr` has (for tests).
    #[cfg(test)]
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.get(&addr).map_or(0, |s| s.lock().unwrap().len())
    }
}

/// `shutdown(2)` both ways on `fd`, which stays open.
fn shut(fd: RawFd) {
    // Safety: `fd` is a registered socket's, and an `InUse` leaves the set
    // (under the lock this runs under) before its socket can close, so the
    // descriptor is open and still that socket's. `ManuallyDrop`: borrowed,
    // not owned, so it is not closed here.
    let socket = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

/// A backend connection carrying a request. It leaves the in-use set
/// before its socket closes: in `Drop`, which runs before the field's own.
pub struct InUse<'a> {
    stream: Option<TcpStream>,
    id: u64,
    upstreams: &'a Upstreams,
}

impl InUse<'_> {
    fn stream(&mut self) -> &mut TcpStream {
        self.stream.as_mut().expect("taken only by into_idle")
    }

    /// The connection, no longer in use (to keep it idle).
    pub fn into_idle(mut self) -> TcpStream {
        self.leave();
        self.stream.take().expect("taken only here")
    }

    fn leave(&self) {
        self.upstreams.in_use.lock().unwrap().fds.remove(&self.id);
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Read for InUse<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream().read(buf)
    }
}

impl Write for InUse<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.stream().write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream().flush()
    }
}

/// Whether an idle connection is open with nothing to read: a peek on the
/// non-blocking descriptor (may's sockets are non-blocking underneath)
/// would block. End-of-file, an error or stray bytes all mean "do not use".
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.inner().peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use may::net::TcpListener;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn an_open_connection_is_reused_and_a_closed_one_is_not() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Upstreams::new([addr]);
        let a = may_patterns::net::connect(addr).unwrap();
        let (_a_server, _) = listener.accept().unwrap();
        let b = may_patterns::net::connect(addr).unwrap();
        let (b_server, _) = listener.accept().unwrap();
        // The backend closes `b`; wait until its FIN has arrived.
        drop(b_server);
        let start = Instant::now();
        let mut byte = [0u8; 1];
        while !matches!(b.inner().peek(&mut byte), Ok(0)) {
            assert!(start.elapsed() < Duration::from_secs(5), "no FIN seen");
            std::thread::yield_now();
        }
        pool.put(addr, a);
        pool.put(addr, b); // the one `take` tries first
        assert_eq!(pool.idle(addr), 2);
        let taken = pool.take(addr).expect("a is still open");
        assert_eq!(pool.idle(addr), 0, "b was dropped on the way");
        assert!(still_open(&taken));
        assert!(pool.take(addr).is_none());
    }

    #[test]
    fn the_idle_pool_is_bounded_and_unknown_backends_keep_nothing() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Upstreams::new([addr]);
        let mut servers = Vec::new();
        for _ in 0..IDLE_PER_BACKEND + 2 {
            pool.put(addr, may_patterns::net::connect(addr).unwrap());
            servers.push(listener.accept().unwrap());
        }
        assert_eq!(pool.idle(addr), IDLE_PER_BACKEND);
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        pool.put(other, may_patterns::net::connect(addr).unwrap());
        assert_eq!(pool.idle(other), 0);
        assert!(pool.take(other).is_none());
    }

    #[test]
    fn a_shutdown_shuts_connections_in_use_and_any_taken_after() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Upstreams::new([addr]);
        let mut before = pool.use_stream(may_patterns::net::connect(addr).unwrap());
        let _server_side = listener.accept().unwrap();
        let done = pool.use_stream(may_patterns::net::connect(addr).unwrap());
        let _other_side = listener.accept().unwrap();
        let kept = done.into_idle(); // left the set: not shut
        pool.shut_in_use();
        let mut byte = [0u8; 1];
        // A read parked here would end the same way: end-of-file.
        assert_eq!(before.read(&mut byte).unwrap(), 0);
        assert!(still_open(&kept));
        let mut after = pool.use_stream(may_patterns::net::connect(addr).unwrap());
        assert_eq!(after.read(&mut byte).unwrap(), 0, "shut as it registers");
        assert!(pool.in_use.lock().unwrap().fds.len() == 2);
        drop((before, after));
        assert!(pool.in_use.lock().unwrap().fds.is_empty());
    }
}
