//! Origin connections kept open for the next request, from step 2 on. A
//! step includes this file with `#[path = "steps_pool.rs"] mod steps_pool;`.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use may::net::TcpStream;

use crate::steps_request::{CONNECT_TIMEOUT, IDLE};

// ANCHOR: pool
/// An open connection to an origin, with its buffers.
pub struct Upstream {
    pub addr: SocketAddr,
    pub reader: BufReader<TcpStream>,
    pub writer: BufWriter<TcpStream>,
}

/// How many idle connections the pool keeps per destination, and in all.
pub const IDLE_PER_DESTINATION: usize = 4;
const IDLE_TOTAL: usize = 256;
/// How long an idle connection is kept: less than the shortest time common
/// servers keep one (Apache's and Node.js's default is 5 s, nginx's 75 s),
/// so the pool rarely hands out one the origin has already closed. That
/// matters most for a request with a body, which is not sent twice.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Idle origin connections by destination, shared by every client
/// connection. A std `Mutex`, held for a push or a pop, never across a park.
#[derive(Default)]
pub struct Pool {
    pub idle: Mutex<HashMap<SocketAddr, Vec<(Instant, Upstream)>>>,
    /// Connections opened to origins, for the demo's counts.
    pub opened: AtomicU64,
}

impl Pool {
    /// The most recently used idle connection to `addr`, if one is fresh.
    pub fn take(&self, addr: SocketAddr) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(&addr)?;
        list.retain(|(since, _)| since.elapsed() < POOL_IDLE);
        let upstream = list.pop().map(|(_, upstream)| upstream);
        if list.is_empty() {
            idle.remove(&addr);
        }
        upstream
    }

    /// Keep `upstream` for the next request, unless the pool is full:
    /// then it is dropped, which closes it.
    pub fn put(&self, upstream: Upstream) {
        let mut idle = self.idle.lock().unwrap();
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(upstream.addr).or_default();
        if total < IDLE_TOTAL && list.len() < IDLE_PER_DESTINATION {
            list.push((Instant::now(), upstream));
        }
    }

    /// A new connection to the first of `addrs` that answers (until step
    /// 5 there is one; a name may resolve to several).
    pub fn connect(&self, addrs: &[SocketAddr]) -> io::Result<Upstream> {
        let (addr, stream) = connect_first(addrs)?;
        stream.set_read_timeout(Some(IDLE))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Upstream {
            addr,
            writer: BufWriter::new(stream.try_clone()?),
            reader: BufReader::new(stream),
        })
    }
}

/// Connect to the first of `addrs` that accepts within `CONNECT_TIMEOUT`:
/// which one, and the connection.
pub fn connect_first(addrs: &[SocketAddr]) -> io::Result<(SocketAddr, TcpStream)> {
    let mut failed = io::Error::other("no address to connect to");
    for &addr in addrs {
        match may_patterns::net::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok((addr, stream)),
            Err(e) => failed = e,
        }
    }
    Err(failed)
}
// ANCHOR_END: pool
