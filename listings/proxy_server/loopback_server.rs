//! A server on an ephemeral loopback port, on its own thread, for the
//! pitfalls and the exercises' forwarder. A listing includes this file with
//! `#[path = "loopback_server.rs"] mod loopback_server;`.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::thread::JoinHandle;

use may::net::TcpListener;
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;

// ANCHOR: running
/// A server running a handler per connection until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    stop: Shutdown,
    thread: JoinHandle<io::Result<server::Report>>,
}

/// Serve `handler` on `127.0.0.1:0`. A connection that fails is reported
/// on stderr as `who` (`pitfall_smuggling: a front`) unless its error is
/// one of `expected` (a peer that left, say).
pub fn start(
    who: &'static str,
    expected: &'static [ErrorKind],
    handler: impl Fn(Conn) -> io::Result<()> + Send + Sync + 'static,
) -> io::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Shutdown::new();
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            server::run(
                listener,
                &stop,
                Config::default(),
                move |conn| match handler(conn) {
                    Err(e) if !expected.contains(&e.kind()) => {
                        eprintln!("{who} connection failed: {e}")
                    }
                    _ => {}
                },
            )
        })
    };
    Ok(Running { addr, stop, thread })
}

impl Running {
    /// Stop accepting, close the open connections, and wait for the end.
    pub fn stop(self) -> io::Result<()> {
        self.stop.trigger();
        self.thread.join().expect("the server thread ends")?;
        Ok(())
    }
}
// ANCHOR_END: running
