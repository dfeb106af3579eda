//! Opening a connection: a TCP connection to the first address that
//! answers, then TLS for `https`; and the connection itself, which notes
//! every byte it receives for the [`watchdog`](super::watchdog).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;

use super::error::{FetchError, FetchErrorKind, TimeoutPhase};
use super::watchdog::Progress;
use crate::blocking;
use crate::tls;

/// A plain or TLS connection to one origin.
pub(super) struct Conn {
    stream: Stream,
    progress: Arc<Progress>,
}

enum Stream {
    Plain(TcpStream),
    // Boxed: a rustls connection is over a kilobyte, and connections move
    // in and out of the pool.
    Tls(Box<tls::ClientStream>),
}

impl Conn {
    /// `tcp` as it is (`server_name: None`) or after a TLS handshake with
    /// `server_name` (sent as SNI, checked against the certificate).
    pub(super) fn new(
        tcp: TcpStream,
        progress: Arc<Progress>,
        tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
    ) -> io::Result<Conn> {
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some((config, server_name)) => {
                Stream::Tls(Box::new(tls::connect(config, server_name, tcp)?))
            }
        };
        Ok(Conn { stream, progress })
    }

    /// What the watchdog of this connection's next exchange watches.
    pub(super) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(buf)?,
            Stream::Tls(s) => s.read(buf)?,
        };
        if n > 0 {
            self.progress.touch();
        }
        Ok(n)
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

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match &self.stream {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.sock.as_raw_fd(),
        }
    }
}

// ANCHOR: connect
/// Connect to the first of `addrs` that accepts, each try bounded by
/// `timeout` and all of them by `deadline`.
///
/// The connect runs on a [`blocking`] thread with std's `connect_timeout`
/// (a kernel wait, no may timer), and the socket is then handed to may.
/// may 0.3.51's own `connect` registers the coroutine with the socket and
/// then goes on reading its connect state, which another worker may have
/// finished and dropped already (`src/io/sys/unix/net/tcp_stream_connect.rs:113-130`;
/// the book's Pitfalls reference, "Known may 0.3.51 bugs"). The price: at
/// most [`blocking::DEFAULT_THREADS`] connects (and lookups) are under way
/// at once, the others queue; connections are pooled, so they are rare.
pub(super) fn tcp(
    addrs: &[SocketAddr],
    timeout: Duration,
    deadline: Instant,
    url: &str,
) -> Result<TcpStream, FetchError> {
    let mut last = None;
    for &addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        let phase = match left <= timeout {
            true => TimeoutPhase::Total,
            false => TimeoutPhase::Connect,
        };
        let wait = timeout.min(left);
        if wait.is_zero() {
            break;
        }
        let connect = move || std::net::TcpStream::connect_timeout(&addr, wait);
        match blocking::run(connect)
            .map_err(io::Error::from)
            .and_then(|r| r)
        {
            Ok(socket) => {
                // Requests are small and written at once: no Nagle delay.
                let _ = socket.set_nodelay(true);
                // Safety: `into_raw_fd` hands the descriptor over; nothing
                // else owns it.
                return Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) });
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let why = format!("no connection to {addr} within {wait:?}");
                last = Some(FetchError::new(FetchErrorKind::Timeout(phase), url, why));
            }
            Err(e) => {
                let why = format!("{addr}: {e}");
                last = Some(FetchError::new(FetchErrorKind::Connect, url, why));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        let why = "the total timeout passed before connecting";
        FetchError::new(FetchErrorKind::Timeout(TimeoutPhase::Total), url, why)
    }))
}
// ANCHOR_END: connect
