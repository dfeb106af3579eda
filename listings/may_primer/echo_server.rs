//! # echo_server: a TCP echo server on may coroutines
//!
//! **Purpose.** The smallest real server in the book, and the shape of every
//! later one: `run(listener, shutdown)` with a thin `main`, one coroutine per
//! connection, every resource bounded.
//!
//! **Architecture.** The calling coroutine or thread accepts connections; each
//! accepted socket gets its own coroutine that reads into a fixed 4 KiB buffer
//! and writes the bytes straight back. A registry of open sockets lets
//! shutdown close them all at once; a wait group lets `run` return only after
//! every connection coroutine has finished; `may_patterns::accept` wakes the
//! parked accept loop on shutdown. An accept that fails because the process
//! ran out of file descriptors or memory is retried after a growing pause,
//! logged once per spell, while the open connections are served.
//!
//! **Usage.** `cargo run --example echo_server -- --addr 127.0.0.1:7000`, then
//! `nc 127.0.0.1 7000` in another terminal. Ctrl-C stops it cleanly and prints
//! a summary (`--json` for a machine-readable one).
//!
//! **Performance.** One coroutine per connection; the primer's Performance
//! section measures what spawning one and passing it messages cost.
//!
//! **Customization.** `--max-connections` bounds concurrent clients (extra ones
//! are closed at once and counted), `--idle-timeout-ms` disconnects silent or
//! stuck peers, `--workers` sets may's worker threads; none of them takes 0.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown as SocketShutdown;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::{Mutex, WaitGroup};
use may_patterns::cli::at_least_one;
use may_patterns::shutdown::Shutdown;
use may_patterns::{accept, timeout};

// ANCHOR: config
/// Limits the server enforces on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// A peer that sends nothing (or reads nothing) for this long is dropped.
    /// At least 1 ms: may keeps socket timeouts in whole milliseconds and
    /// reads 0 as "no timeout".
    pub idle_timeout: Duration,
}

/// What happened during a run, returned when the server stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub bytes_echoed: u64,
    /// Accepts that failed for a reason that passes (out of file
    /// descriptors or memory) and were retried after a pause.
    pub accept_errors: u64,
}
// ANCHOR_END: config

/// Counters shared by the connection coroutines.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    bytes_echoed: AtomicU64,
}

/// Open sockets by connection id, so shutdown can close every one of them.
type Registry = Arc<Mutex<HashMap<u64, TcpStream>>>;

// ANCHOR: run
/// Serve echo connections on `listener` until `shutdown` is triggered, then
/// close every open connection and return once all their coroutines ended.
pub fn run(listener: TcpListener, shutdown: Shutdown, limits: Limits) -> io::Result<Summary> {
    if limits.idle_timeout.is_zero() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "the idle timeout must be at least 1 ms (may reads 0 as none)",
        ));
    }
    // accept() parks until a client arrives; on shutdown this connects once
    // to wake it.
    let waker = accept::wake_on_shutdown(&listener, &shutdown)?;

    let counters = Arc::new(Counters::default());
    let registry: Registry = Arc::default();
    let connections = WaitGroup::new();
    let mut backoff = Backoff::default();
    let mut unregistered = None; // accepted, but no descriptor left to register it
    let mut next_id = 0u64;
    let result = loop {
        let accepted = match unregistered.take() {
            Some(stream) => Ok(stream),
            None => listener.accept().map(|(stream, _peer)| stream),
        };
        if shutdown.is_triggered() {
            break Ok(());
        }
        let stream = match accepted {
            Ok(stream) => stream,
            // A client that gave up before we accepted it is not our error.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) if passes(&e) => {
                backoff.pause_after(&e, &shutdown);
                continue;
            }
            Err(e) => break Err(e),
        };
        if registry.lock().unwrap().len() >= limits.max_connections {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            continue; // dropping `stream` closes it
        }
        // The registry's handle takes a descriptor too. If none is left,
        // keep the client (it waits, as it would in the backlog) and retry.
        let handle = match stream.try_clone() {
            Ok(handle) => handle,
            Err(e) if passes(&e) => {
                unregistered = Some(stream);
                backoff.pause_after(&e, &shutdown);
                continue;
            }
            Err(e) => break Err(e),
        };
        backoff.reset();
        next_id += 1;
        let id = next_id;
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        registry.lock().unwrap().insert(id, handle);
        let (counters, registry, member) =
            (counters.clone(), registry.clone(), connections.clone());
        go!(move || {
            serve_connection(stream, limits.idle_timeout, &counters);
            registry.lock().unwrap().remove(&id);
            drop(member); // this connection is done
        });
    };

    // Stop: close every open socket (a coroutine blocked in read() then sees
    // end-of-file), wait for all of them, and for the waker.
    for (_, socket) in registry.lock().unwrap().drain() {
        let _ = socket.shutdown(SocketShutdown::Both);
    }
    connections.wait();
    waker.finish();
    result.map(|()| Summary {
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        timed_out: counters.timed_out.load(Ordering::Relaxed),
        bytes_echoed: counters.bytes_echoed.load(Ordering::Relaxed),
        accept_errors: backoff.failures,
    })
}

