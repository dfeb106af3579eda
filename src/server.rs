//! The accept loop every server in this book runs on.
//!
//! [`run`] accepts on one listener until its [`Shutdown`] and runs a
//! handler for each connection in a coroutine of its own. It keeps the
//! limits a server open to the world needs:
//!
//! - a cap on open connections ([`Slots`], shared by every listener of a
//!   server); a client over it is sent [`Config::full_message`] and closed;
//! - on `EMFILE`/`ENFILE` (no descriptor left) it pauses, 10 ms doubling to
//!   1 s, instead of retrying at once: may returns those errors as they
//!   are, and the pending client stays in the backlog, so a loop that
//!   retries at once spins a core;
//! - the TLS handshake runs in the connection's coroutine, bounded by
//!   [`Config::handshake_timeout`], never in the accept loop, where one
//!   silent client would stall every accept behind it;
//! - idle and write timeouts per connection ([`Conn::set_idle_timeout`],
//!   [`Conn::set_write_timeout`]), so a peer that stops reading cannot hold
//!   a coroutine for ever;
//! - a registry of open sockets: on shutdown it stops accepting, shuts
//!   every socket, and returns only when every connection coroutine has
//!   ended.
//!
//! A tiny echo server:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use may_patterns::server::{self, Config};
//! use may_patterns::shutdown::Shutdown;
//!
//! let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let shutdown = Shutdown::new();
//! let server = {
//!     let shutdown = shutdown.clone();
//!     std::thread::spawn(move || {
//!         server::run(listener, &shutdown, Config::default(), |conn| {
//!             let (reader, mut writer) = conn.split().unwrap();
//!             for line in BufReader::new(reader).lines() {
//!                 let Ok(line) = line else { break };
//!                 if writeln!(writer, "{line}").is_err() {
//!                     break;
//!                 }
//!             }
//!         })
//!     })
//! };
//!
//! let mut client = std::net::TcpStream::connect(addr).unwrap();
//! client.write_all(b"hello\n").unwrap();
//! let mut answer = String::new();
//! BufReader::new(&client).read_line(&mut answer).unwrap();
//! assert_eq!(answer, "hello\n");
//!
//! shutdown.trigger(); // the client's socket is shut, its coroutine ends
//! let report = server.join().unwrap().unwrap();
//! assert_eq!(report.accepted, 1);
//! ```

mod backoff;
mod conn;
mod registry;
mod slots;
mod tls_split;

use std::io::{self, ErrorKind, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::go;
use may::net::{TcpListener, TcpStream};
use rustls::{ServerConnection, StreamOwned};

pub use conn::{Conn, ReadHalf, WriteHalf, MIN_SOCKET_TIMEOUT};
pub use registry::Closer;
pub use slots::Slots;

use crate::shutdown::Shutdown;
use crate::{accept, alarm};
use backoff::Backoff;
use conn::Stream;
use registry::{Registry, Tracked};

// ANCHOR: config
/// How [`run`] serves one listener.
pub struct Config {
    /// Connection slots, shared by every listener of the server
    /// (default `Slots::new(10_000)`).
    pub slots: Slots,
    /// Stack of each connection coroutine, in bytes (default
    /// [`DEFAULT_STACK_SIZE`], 128 KiB, and why).
    pub stack_size: usize,
    /// With `Some`, each connection starts with a TLS handshake, run in its
    /// own coroutine.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The whole handshake must end within this (default 10 s).
    pub handshake_timeout: Duration,
    /// Written (one non-blocking write, best-effort) to a client over the
    /// cap before it is closed; `None` closes it silently.
    pub full_message: Option<Vec<u8>>,
    /// The first pause after `EMFILE`/`ENFILE` (default 10 ms, doubling
    /// to 1 s).
    pub accept_backoff: Duration,
}
// ANCHOR_END: config

// ANCHOR: default_stack
/// The default connection stack: 128 KiB. `listings/chat_server/server_limits.rs`
/// measured a TLS connection coroutine (handshake, then the reading half
/// decrypting a 256 KiB echo) at about 56 KiB in a debug build and 16 KiB in
/// a release build, a plain one at 15 KiB and 7 KiB (rustc 1.95, rustls
/// 0.23). The handler's own work comes on top, so 64 KiB would leave a
/// debug build a few KiB. Only the pages a coroutine touches become
/// resident: the rest of the size is address space.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;
// ANCHOR_END: default_stack

impl Default for Config {
    fn default() -> Config {
        Config {
            slots: Slots::new(10_000),
            stack_size: DEFAULT_STACK_SIZE,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            full_message: None,
            accept_backoff: Duration::from_millis(10),
        }
    }
}

/// What one [`run`] did, for logs and tests.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Connections given a slot and a coroutine.
    pub accepted: u64,
    /// Connections closed at once because every slot was taken.
    pub refused_full: u64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failed: u64,
    /// Failed `accept` calls (out of descriptors, among others).
    pub accept_errors: u64,
}

