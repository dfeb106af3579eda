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
//! every connection coroutine has finished.
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
//! stuck peers, `--workers` sets may's worker threads.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown as SocketShutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::{Mutex, WaitGroup};
use may_patterns::shutdown::Shutdown;

// ANCHOR: config
/// Limits the server enforces on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// A peer that sends nothing (or reads nothing) for this long is dropped.
    pub idle_timeout: Duration,
}

/// What happened during a run, returned when the server stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub bytes_echoed: u64,
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
    let local_addr = listener.local_addr()?;
    // accept() parks until a client arrives, so a trigger alone cannot wake
    // it: this coroutine connects once to unblock the accept loop.
    let waker = {
        let shutdown = shutdown.clone();
        go!(move || {
            shutdown.wait();
            let _ = TcpStream::connect(local_addr);
        })
    };

    let counters = Arc::new(Counters::default());
    let registry: Registry = Arc::default();
    let connections = WaitGroup::new();
    let mut next_id = 0u64;
    let result = loop {
        let stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            // A client that gave up before we accepted it is not our error.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(e) => break Err(e),
        };
        if shutdown.is_triggered() {
            break Ok(());
        }
        if registry.lock().unwrap().len() >= limits.max_connections {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            continue; // dropping `stream` closes it
        }
        next_id += 1;
        let id = next_id;
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(handle) => registry.lock().unwrap().insert(id, handle),
            Err(e) => break Err(e),
        };
        let (counters, registry, member) =
            (counters.clone(), registry.clone(), connections.clone());
        go!(move || {
            serve_connection(stream, limits.idle_timeout, &counters);
            registry.lock().unwrap().remove(&id);
            drop(member); // this connection is done
        });
    };

    // Stop: wake the waker if we stopped on an error, close every open socket
    // (a coroutine blocked in read() then sees end-of-file), wait for all.
    shutdown.trigger();
    for (_, socket) in registry.lock().unwrap().drain() {
        let _ = socket.shutdown(SocketShutdown::Both);
    }
    connections.wait();
    let _ = waker.join();
    result.map(|()| Summary {
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        timed_out: counters.timed_out.load(Ordering::Relaxed),
        bytes_echoed: counters.bytes_echoed.load(Ordering::Relaxed),
    })
}
// ANCHOR_END: run

// ANCHOR: serve_connection
/// Echo bytes back until the peer closes, goes idle, or fails.
fn serve_connection(mut stream: TcpStream, idle_timeout: Duration, counters: &Counters) {
    // may implements these timeouts by parking the coroutine, not the thread.
    if stream.set_read_timeout(Some(idle_timeout)).is_err()
        || stream.set_write_timeout(Some(idle_timeout)).is_err()
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

// ANCHOR: main
/// A TCP echo server on may coroutines.
#[derive(Debug, Parser)]
#[command(name = "echo_server")]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Connections served at once; extra clients are closed immediately.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Drop a peer that sends or reads nothing for this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    idle_timeout_ms: u64,
    /// may worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    may::config().set_workers(cli.workers);

    let listener = TcpListener::bind(&cli.addr)?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = Shutdown::new();
    let on_ctrl_c = shutdown.clone();
    ctrlc::set_handler(move || on_ctrl_c.trigger())
        .map_err(|e| io::Error::other(format!("cannot install the Ctrl-C handler: {e}")))?;

    let limits = Limits {
        max_connections: cli.max_connections,
        idle_timeout: Duration::from_millis(cli.idle_timeout_ms),
    };
    let s = run(listener, shutdown, limits)?;
    if cli.json {
        println!(
            r#"{{"accepted":{},"rejected":{},"timed_out":{},"bytes_echoed":{}}}"#,
            s.accepted, s.rejected, s.timed_out, s.bytes_echoed
        );
    } else {
        println!(
            "stopped: {} connections served, {} rejected, {} timed out, {} bytes echoed",
            s.accepted, s.rejected, s.timed_out, s.bytes_echoed
        );
    }
    Ok(())
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