// ANCHOR_END: run

// ANCHOR: backoff
/// errno values for "out of a resource" that std has no `ErrorKind` for
/// (Linux's numbers).
const EMFILE: i32 = 24; // this process has no file descriptor left
const ENFILE: i32 = 23; // the whole system has none left
const ENOBUFS: i32 = 105; // the kernel is out of socket buffers

/// An accept error that goes away by itself once clients close connections
/// or memory frees up: retry it, later. Retrying at once would spin a core,
/// since the pending connection that caused it is still waiting.
fn passes(e: &io::Error) -> bool {
    e.kind() == ErrorKind::OutOfMemory // ENOMEM
        || matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS))
}

/// Pauses between failed accepts: 10 ms, doubling up to 1 s, back to the
/// start after a success. Only the first failure of a run of them is logged.
#[derive(Default)]
struct Backoff {
    pause: Option<Duration>,
    failures: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Count `e`, log it if it starts a run of failures, and wait out the
    /// pause, returning early if `shutdown` is triggered meanwhile.
    fn pause_after(&mut self, e: &io::Error, shutdown: &Shutdown) {
        self.failures += 1;
        let pause = match self.pause {
            None => {
                eprintln!(
                    "echo_server: cannot accept a connection: {e}; \
                     serving the open ones, retrying with pauses from {:?} up to {:?}",
                    Self::FIRST,
                    Self::MAX
                );
                Self::FIRST
            }
            Some(last) => (last * 2).min(Self::MAX),
        };
        self.pause = Some(pause);
        shutdown.wait_timeout(pause); // parks a coroutine, blocks a thread
    }

    fn reset(&mut self) {
        self.pause = None;
    }
}
// ANCHOR_END: backoff

