//! Deadlines for sockets, kept by one sweeper thread instead of may's
//! socket timeouts.
//!
//! may 0.3.51 arms a socket timeout's timer before it has finished
//! registering the wait, and a timer that fires in between can leave may's
//! event loop holding a spent entry: the next event on that socket panics it
//! ("Node value is None", `may_queue-0.1.24/src/mpsc_list_v1.rs:44`) and the
//! process hangs (`may_patterns::alarm` explains the race, with may's
//! lines). It takes a worker held off its CPU for the whole timeout, so it
//! strikes short timeouts on a loaded machine; under wrk, the first version
//! of this gateway, with a socket timeout on every read, died of it. So the
//! gateway sets no socket timeout on its reads and writes. Each socket that
//! needs a deadline is registered here, and a deadline is an atomic store,
//! cheap enough to move three times per request (the library's `Alarm`
//! costs a descriptor and two messages per deadline, made for fewer,
//! shorter waits). A sweeper on its own OS thread wakes every [`TICK`] and
//! shuts down the sockets past their deadline: first their reading side, so
//! a parked read returns end-of-file and the connection can still answer
//! (408), then, if the deadline is still past one tick later, both sides.
//! A deadline is therefore kept to within one tick.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown as SocketShutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, BorrowedFd};
use std::thread::JoinHandle;

use may::net::TcpStream;
use may_patterns::shutdown::Shutdown;

/// How often the sweeper looks: the precision of every deadline.
pub const TICK: Duration = Duration::from_millis(50);

// ANCHOR: deadlines
/// Sockets with deadlines.
pub struct Deadlines {
    started: Instant,
    /// A std mutex: held to add, remove or sweep, never across a park.
    sockets: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Sockets shut down because their deadline passed.
    pub expired: AtomicU64,
}

struct Entry {
    /// A duplicate of the watched socket's descriptor, to shut it down
    /// with: a plain std socket, which may does not register or poll.
    socket: std::net::TcpStream,
    deadline: Arc<AtomicU64>,
    /// The deadline this entry was last struck for: a second strike for
    /// the same deadline closes both sides.
    struck: u64,
}

/// One socket's deadline; dropping it forgets the socket.
pub struct Watch {
    id: u64,
    /// Nanoseconds after `Deadlines::started`; 0 for none.
    deadline: Arc<AtomicU64>,
    table: Arc<Deadlines>,
}

impl Deadlines {
    pub fn new() -> Arc<Deadlines> {
        Arc::new(Deadlines {
            started: Instant::now(),
            sockets: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        })
    }

    /// Watch `socket` (through a duplicate of its descriptor), with no
    /// deadline yet.
    pub fn watch(self: &Arc<Self>, socket: &TcpStream) -> io::Result<Watch> {
        // Safety: `socket` is borrowed, so its descriptor is open while it
        // is duplicated; the duplicate is ours to close.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) }.try_clone_to_owned()?;
        let clone = std::net::TcpStream::from(fd);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Arc::new(AtomicU64::new(0));
        let entry = Entry {
            socket: clone,
            deadline: deadline.clone(),
            struck: 0,
        };
        self.sockets.lock().unwrap().insert(id, entry);
        Ok(Watch {
            id,
            deadline,
            table: self.clone(),
        })
    }

    /// Sockets watched now.
    pub fn len(&self) -> usize {
        self.sockets.lock().unwrap().len()
    }

    fn now(&self) -> u64 {
        (self.started.elapsed().as_nanos() as u64).max(1)
    }

    /// Shut down what is past its deadline: the reading side first, both
    /// sides on the next sweep.
    pub fn sweep(&self) {
        let now = self.now();
        for entry in self.sockets.lock().unwrap().values_mut() {
            let deadline = entry.deadline.load(Ordering::Relaxed);
            if deadline == 0 || now < deadline {
                continue;
            }
            if entry.struck != deadline {
                entry.struck = deadline;
                self.expired.fetch_add(1, Ordering::Relaxed);
                let _ = entry.socket.shutdown(SocketShutdown::Read);
            } else {
                let _ = entry.socket.shutdown(SocketShutdown::Both);
            }
        }
    }

    /// Shut down every watched socket: the server is stopping.
    pub fn close_all(&self) {
        for entry in self.sockets.lock().unwrap().values() {
            let _ = entry.socket.shutdown(SocketShutdown::Both);
        }
    }
}

impl Watch {
    /// The socket must be done with what it does next within `limit`.
    pub fn expire_in(&self, limit: Duration) {
        let at = self.table.now().saturating_add(limit.as_nanos() as u64);
        self.deadline.store(at, Ordering::Relaxed);
    }

    /// No deadline until the next `expire_in`.
    pub fn clear(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    /// Whether the current deadline has passed.
    pub fn expired(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Relaxed);
        deadline != 0 && self.table.now() >= deadline
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.table.sockets.lock().unwrap().remove(&self.id);
    }
}

/// Sweep `tables` every [`TICK`] until `shutdown`, on an OS thread of its
/// own: its wait blocks that thread, and no may timer is involved.
pub fn sweeper(tables: Vec<Arc<Deadlines>>, shutdown: Shutdown) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sweeper".into())
        .spawn(move || {
            while !shutdown.wait_timeout(TICK) {
                tables.iter().for_each(|t| t.sweep());
            }
        })
}
// ANCHOR_END: deadlines

#[cfg(test)]
mod tests {
    use super::*;
    use may::go;
    use may::net::TcpListener;
    use may_patterns::runtime::configure_for_tests;
    use std::io::{Read, Write};

    /// A connected pair: (server side, client side).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn a_parked_read_ends_at_its_deadline_and_the_socket_can_still_answer() {
        configure_for_tests();
        let table = Deadlines::new();
        let stop = Shutdown::new();
        let sweeper = sweeper(vec![table.clone()], stop.clone()).unwrap();
        let reader = go!(move || {
            let (mut server, mut client) = pair();
            let watch = table.watch(&server).unwrap();
            watch.expire_in(Duration::from_millis(100));
            let started = Instant::now();
            let mut byte = [0u8; 1];
            let read = server.read(&mut byte).unwrap(); // parks until swept
            let waited = started.elapsed();
            assert!(watch.expired());
            server.write_all(b"408").unwrap(); // the writing side is open
            let mut answer = [0u8; 3];
            client.read_exact(&mut answer).unwrap();
            drop(watch);
            (
                read,
                waited,
                answer,
                table.len(),
                table.expired.load(Ordering::Relaxed),
            )
        });
        let (read, waited, answer, left, expired) = reader.join().unwrap();
        stop.trigger();
        sweeper.join().unwrap();
        assert_eq!(read, 0, "end-of-file");
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(&answer, b"408");
        assert_eq!((left, expired), (0, 1));
    }

    #[test]
    fn a_cleared_deadline_is_never_struck() {
        configure_for_tests();
        let table = Deadlines::new();
        let (server, _client) = go!(pair).join().unwrap();
        let watch = table.watch(&server).unwrap();
        watch.expire_in(Duration::ZERO);
        watch.clear();
        table.sweep();
        assert!(!watch.expired());
        assert_eq!(table.expired.load(Ordering::Relaxed), 0);
    }
}