/// Accept on `listener` until `shutdown`; each connection runs `handler`
/// in its own coroutine of `config.stack_size` bytes. On shutdown: stop
/// accepting, shut every open socket, and return only when every connection
/// coroutine has ended (a handler must end once its socket is shut or
/// [`Conn::stopping`] fires).
///
/// Call it on a thread or a coroutine; several listeners of one server call
/// it on several, with clones of one `Shutdown` and one [`Slots`].
///
/// Fails at once if `config` is unusable (a zero backoff or a stack of
/// under 4 KiB) or the listener's address cannot be read.
pub fn run<H>(
    listener: TcpListener,
    shutdown: &Shutdown,
    config: Config,
    handler: H,
) -> io::Result<Report>
where
    H: Fn(Conn) + Send + Sync + 'static,
{
    check(&config)?;
    let local = listener.local_addr()?;
    let handler = Arc::new(handler);
    let registry = Arc::new(Registry::default());
    let handshake_failed = Arc::new(AtomicU64::new(0));
    // Each connection coroutine holds a sender; when all are dropped, the
    // receiver's `recv` fails: every coroutine has ended.
    let (running, all_ended) = may::sync::mpsc::channel::<()>();
    let mut report = Report::default();
    let mut backoff = Backoff::new(config.accept_backoff);
    let waker = accept::wake_on_shutdown(&listener, shutdown)?;

    // ANCHOR: accept_loop
    while !shutdown.is_triggered() {
        let (tcp, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                report.accept_errors += 1;
                if !is_per_connection(&e) {
                    pause(shutdown, backoff.pause());
                }
                continue;
            }
        };
        backoff.reset();
        if shutdown.is_triggered() {
            break; // the waker's connection, or a client as we stop
        }
        let Some(permit) = config.slots.try_take() else {
            report.refused_full += 1;
            refuse(&tcp, config.full_message.as_deref());
            continue;
        };
        let sock = registry.add(permit, tcp);
        let job = {
            let (handler, running) = (handler.clone(), running.clone());
            let (tls, timeout) = (config.tls.clone(), config.handshake_timeout);
            let (stopping, failed) = (shutdown.clone(), handshake_failed.clone());
            move || {
                let _running = running;
                let stream = match tls {
                    None => Stream::Plain(sock),
                    Some(tls) => match handshake(&tls, sock, timeout) {
                        Ok(stream) => Stream::Tls(Box::new(stream)),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                };
                handler(Conn {
                    stream,
                    peer,
                    local,
                    stopping,
                });
            }
        };
        let builder = Builder::new().stack_size(config.stack_size / size_of::<usize>());
        // may panics when it cannot map a stack (ENOMEM, vm.max_map_count):
        // the client is dropped, the loop pauses and goes on.
        match catch_unwind(AssertUnwindSafe(|| go!(builder, job))) {
            Ok(_) => report.accepted += 1,
            Err(_) => {
                report.accept_errors += 1;
                pause(shutdown, backoff.pause());
            }
        }
    }
    // ANCHOR_END: accept_loop

    // ANCHOR: drain
    waker.finish();
    drop(listener); // new clients are refused by the kernel from here
    registry.close_all();
    drop(running);
    while all_ended.recv().is_ok() {}
    // ANCHOR_END: drain
    report.handshake_failed = handshake_failed.load(Ordering::Relaxed);
    Ok(report)
}

fn check(config: &Config) -> io::Result<()> {
    let problem = if config.accept_backoff.is_zero() {
        "the accept backoff must not be zero (a zero pause spins a core)"
    } else if config.stack_size < 4096 {
        "a connection stack must be at least 4 KiB"
    } else {
        return Ok(());
    };
    Err(io::Error::new(ErrorKind::InvalidInput, problem))
}

/// Errors about one client (it left before we took it), not the listener:
/// the next accept may well succeed at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

// ANCHOR: pause
/// Wait `pause`, or less if `shutdown` comes first. The alarm thread
/// keeps the time (no may timer, see `crate::alarm`) by triggering a
/// child signal this loop waits on.
fn pause(shutdown: &Shutdown, pause: Duration) {
    let paused = shutdown.child();
    let wake = paused.clone();
    let _call = alarm::shared().call_at(Instant::now() + pause, move || wake.trigger());
    paused.wait();
}
// ANCHOR_END: pause

/// Tell a client over the cap, in one non-blocking write that never parks
/// the accept loop (a fresh socket's send buffer is empty, so a short
/// message fits), then close it.
fn refuse(tcp: &TcpStream, message: Option<&[u8]>) {
    if let Some(message) = message {
        let _ = tcp.inner().write(message);
    }
}

// ANCHOR: handshake
/// Run the server side of a TLS handshake on `sock`, shut by the alarm
/// thread if it is not over within `timeout`. Whoever moves the state off
/// RUNNING first wins, so a handshake that ends as the alarm fires is
/// either done (the alarm does nothing) or timed out, never half of each.
fn handshake(
    config: &Arc<rustls::ServerConfig>,
    mut sock: Tracked<TcpStream>,
    timeout: Duration,
) -> io::Result<StreamOwned<ServerConnection, Tracked<TcpStream>>> {
    const RUNNING: u8 = 0;
    const DONE: u8 = 1;
    const TIMED_OUT: u8 = 2;
    let state = Arc::new(AtomicU8::new(RUNNING));
    let _deadline = {
        let (state, closer) = (state.clone(), sock.closer());
        alarm::shared().call_at(Instant::now() + timeout, move || {
            if state
                .compare_exchange(RUNNING, TIMED_OUT, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                closer.close();
            }
        })
    };
    let mut tls = ServerConnection::new(config.clone())
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut sock)?;
    }
    match state.compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Ok(StreamOwned::new(tls, sock)),
        Err(_) => Err(io::Error::new(
            ErrorKind::TimedOut,
            "the TLS handshake took too long",
        )),
    }
}
// ANCHOR_END: handshake

#[cfg(test)]
mod tests;
