//! Idle keep-alive connections to origin servers, kept for the next request
//! to the same address.
//!
//! Keyed by the *resolved* `SocketAddr`, not by the name: the access policy
//! was checked on that address, so a pooled connection only ever goes where
//! a request was allowed to go, and two names of one server share theirs.
//!
//! Bounded three ways ([`PoolLimits`], from `--origin-idle-per-host`,
//! `--origin-idle-total` and `--origin-idle-timeout`): idle connections per
//! address, idle connections in all, and how long one may sit idle. An
//! origin closes an idle keep-alive connection after its own timeout
//! (Apache's default is 5 s), and a request sent just as it does fails;
//! keeping ours shorter than that makes such races rare, the retry in
//! `forward.rs` covers the rest. A sweeper thread drops expired connections even when no request
//! comes, so a quiet proxy does not hold sockets the origins have closed.
//!
//! A std `Mutex` guards the map. It is held to push, pop, or sweep at most
//! [`PoolLimits::total`] entries: never across I/O or a park. Connections
//! thrown out are closed (a system call) after it is released, and the
//! liveness check of a connection taken out is made outside it too.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, ErrorKind};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use may::net::TcpStream;

/// What an origin connection reads its response heads through. A head is
/// bounded by the forwarder's limits, not by this.
const READ_BUF: usize = 8 * 1024;
/// What a request is written through: one copy buffer's piece plus its
/// chunk framing, so a re-chunked piece leaves in one write.
pub const WRITE_BUF: usize = crate::forward::COPY_BUF + 64;

/// One connection to an origin server, with the buffers it is read and
/// written through (they stay with it, so nothing read ahead is lost).
pub struct Origin {
    pub reader: BufReader<TcpStream>,
    pub writer: BufWriter<TcpStream>,
    pub addr: SocketAddr,
    /// Whether it carried a request before this one: a reused connection
    /// may turn out to have been closed by the origin meanwhile.
    pub reused: bool,
}

impl Origin {
    /// Wrap a fresh connection to `addr`; `timeout` bounds each read and
    /// each write (a silent or stalled origin cannot hold a request).
    pub fn new(stream: TcpStream, addr: SocketAddr, timeout: Duration) -> io::Result<Origin> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        Ok(Origin {
            reader: BufReader::with_capacity(READ_BUF, stream),
            writer: BufWriter::with_capacity(WRITE_BUF, writer),
            addr,
            reused: false,
        })
    }

    /// Close it now, mid-message or broken: the socket is shut first, so
    /// the writer's drop (which flushes what is left) cannot wait on it.
    pub fn close(self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Whether an idle connection is still open and quiet: nothing left
    /// over in its buffer, and a non-blocking `peek` (a system call that
    /// never waits; may's sockets are non-blocking underneath) finds no
    /// byte and no end-of-file. An origin that closed sends a FIN, which
    /// `peek` sees as `Ok(0)`; one that sent bytes unasked is out of step.
    fn is_open_and_quiet(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.reader.get_ref().inner().peek(&mut probe),
            Err(e) if e.kind() == ErrorKind::WouldBlock
        )
    }
}

/// How many idle connections the pool keeps, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle connections to one address: enough for a few requests at once
    /// to one busy origin, few enough that one origin cannot fill the pool.
    pub per_dest: usize,
    /// Idle connections in all (each holds two descriptors and its buffers).
    pub total: usize,
    /// How long a connection may sit idle before it is closed.
    pub idle_for: Duration,
}

struct Idle {
    origin: Origin,
    since: Instant,
}

#[derive(Default)]
struct State {
    /// Oldest first per address: the newest is at the end.
    idle: HashMap<SocketAddr, Vec<Idle>>,
    count: usize,
}

/// The idle connections, bounded by [`PoolLimits`].
pub struct Pool {
    state: Mutex<State>,
    limits: PoolLimits,
}