// ANCHOR: serve_connection
/// Echo bytes back until the peer closes, goes idle, or fails.
fn serve_connection(mut stream: TcpStream, idle_timeout: Duration, counters: &Counters) {
    // may implements these timeouts by parking the coroutine, not the
    // thread, and keeps them in whole milliseconds: round up, never to 0.
    let idle_timeout = Some(timeout::for_may(idle_timeout));
    if stream.set_read_timeout(idle_timeout).is_err()
        || stream.set_write_timeout(idle_timeout).is_err()
    {
        return;
    }
    let mut buf = [0u8; 4096]; // the only buffer a connection ever holds
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return, // the peer closed its side
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                counters.timed_out.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => return, // reset by peer, or closed by shutdown
        };
        if let Err(e) = stream.write_all(&buf[..n]) {
            if is_timeout(&e) {
                counters.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        counters.bytes_echoed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}
// ANCHOR_END: serve_connection

/// A TCP echo server on may coroutines.
#[derive(Debug, Parser)]
#[command(name = "echo_server")]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Connections served at once; extra clients are closed immediately.
    #[arg(long, default_value_t = 1024, value_parser = at_least_one::<usize>)]
    max_connections: usize,
    /// Drop a peer that sends or reads nothing for this many milliseconds
    /// (at least 1: may reads 0 as "no timeout").
    #[arg(long, default_value_t = 30_000, value_parser = at_least_one::<u64>)]
    idle_timeout_ms: u64,
    /// may worker threads.
    #[arg(long, default_value_t = 2, value_parser = at_least_one::<usize>)]
    workers: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

// ANCHOR: main
fn main() -> ExitCode {
    let cli = Cli::parse();
    match serve(&cli) {
        Ok(s) if cli.json => println!(
            r#"{{"accepted":{},"rejected":{},"timed_out":{},"bytes_echoed":{},"accept_errors":{}}}"#,
            s.accepted, s.rejected, s.timed_out, s.bytes_echoed, s.accept_errors
        ),
        Ok(s) => println!(
            "stopped: {} connections served, {} rejected, {} timed out, {} bytes echoed, \
             {} accept errors",
            s.accepted, s.rejected, s.timed_out, s.bytes_echoed, s.accept_errors
        ),
        Err(sentence) => {
            eprintln!("echo_server: {sentence}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Everything `main` does that can fail; each failure is one sentence that
/// says what could not be done and why.
fn serve(cli: &Cli) -> Result<Summary, String> {
    may::config().set_workers(cli.workers);
    let listener =
        TcpListener::bind(&cli.addr).map_err(|e| format!("cannot listen on {}: {e}", cli.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address it listens on: {e}"))?;
    println!("listening on {local}");
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    ctrlc::set_handler(move || on_ctrl_c.trigger())
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;

    let limits = Limits {
        max_connections: cli.max_connections,
        idle_timeout: Duration::from_millis(cli.idle_timeout_ms),
    };
    run(listener, shutdown, limits).map_err(|e| format!("stopped serving: {e}"))
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::thread;

    const LIMITS: Limits = Limits {
        max_connections: 64,
        idle_timeout: Duration::from_secs(5),
    };

    /// Start a server on an ephemeral port in its own thread.
    fn start(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        Shutdown,
        thread::JoinHandle<io::Result<Summary>>,
    ) {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = {
            let shutdown = shutdown.clone();
            thread::spawn(move || run(listener, shutdown, limits))
        };
        (addr, shutdown, server)
    }

    /// A plain std client: tests run on ordinary threads, not may workers.
    fn client(addr: std::net::SocketAddr) -> std::net::TcpStream {
        let c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    #[test]
    fn echoes_what_many_concurrent_clients_send() {
        let (addr, shutdown, server) = start(LIMITS);
        let clients: Vec<_> = (0..20)
            .map(|i| {
                thread::spawn(move || {
                    let mut c = client(addr);
                    let msg = format!("client {i} says hello\n").repeat(500); // > 4 KiB
                    c.write_all(msg.as_bytes()).unwrap();
                    let mut back = vec![0; msg.len()];
                    c.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg.as_bytes());
                    msg.len() as u64
                })
            })
            .collect();
        let sent: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        shutdown.trigger();
        let summary = server.join().unwrap().unwrap();
        assert_eq!(summary.accepted, 20);
        assert_eq!(summary.bytes_echoed, sent);
    }

    #[test]
    fn drops_an_idle_peer_after_the_timeout() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(200),
            ..LIMITS
        };
        let (addr, shutdown, server) = start(limits);
        let mut silent = client(addr);
        let mut buf = [0u8; 1];
        // The server closes the connection: read returns end-of-file.
        assert_eq!(silent.read(&mut buf).unwrap(), 0);
        shutdown.trigger();
        assert_eq!(server.join().unwrap().unwrap().timed_out, 1);
    }

    #[test]
    fn closes_connections_beyond_the_limit() {
        let limits = Limits {
            max_connections: 2,
            ..LIMITS
        };
        let (addr, shutdown, server) = start(limits);
        let mut held: Vec<_> = (0..2).map(|_| client(addr)).collect();
        for c in &mut held {
            // A round trip proves the server registered this connection.
            c.write_all(b"x").unwrap();
            c.read_exact(&mut [0u8; 1]).unwrap();
        }
        let mut extra = client(addr);
        let mut buf = [0u8; 1];
        assert_eq!(
            extra.read(&mut buf).unwrap(),
            0,
            "the third client is closed"
        );
        shutdown.trigger();
        let summary = server.join().unwrap().unwrap();
        assert_eq!((summary.accepted, summary.rejected), (2, 1));
    }

    #[test]
    fn running_out_of_descriptors_or_memory_passes_other_errors_do_not() {
        for errno in [EMFILE, ENFILE, ENOBUFS, 12 /* ENOMEM */] {
            assert!(passes(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        let refused = io::Error::from(ErrorKind::ConnectionRefused);
        assert!(!passes(&refused));
        assert!(!passes(&io::Error::from_raw_os_error(9 /* EBADF */)));
    }

    #[test]
    fn pauses_double_up_to_a_second_and_start_over_after_a_success() {
        configure_for_tests();
        let stopped = Shutdown::new();
        stopped.trigger(); // so no pause below really waits
        let emfile = io::Error::from_raw_os_error(EMFILE);
        let mut backoff = Backoff::default();
        let mut pauses = Vec::new();
        for _ in 0..9 {
            backoff.pause_after(&emfile, &stopped);
            pauses.push(backoff.pause.unwrap().as_millis());
        }
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        backoff.pause_after(&emfile, &stopped);
        assert_eq!(backoff.pause, Some(Backoff::FIRST));
        assert_eq!(backoff.failures, 10);
    }

    #[test]
    fn a_zero_idle_timeout_is_refused() {
        configure_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let limits = Limits {
            idle_timeout: Duration::ZERO,
            ..LIMITS
        };
        let refused = run(listener, Shutdown::new(), limits).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn shutdown_closes_open_connections_and_returns() {
        let (addr, shutdown, server) = start(LIMITS);
        let mut open = client(addr);
        open.write_all(b"ping").unwrap();
        open.read_exact(&mut [0u8; 4]).unwrap();
        shutdown.trigger();
        let summary = server.join().unwrap().unwrap();
        assert_eq!(summary.accepted, 1);
        let mut buf = [0u8; 1];
        assert_eq!(
            open.read(&mut buf).unwrap(),
            0,
            "the server closed our socket"
        );
    }
}
