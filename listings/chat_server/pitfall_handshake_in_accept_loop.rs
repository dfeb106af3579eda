//! Pitfall: the TLS handshake in the accept loop. may's own
//! `examples/https.rs` accepts a socket, runs the TLS handshake on it and
//! only then spawns the connection's coroutine. A handshake waits for the
//! client's bytes, so one client that connects and says nothing holds the
//! loop: every client behind it waits, however fast it is. Here one silent
//! client connects first and leaves after `SILENCE`; twenty clients then
//! connect, shake hands and exchange a line. `server::run` does the
//! handshake in each connection's own coroutine (with a timeout), so the
//! silent client delays only itself.
//!
//! Run it: `cargo run --example pitfall_handshake_in_accept_loop`

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::go;
use may::net::TcpListener;
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;
use may_patterns::{alarm, tls};

/// Clients that come after the silent one.
const CLIENTS: usize = 20;
/// How long the silent client stays connected without a byte.
const SILENCE: Duration = Duration::from_millis(500);
/// Stack for a TLS client coroutine: `src/tls.rs`'s tests measured a
/// client handshake at 7279 words (debug); this holds it twice.
const CLIENT_STACK_WORDS: usize = 0x4000;

/// How long the slowest and the fastest of the clients took, from the
/// moment they all started to their echoed line.
#[derive(Debug)]
struct Waits {
    fastest: Duration,
    slowest: Duration,
}

/// Echo one line over an established TLS stream (either kind of server).
fn echo_line(stream: &mut (impl io::Read + Write)) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(&mut *stream).read_line(&mut line)?;
    stream.write_all(line.as_bytes())?;
    stream.flush()
}

// ANCHOR: in_the_loop
/// The pitfall, as may's example has it: the handshake runs in the accept
/// loop, and only a finished one gets a coroutine. Serves `count`
/// connections, then returns.
fn handshake_in_the_loop(listener: TcpListener, config: Arc<rustls::ServerConfig>, count: usize) {
    for _ in 0..count {
        let Ok((tcp, _)) = listener.accept() else {
            continue;
        };
        // Parks this loop until the client has spoken, or gone.
        let Ok(mut stream) = tls::accept(&config, tcp) else {
            continue;
        };
        let builder = Builder::new().stack_size(CLIENT_STACK_WORDS);
        go!(builder, move || {
            let _ = echo_line(&mut stream);
        })
        .expect("may spawns");
    }
}
// ANCHOR_END: in_the_loop

// ANCHOR: in_the_coroutine
/// The fix: `server::run` accepts and spawns at once; the handshake runs in
/// the connection's coroutine, bounded by `handshake_timeout`.
fn in_the_coroutine(listener: TcpListener, config: Arc<rustls::ServerConfig>, stop: &Shutdown) {
    let config = Config {
        tls: Some(config),
        handshake_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let report = server::run(listener, stop, config, |mut conn: Conn| {
        let _ = echo_line(&mut conn);
    });
    report.expect("the server runs");
}
// ANCHOR_END: in_the_coroutine

/// Connect the silent client, then the others; measure the others.
fn clients(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Waits> {
    let silent = may_patterns::net::connect(addr)?;
    let quiet = go!(move || {
        alarm::shared().sleep(SILENCE);
        drop(silent);
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let config = config.clone();
            let builder = Builder::new().stack_size(CLIENT_STACK_WORDS);
            go!(builder, move || -> io::Result<Duration> {
                let tcp = may_patterns::net::connect(addr)?;
                let mut stream = tls::connect(&config, "127.0.0.1", tcp)?;
                stream.write_all(b"hello\n")?;
                let mut answer = String::new();
                BufReader::new(&mut stream).read_line(&mut answer)?;
                assert_eq!(answer, "hello\n");
                Ok(started.elapsed())
            })
            .expect("may spawns")
        })
        .collect();
    let mut waits = Vec::new();
    for client in clients {
        waits.push(client.join().expect("a client coroutine ends")?);
    }
    quiet.join().expect("the silent client leaves");
    Ok(Waits {
        fastest: *waits.iter().min().expect("twenty clients"),
        slowest: *waits.iter().max().expect("twenty clients"),
    })
}

/// Measure both servers, one after the other, on fresh ports.
fn compare() -> io::Result<(Waits, Waits)> {
    let ca = tls::TestCa::new("pitfall CA");
    let server_config = tls::server_config(&ca.issue(&["127.0.0.1"]))?;
    let client_config = tls::client_config(ca.roots());

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let config = server_config.clone();
    let naive = std::thread::spawn(move || handshake_in_the_loop(listener, config, CLIENTS + 1));
    let in_loop = clients(addr, client_config.clone())?;
    naive.join().expect("the accept loop ends");

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Shutdown::new();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || in_the_coroutine(listener, server_config, &stop))
    };
    let in_coroutine = clients(addr, client_config);
    stop.trigger();
    server.join().expect("the server ends");
    Ok((in_loop, in_coroutine?))
}

fn main() {
    may_patterns::runtime::configure_once(may_patterns::runtime::Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    println!(
        "one client connects and stays silent for {SILENCE:.1?}; {CLIENTS} TLS clients follow:"
    );
    let (in_loop, in_coroutine) = match compare() {
        Ok(both) => both,
        Err(e) => {
            eprintln!("cannot run the comparison: {e}");
            std::process::exit(1);
        }
    };
    for (name, w) in [
        ("handshake in the accept loop", in_loop),
        (
            "handshake in each connection's coroutine (server::run)",
            in_coroutine,
        ),
    ] {
        println!(
            "  {name}: fastest client served after {:.1?}, slowest after {:.1?}",
            w.fastest, w.slowest
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_client_stalls_the_loop_but_not_server_run() {
        may_patterns::runtime::configure_for_tests();
        let (in_loop, in_coroutine) = compare().unwrap();
        // Every client waited for the silent one to leave (a loaded
        // machine makes it later, never earlier).
        assert!(in_loop.fastest >= SILENCE * 9 / 10, "{in_loop:?}");
        // Here the first client did not wait for it (loose: twenty debug
        // handshakes on two busy cores take a while).
        assert!(in_coroutine.fastest < SILENCE / 2, "{in_coroutine:?}");
        assert!(in_coroutine.fastest < in_loop.fastest, "{in_coroutine:?}");
    }
}
