//! Every open connection of one `run`, so shutdown can close them all, and
//! the [`Closer`] that shuts one socket from anywhere.
//!
//! A connection's socket may be open under two descriptors at once (a
//! reading and a writing half, made by `dup`). Shutting either shuts the
//! socket, so a closer needs one that is still open, and must never use a
//! number the kernel has since handed to another file. Each owned
//! descriptor is therefore [`Tracked`]: it is listed in the connection's
//! [`CloseState`] while it is open, taken off the list *before* it is
//! closed, and [`Closer::close`] shuts a listed one under the same lock.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::slots::Permit;

/// Open connections by id. The std mutex is held for a map insert, remove
/// or copy (no I/O, no park), so coroutines and the accept loop share it.
#[derive(Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<u64, Weak<CloseState>>>,
}

/// What is shared by everything that holds one connection's socket.
pub(crate) struct CloseState {
    id: u64,
    /// The connection's open descriptors. Held while a descriptor is shut
    /// or closed (a syscall, never a park).
    fds: Mutex<Vec<RawFd>>,
    registry: Arc<Registry>,
    /// The connection's slot, given back when the last descriptor closes.
    _permit: Permit,
}

// ANCHOR: closer
/// Shuts one connection's socket in both directions, from any coroutine or
/// thread: a read parked on it returns end-of-file, a parked write fails.
/// Clone + Send + Sync; closing a connection that has ended does nothing.
#[derive(Clone)]
pub struct Closer {
    state: Arc<CloseState>,
}

impl Closer {
    /// Shut the socket (the descriptors stay open until their owners drop
    /// them, so no number is reused under anyone's feet).
    pub fn close(&self) {
        let fds = self.state.fds.lock().unwrap();
        if let Some(&fd) = fds.first() {
            // Safety: `fd` is listed, so it is open: it leaves the list
            // under this lock before its owner closes it. ManuallyDrop
            // keeps this borrowed handle from closing it.
            let socket = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            // ENOTCONN (the peer already went) is as good as done.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}
// ANCHOR_END: closer

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closer")
            .field("id", &self.state.id)
            .finish()
    }
}

/// An owned descriptor listed in its connection's [`CloseState`].
pub(crate) struct Tracked<T: AsRawFd> {
    /// Dropped by hand in `Drop`, after it is unlisted.
    io: ManuallyDrop<T>,
    state: Arc<CloseState>,
}

impl Registry {
    /// Register a new connection holding `permit`; `first` is its socket.
    pub(crate) fn add<T: AsRawFd>(self: &Arc<Self>, permit: Permit, first: T) -> Tracked<T> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(CloseState {
            id,
            fds: Mutex::new(Vec::new()),
            registry: self.clone(),
            _permit: permit,
        });
        self.open.lock().unwrap().insert(id, Arc::downgrade(&state));
        Tracked::new(&state, first)
    }

    /// Shut every open connection's socket.
    pub(crate) fn close_all(&self) {
        let open: Vec<Arc<CloseState>> = {
            let open = self.open.lock().unwrap();
            open.values().filter_map(Weak::upgrade).collect()
        };
        // Outside the map's lock: dropping the last Arc removes its entry.
        for state in open {
            Closer { state }.close();
        }
    }
}

impl Drop for CloseState {
    fn drop(&mut self) {
        self.registry.open.lock().unwrap().remove(&self.id);
    }
}

impl<T: AsRawFd> Tracked<T> {
    /// List `io`'s descriptor under `state` (another half of a connection).
    pub(crate) fn new(state: &Arc<CloseState>, io: T) -> Tracked<T> {
        state.fds.lock().unwrap().push(io.as_raw_fd());
        Tracked {
            io: ManuallyDrop::new(io),
            state: state.clone(),
        }
    }

    /// The connection's id, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.state.id
    }

    /// A closer for the connection this descriptor belongs to.
    pub(crate) fn closer(&self) -> Closer {
        Closer {
            state: self.state.clone(),
        }
    }

    /// The state, to track another descriptor of the same connection.
    pub(crate) fn state(&self) -> &Arc<CloseState> {
        &self.state
    }
}

impl<T: AsRawFd> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.io
    }
}

impl<T: AsRawFd> std::ops::DerefMut for Tracked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

impl<T: AsRawFd> Drop for Tracked<T> {
    fn drop(&mut self) {
        let mut fds = self.state.fds.lock().unwrap();
        let fd = self.io.as_raw_fd();
        fds.retain(|&listed| listed != fd);
        // Safety: `io` is never used again. Closed under the lock, so a
        // closer cannot pick this number between the unlisting and the close.
        unsafe { ManuallyDrop::drop(&mut self.io) };
    }
}

impl<T: AsRawFd + std::io::Read> std::io::Read for Tracked<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.io.read(buf)
    }
}

impl<T: AsRawFd + std::io::Write> std::io::Write for Tracked<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.io.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.io.flush()
    }
}
