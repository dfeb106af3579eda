//! Wake an accept loop when its server is told to stop.
//!
//! may's `TcpListener::accept` parks until a client arrives and has no
//! timeout, so triggering a [`Shutdown`] alone leaves the accept loop asleep.
//! [`wake_on_shutdown`] starts a small coroutine that waits for the signal
//! and then *is* that client: it connects once to the listener, `accept`
//! returns, and the loop sees the signal and ends.
//!
//! ```
//! use may::net::TcpListener;
//! use may_patterns::{accept, shutdown::Shutdown};
//!
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let shutdown = Shutdown::new();
//! let stop = shutdown.clone();
//! std::thread::spawn(move || stop.trigger()); // Ctrl-C, say
//!
//! let waker = accept::wake_on_shutdown(&listener, &shutdown).unwrap();
//! let mut served = 0;
//! while let Ok(_client) = listener.accept() {
//!     if shutdown.is_triggered() {
//!         break; // the waker's connection: do not serve it
//!     }
//!     served += 1;
//! }
//! waker.finish(); // joins the waker coroutine
//! assert_eq!(served, 0);
//! ```
//!
//! The waker connects to the loopback address of the listener's family
//! when the listener is bound to every interface (`0.0.0.0` or `[::]`),
//! from a coroutine with a may socket, so no worker blocks.
//!
//! Its connection needs a file descriptor. A server that has used every one
//! does not need it: Linux takes the descriptor for a new connection before
//! it looks for one, so `accept` then fails with `EMFILE` instead of
//! parking, and the loop sees the signal as it handles the error (the
//! primer's echo server shows it). If something else holds the last
//! descriptors while `accept` is parked, the waker's connection fails and
//! the loop wakes with the next client instead.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may::coroutine::JoinHandle;
use may::go;
use may::net::TcpListener;

use crate::shutdown::Shutdown;

/// How long the waker's connection may take. On loopback it takes
/// microseconds; the bound only keeps [`AcceptWaker::finish`] from
/// waiting for ever if the listener's backlog is full and nothing accepts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The running waker. [`finish`](Self::finish) it (or drop it) once the
/// accept loop has ended; that joins its coroutine, whether or not the
/// shutdown came.
#[must_use = "dropping the waker at once stops it before it can wake anything"]
pub struct AcceptWaker {
    /// Triggered by the server's shutdown, or by `finish` when the accept
    /// loop ended on its own.
    stop_waiting: Shutdown,
    /// Set by `finish`: the loop is over, there is nothing to wake.
    loop_ended: Arc<AtomicBool>,
    coroutine: Option<JoinHandle<()>>,
}

/// Start a coroutine that connects once to `listener` when `shutdown` is
/// triggered, so that an `accept` parked on it returns.
///
/// Fails if the listener's address cannot be read.
pub fn wake_on_shutdown(listener: &TcpListener, shutdown: &Shutdown) -> io::Result<AcceptWaker> {
    let target = loopback_for(listener.local_addr()?);
    let stop_waiting = shutdown.child();
    let loop_ended = Arc::new(AtomicBool::new(false));
    let coroutine = {
        let (stop_waiting, loop_ended) = (stop_waiting.clone(), loop_ended.clone());
        go!(move || {
            stop_waiting.wait();
            if loop_ended.load(Ordering::SeqCst) {
                return; // the loop ended by itself: no one to wake
            }
            // An error means the loop is gone, the backlog is full (so
            // `accept` has clients to return) or no descriptor is free
            // (see the module comment): nothing more to do here.
            let _ = crate::net::connect_timeout(&target, CONNECT_TIMEOUT);
        })
    };
    Ok(AcceptWaker {
        stop_waiting,
        loop_ended,
        coroutine: Some(coroutine),
    })
}

impl AcceptWaker {
    /// The accept loop has ended: stop the waker if it is still waiting,
    /// and join its coroutine.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for AcceptWaker {
    fn drop(&mut self) {
        self.loop_ended.store(true, Ordering::SeqCst);
        self.stop_waiting.trigger(); // the child only: the server's signal is untouched
        if let Some(coroutine) = self.coroutine.take() {
            let _ = coroutine.join();
        }
    }
}

/// Where to connect to reach a listener bound to `addr`: the loopback
/// address of the same family for an "every interface" address.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::configure_for_tests;
    use std::thread;

    /// Accept until `shutdown`, on a plain thread, telling `served` of each
    /// client; returns how many it served.
    fn accept_loop(
        listener: TcpListener,
        shutdown: Shutdown,
        served: std::sync::mpsc::Sender<()>,
    ) -> thread::JoinHandle<usize> {
        thread::spawn(move || {
            let waker = wake_on_shutdown(&listener, &shutdown).unwrap();
            let mut count = 0;
            while listener.accept().is_ok() && !shutdown.is_triggered() {
                count += 1;
                served.send(()).unwrap();
            }
            waker.finish();
            count
        })
    }

    fn stops_a_loop_bound_to(addr: &str) {
        configure_for_tests();
        let listener = TcpListener::bind(addr).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = Shutdown::new();
        let (served_tx, served) = std::sync::mpsc::channel();
        let server = accept_loop(listener, shutdown.clone(), served_tx);
        let client = loopback_for(SocketAddr::new(addr_ip(addr), port));
        drop(std::net::TcpStream::connect(client).unwrap());
        served.recv_timeout(Duration::from_secs(10)).unwrap();
        shutdown.trigger(); // the loop is parked in accept() again
        assert_eq!(server.join().unwrap(), 1, "one client, then the waker");
    }

    fn addr_ip(addr: &str) -> std::net::IpAddr {
        addr.parse::<SocketAddr>().unwrap().ip()
    }

    #[test]
    fn wakes_a_loop_bound_to_ipv4_loopback() {
        stops_a_loop_bound_to("127.0.0.1:0");
    }

    #[test]
    fn wakes_a_loop_bound_to_every_ipv4_interface() {
        stops_a_loop_bound_to("0.0.0.0:0");
    }

    #[test]
    fn wakes_a_loop_bound_to_every_ipv6_interface() {
        stops_a_loop_bound_to("[::]:0");
    }

    #[test]
    fn finishing_without_a_shutdown_connects_to_nothing() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shutdown = Shutdown::new();
        let waker = wake_on_shutdown(&listener, &shutdown).unwrap();
        waker.finish(); // returns: the waker stopped waiting
        assert!(!shutdown.is_triggered(), "the server's signal is untouched");
        shutdown.trigger();
        // Nothing connects now: a client of ours is the only one accepted.
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from, client.join().unwrap().local_addr().unwrap());
    }

    #[test]
    fn a_loopback_address_stays_as_it_is() {
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(loopback_for(local), local);
        let any6: SocketAddr = "[::]:7000".parse().unwrap();
        assert_eq!(loopback_for(any6), "[::1]:7000".parse().unwrap());
    }
}
