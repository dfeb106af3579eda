//! Connecting a may `TcpStream` without may's `connect`, which races its own
//! event loop.
//!
//! may 0.3.51's `TcpStream::connect` and `connect_timeout` keep the new
//! socket's event data in the connect operation itself, on the calling
//! coroutine's stack (`io_data: OptionCell<IoData>`,
//! `src/io/sys/unix/net/tcp_stream_connect.rs:17`). When the connect cannot
//! finish at once, the coroutine parks and its worker runs `subscribe`:
//! it stores the coroutine in that event data, then reads the data again to
//! see whether the socket is already writable (lines 125-130). Between the
//! two, another worker's event loop can see the socket connect, run the
//! coroutine, and let it finish: `done` moves the event data out and the
//! coroutine's stack moves on. The first worker then reads freed memory.
//! Under load this book's load-balancer step 3 died in 8 of 78 debug runs
//! (three at a time on two busy cores): a segfault in `subscribe`, heap
//! corruption found later by `malloc`, or the panic "no data to deref for
//! OptionCell" on a worker, after which the process hangs. Reads and writes
//! borrow event data that the socket owns, so their window stays open only
//! if the resumed coroutine drops or moves the socket first: rarer, not
//! impossible (the book's Pitfalls reference, "Known may 0.3.51 bugs").
//!
//! [`connect`] starts a non-blocking connect itself, hands the socket to may
//! (which registers it with its event loop, as for any socket), and waits for
//! the connect to finish with an empty write, which is may's ordinary
//! `SocketWrite`: a TCP send on a socket still connecting fails with
//! `EAGAIN` (so the coroutine parks until the socket is writable), fails
//! with the connect's error if it failed, and sends nothing once it is
//! connected. The timeout is may's write timeout, so a connect that times
//! out fails with `ErrorKind::TimedOut`, as may's own does. It costs what
//! may's connect costs: the same system calls and one park.

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use may::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::timeout::for_may;

/// Connect to the first address `addr` names, waiting as long as the
/// kernel's SYN retries last (about two minutes on Linux). Pass an address,
/// not a host name: a name is resolved here, on the calling thread, which
/// on a coroutine blocks its worker (the book's Pitfalls reference).
pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
    let addr = first(addr)?;
    connect_with(&addr, None)
}

/// Connect to `addr`, giving up after `timeout` with
/// `ErrorKind::TimedOut` (rounded up to whole milliseconds, which is what
/// may keeps). The same signature as may's `TcpStream::connect_timeout`.
pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    connect_with(addr, Some(for_may(timeout)))
}

fn first(addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address to connect to names no socket address",
        )
    })
}

// ANCHOR: connect
fn connect_with(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&(*addr).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // Safety: the descriptor is a stream socket we own, handed over whole.
    let mut stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    stream.set_write_timeout(timeout)?;
    // Parks until the socket is writable, and returns the connect's error if
    // it failed (see the module's documentation).
    let sent = stream.write(&[])?;
    debug_assert_eq!(sent, 0, "an empty write sends nothing");
    stream.set_write_timeout(None)?;
    Ok(stream)
}
// ANCHOR_END: connect

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Instant;

    use may::go;
    use may::net::TcpListener;

    use super::*;
    use crate::runtime::configure_for_tests;

    #[test]
    fn a_connection_carries_bytes_both_ways() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = go!(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut ping = [0; 4];
            peer.read_exact(&mut ping).unwrap();
            peer.write_all(b"pong").unwrap();
            ping
        });
        let mut stream = go!(move || connect(addr)).join().unwrap().unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
        stream.write_all(b"ping").unwrap();
        let mut pong = [0; 4];
        stream.read_exact(&mut pong).unwrap();
        assert_eq!((&pong, &server.join().unwrap()), (b"pong", b"ping"));
        // The connect's timeout is gone: it must not cut the caller's writes.
        assert_eq!(stream.write_timeout().unwrap(), None);
    }

    #[test]
    fn a_refused_connect_says_so() {
        configure_for_tests();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let refused = go!(move || connect_timeout(&addr, Duration::from_secs(5)))
            .join()
            .unwrap();
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
    }

    #[test]
    fn a_listener_that_never_accepts_times_the_connect_out() {
        configure_for_tests();
        // A backlog of 0 queues one connection; the kernel drops the SYNs
        // of the next ones, so they stay connecting.
        let full = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        full.listen(0).unwrap();
        let addr = full.local_addr().unwrap().as_socket().unwrap();
        let timeout = Duration::from_millis(300);
        let outcome = go!(move || {
            let mut held = Vec::new();
            for _ in 0..4 {
                let started = Instant::now();
                match connect_timeout(&addr, timeout) {
                    Ok(stream) => held.push(stream),
                    Err(e) => return Some((e.kind(), started.elapsed())),
                }
            }
            None
        })
        .join()
        .unwrap();
        let (kind, took) = outcome.expect("a connect to a full queue times out");
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(took >= timeout, "{took:?}");
    }

    #[test]
    fn many_coroutines_connect_at_once() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = go!(move || {
            let mut accepted = Vec::new();
            for _ in 0..256 {
                accepted.push(listener.accept().unwrap().0);
            }
            accepted.len()
        });
        let clients: Vec<_> = (0..256).map(|_| go!(move || connect(addr))).collect();
        for client in clients {
            client.join().unwrap().unwrap();
        }
        assert_eq!(acceptor.join().unwrap(), 256);
    }

    #[test]
    fn a_name_with_no_address_is_an_error_not_a_panic() {
        let none: &[SocketAddr] = &[];
        assert_eq!(
            connect(none).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
