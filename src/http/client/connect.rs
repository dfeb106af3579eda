//! Opening a connection: a TCP connection to the first address that
//! answers, then TLS for `https`; and the connection itself, which notes
//! every byte it receives for the [`watchdog`](super::watchdog).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;

use super::error::{FetchError, FetchErrorKind, TimeoutPhase};
use super::watchdog::Progress;
use crate::timeout::for_may;
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
/// `timeout` and all of them by `deadline`. This is may's own connect
/// timeout: one timer per new connection (they are rare, the pool reuses
/// them), of seconds, not the thousands of short timers a watchdog avoids.
pub(super) fn tcp(
    addrs: &[SocketAddr],
    timeout: Duration,
    deadline: Instant,
    url: &str,
) -> Result<TcpStream, FetchError> {
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        let bounded_by_total = left <= timeout;
        let wait = for_may(timeout.min(left));
        if wait.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, wait) {
            Ok(tcp) => {
                // Requests are small and written at once: no Nagle delay.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let phase = match bounded_by_total {
                    true => TimeoutPhase::Total,
                    false => TimeoutPhase::Connect,
                };
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