/// Sweep `pool` twice per idle period on an OS thread of its own: it only
/// sleeps and closes sockets, which is no work for a may worker, and a
/// coroutine woken by a sleep would run on may's timer thread. It ends
/// when the pool is dropped. If the OS refuses the thread, the pool is
/// still swept by every `put`.
fn start_sweeper(pool: &Arc<Pool>) {
    let weak: Weak<Pool> = Arc::downgrade(pool);
    let period = pool.limits.idle_for / 2;
    let spawned = std::thread::Builder::new()
        .name("origin-pool-sweeper".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match weak.upgrade() {
                Some(pool) => pool.sweep(Instant::now()),
                None => return,
            }
        });
    if let Err(e) = spawned {
        eprintln!("origin pool: no sweeper thread ({e}); idle connections expire on use");
    }
}

impl Pool {
    /// The program's pool, shared by every connection (a proxy forwards to
    /// one world), with its sweeper running.
    pub fn start(limits: PoolLimits) -> Arc<Pool> {
        let pool = Arc::new(Pool::new(limits));
        start_sweeper(&pool);
        pool
    }

    pub fn new(limits: PoolLimits) -> Pool {
        Pool {
            state: Mutex::new(State::default()),
            limits,
        }
    }

    /// An idle connection to one of `addrs` (tried in order), the most
    /// recently used first (the least likely to have been closed), checked
    /// to be still open. `None`: connect a fresh one.
    pub fn take(&self, addrs: &[SocketAddr]) -> Option<Origin> {
        self.take_at(addrs, Instant::now())
    }

    fn take_at(&self, addrs: &[SocketAddr], now: Instant) -> Option<Origin> {
        loop {
            let (found, expired) = self.pop_newest(addrs, now);
            drop(expired); // closed outside the lock
            let mut origin = found?;
            if origin.is_open_and_quiet() {
                origin.reused = true;
                return Some(origin);
            }
            // Closed by the origin while idle: drop it, look again.
        }
    }

    /// Pop the newest unexpired idle connection to one of `addrs`; also
    /// returns the expired ones found on the way, to close outside the lock.
    fn pop_newest(&self, addrs: &[SocketAddr], now: Instant) -> (Option<Origin>, Vec<Idle>) {
        let mut expired = Vec::new();
        let mut state = self.state.lock().unwrap();
        let mut found = None;
        for addr in addrs {
            let Some(idle) = state.idle.get_mut(addr) else {
                continue;
            };
            while let Some(newest) = idle.pop() {
                if now.duration_since(newest.since) < self.limits.idle_for {
                    found = Some(newest.origin);
                    break;
                }
                expired.push(newest);
            }
            if idle.is_empty() {
                state.idle.remove(addr);
            }
            if found.is_some() {
                break;
            }
        }
        state.count -= expired.len() + usize::from(found.is_some());
        (found, expired)
    }

    /// Keep `origin` (its response read to the end, the origin willing)
    /// for the next request to its address, unless that address or the
    /// whole pool is full: then it is closed.
    pub fn put(&self, origin: Origin) {
        self.put_at(origin, Instant::now());
    }

    fn put_at(&self, origin: Origin, now: Instant) {
        let (expired, refused) = {
            let mut state = self.state.lock().unwrap();
            let mut expired = Vec::new();
            if state.count >= self.limits.total {
                self.sweep_locked(&mut state, now, &mut expired);
            }
            let here = state.idle.get(&origin.addr).map_or(0, Vec::len);
            let refused = match state.count >= self.limits.total || here >= self.limits.per_dest {
                true => Some(origin),
                false => {
                    let idle = Idle { origin, since: now };
                    state.idle.entry(idle.origin.addr).or_default().push(idle);
                    state.count += 1;
                    None
                }
            };
            (expired, refused)
        };
        drop((expired, refused)); // closed outside the lock
    }

