//! One accepted connection, whole or split into a reading and a writing half.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use may::net::TcpStream;
use rustls::{ServerConnection, StreamOwned};

use super::registry::{Closer, Tracked};
use super::tls_split;
use crate::shutdown::Shutdown;

/// The shortest idle or write timeout [`Conn`] accepts. may 0.3.51 keeps
/// socket timeouts on its timer thread, whose arming races the socket's
/// own bookkeeping (`crate::alarm`'s module doc): a race the worker loses
/// only if it is held off its CPU for the whole timeout, which for a
/// quarter of a second and more does not happen in practice. Timeouts
/// that short are also meaningless for a peer on a real network.
pub const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(250);

pub(crate) enum Stream {
    Plain(Tracked<TcpStream>),
    Tls(Box<StreamOwned<ServerConnection, Tracked<TcpStream>>>),
}

// ANCHOR: conn
/// One accepted connection, in its own coroutine (after the TLS handshake,
/// if the listener has TLS). Read and write it whole, or [`split`](Self::split)
/// it for a reader and a writer coroutine.
pub struct Conn {
    pub(crate) stream: Stream,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) stopping: Shutdown,
}
// ANCHOR_END: conn

/// The reading half of a [`Conn`].
pub struct ReadHalf {
    inner: ReadInner,
    peer: SocketAddr,
}

enum ReadInner {
    Plain(Tracked<TcpStream>),
    Tls(tls_split::Reader),
}

/// The writing half of a [`Conn`]: for TLS, the only place bytes are
/// written to the socket from (the reading half's own records, alerts and
/// key-update answers, go out through the same ordered output).
pub struct WriteHalf {
    inner: WriteInner,
    closer: Closer,
}

enum WriteInner {
    Plain(Tracked<TcpStream>),
    Tls(tls_split::Writer),
}

impl Conn {
    fn sock(&self) -> &Tracked<TcpStream> {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// This connection's id, unique in the process.
    pub fn id(&self) -> u64 {
        self.sock().id()
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The listener's address this connection came in on.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Whether the listener ran a TLS handshake for this connection.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Triggered when the server stops; its socket is shut at the same
    /// time, so a parked read ends too.
    pub fn stopping(&self) -> &Shutdown {
        &self.stopping
    }

    /// Reads that see no byte for `idle` fail with `ErrorKind::TimedOut`
    /// (`None`: wait for ever). Set it before [`split`](Self::split): the
    /// halves keep it. This is may's socket read timeout, one per read,
    /// no alarm to arm and cancel per read, which is why it must be at
    /// least [`MIN_SOCKET_TIMEOUT`] (a shorter one is refused with
    /// `InvalidInput`).
    pub fn set_idle_timeout(&self, idle: Option<Duration>) -> io::Result<()> {
        self.sock().set_read_timeout(checked(idle)?)
    }

    /// Writes that cannot make progress for `timeout` fail with
    /// `ErrorKind::TimedOut`: a peer that never reads cannot hold the
    /// writer for ever. At least [`MIN_SOCKET_TIMEOUT`], as for reads.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock().set_write_timeout(checked(timeout)?)
    }

    /// `TCP_NODELAY`: send each write at once, instead of holding a small
    /// segment while an earlier one is not yet acknowledged (Nagle's
    /// algorithm, which with a peer's delayed ACKs costs tens of
    /// milliseconds). Right for a server whose writer already gathers what
    /// is queued into one write.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock().set_nodelay(on)
    }

    /// A handle that shuts this connection's socket from anywhere.
    pub fn closer(&self) -> Closer {
        self.sock().closer()
    }

    // ANCHOR: split
    /// Two halves for a reader coroutine and a writer coroutine. Plain:
    /// each half owns a descriptor of the socket (`try_clone`). TLS: see
    /// the writing half; the halves share the rustls connection.
    pub fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        let peer = self.peer;
        match self.stream {
            Stream::Plain(read) => {
                let write = Tracked::new(read.state(), read.try_clone()?);
                let closer = read.closer();
                let reader = ReadHalf {
                    inner: ReadInner::Plain(read),
                    peer,
                };
                let writer = WriteHalf {
                    inner: WriteInner::Plain(write),
                    closer,
                };
                Ok((reader, writer))
            }
            Stream::Tls(stream) => {
                let (tls, read) = stream.into_parts();
                let write = Tracked::new(read.state(), read.try_clone()?);
                let closer = read.closer();
                let (r, w) = tls_split::split(tls, read, write);
                let reader = ReadHalf {
                    inner: ReadInner::Tls(r),
                    peer,
                };
                let writer = WriteHalf {
                    inner: WriteInner::Tls(w),
                    closer,
                };
                Ok((reader, writer))
            }
        }
    }
    // ANCHOR_END: split
}

/// `timeout` if may can keep it safely (see [`MIN_SOCKET_TIMEOUT`]).
fn checked(timeout: Option<Duration>) -> io::Result<Option<Duration>> {
    match timeout {
        Some(t) if t < MIN_SOCKET_TIMEOUT => Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "a socket timeout of {t:?} is under {MIN_SOCKET_TIMEOUT:?}, \
                 the shortest may 0.3.51 keeps safely"
            ),
        )),
        other => Ok(other),
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl ReadHalf {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            ReadInner::Plain(s) => s.read(buf),
            ReadInner::Tls(s) => s.read(buf),
        }
    }
}

impl WriteHalf {
    /// Shut the socket in both directions: a read parked on the
    /// [`ReadHalf`] wakes with end-of-file (or an error).
    pub fn close(&self) {
        self.closer.close();
    }

    /// A handle that can close the socket from anywhere (router, outbox).
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Shut the writing side only (a half-close): the peer reads what was
    /// sent, then end-of-file, and may go on sending; the [`ReadHalf`]
    /// still reads it. A tunnel passes one side's end of stream on this
    /// way without cutting the other direction.
    ///
    /// TLS: `ErrorKind::Unsupported`. A TLS half-close is a `close_notify`
    /// alert and then the TCP half-close, and the alert must be made by
    /// the rustls connection the two halves share and leave through their
    /// one ordered output (`tls_split.rs`), which this half does not reach.
    /// A TLS 1.2 peer also answers `close_notify` by closing its own side
    /// (RFC 5246 7.2.1), so the other direction would end anyway. Use
    /// [`close`](Self::close) there.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match &self.inner {
            WriteInner::Plain(s) => s.shutdown(std::net::Shutdown::Write),
            WriteInner::Tls(_) => Err(io::Error::new(
                ErrorKind::Unsupported,
                "a TLS connection has no half-close here; close it whole",
            )),
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            WriteInner::Plain(s) => s.write(buf),
            WriteInner::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriteInner::Plain(s) => s.flush(),
            WriteInner::Tls(s) => s.flush(),
        }
    }
}