    /// Close every connection idle for `idle_for` or longer.
    pub fn sweep(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            self.sweep_locked(&mut state, now, &mut expired);
        }
        drop(expired);
    }

    fn sweep_locked(&self, state: &mut State, now: Instant, expired: &mut Vec<Idle>) {
        let before = expired.len();
        let idle_for = self.limits.idle_for;
        state.idle.retain(|_, idle| {
            // Oldest first: the expired ones are at the front.
            let keep_from = idle
                .iter()
                .position(|i| now.duration_since(i.since) < idle_for)
                .unwrap_or(idle.len());
            expired.extend(idle.drain(..keep_from));
            !idle.is_empty()
        });
        state.count -= expired.len() - before;
    }

    /// Idle connections now.
    #[cfg(test)]
    pub fn idle_now(&self) -> usize {
        self.state.lock().unwrap().count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may::net::TcpListener;
    use may_patterns::runtime::configure_for_tests;

    /// A listener (its backlog accepts connections without `accept`) and
    /// `n` connections to it, as pool entries.
    fn origins(n: usize) -> (TcpListener, Vec<Origin>) {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let made = (0..n)
            .map(|_| {
                let s = may_patterns::net::connect(addr).unwrap();
                Origin::new(s, addr, Duration::from_secs(5)).unwrap()
            })
            .collect();
        (listener, made)
    }

    fn limits(per_dest: usize, total: usize) -> PoolLimits {
        PoolLimits {
            per_dest,
            total,
            idle_for: Duration::from_secs(4),
        }
    }

    #[test]
    fn a_put_connection_is_taken_again_and_marked_reused() {
        let (listener, mut made) = origins(1);
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(limits(4, 256));
        assert!(pool.take(&[addr]).is_none());
        pool.put(made.pop().unwrap());
        assert_eq!(pool.idle_now(), 1);
        let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let again = pool.take(&[other, addr]).expect("the idle connection");
        assert!(again.reused);
        assert_eq!(pool.idle_now(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_per_dest_and_total() {
        let (_a, made_a) = origins(6);
        let pool = Pool::new(limits(4, 256));
        for origin in made_a {
            pool.put(origin);
        }
        assert_eq!(pool.idle_now(), 4, "per destination");

        let (_b, made_b) = origins(3);
        let (c, made_c) = origins(3);
        let pool = Pool::new(limits(4, 5));
        for origin in made_b.into_iter().chain(made_c) {
            pool.put(origin);
        }
        assert_eq!(pool.idle_now(), 5, "in all");
        let to_c = [c.local_addr().unwrap()];
        let taken = std::iter::from_fn(|| pool.take(&to_c)).count();
        assert_eq!(taken, 2, "the last one to c found the pool full");
    }

    #[test]
    fn idle_connections_expire() {
        let (listener, made) = origins(2);
        let addr = listener.local_addr().unwrap();
        let pool = Pool::new(limits(4, 256));
        let start = Instant::now();
        let mut made = made.into_iter();
        pool.put_at(made.next().unwrap(), start);
        pool.put_at(made.next().unwrap(), start + Duration::from_secs(3));
        pool.sweep(start + Duration::from_secs(5));
        assert_eq!(pool.idle_now(), 1, "the older one is swept");
        assert!(pool
            .take_at(&[addr], start + Duration::from_secs(8))
            .is_none());
        assert_eq!(pool.idle_now(), 0, "an expired one is not handed out");
    }

    #[test]
    fn a_full_pool_makes_room_by_sweeping_expired_ones() {
        let (_listener, made) = origins(3);
        let pool = Pool::new(limits(4, 2));
        let start = Instant::now();
        let mut made = made.into_iter();
        pool.put_at(made.next().unwrap(), start);
        pool.put_at(made.next().unwrap(), start);
        pool.put_at(made.next().unwrap(), start + Duration::from_secs(5));
        assert_eq!(pool.idle_now(), 1);
    }

    #[test]
    fn a_connection_the_origin_closed_is_not_handed_out() {
        let (listener, mut made) = origins(1);
        let addr = listener.local_addr().unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(served); // the origin closes the idle connection
        drop(listener);
        let pool = Pool::new(limits(4, 256));
        let origin = made.pop().unwrap();
        // Wait until the FIN has arrived (a readiness probe, bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while origin.is_open_and_quiet() {
            assert!(Instant::now() < deadline, "no FIN seen");
            may::coroutine::yield_now();
        }
        pool.put(origin);
        assert!(pool.take(&[addr]).is_none());
        assert_eq!(pool.idle_now(), 0);
    }
}
