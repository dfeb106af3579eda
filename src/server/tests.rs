//! The server layer's tests: real sockets on 127.0.0.1, each well under 2 s.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use super::*;
use crate::runtime::configure_for_tests;

/// Start `run` on a thread with `config` and `handler`; returns the address,
/// the shutdown and the thread.
fn start<H>(
    config: Config,
    handler: H,
) -> (
    std::net::SocketAddr,
    Shutdown,
    std::thread::JoinHandle<io::Result<Report>>,
)
where
    H: Fn(Conn) + Send + Sync + 'static,
{
    configure_for_tests();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || run(listener, &shutdown, config, handler))
    };
    (addr, shutdown, server)
}

/// Echo lines on the split halves.
fn echo(conn: Conn) {
    let (reader, mut writer) = conn.split().unwrap();
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        if writeln!(writer, "{line}").is_err() {
            break;
        }
    }
}

#[test]
fn a_plain_connection_echoes_on_its_halves() {
    let (addr, shutdown, server) = start(Config::default(), echo);
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(b"one\ntwo\n").unwrap();
    let mut lines = BufReader::new(&client).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "one");
    assert_eq!(lines.next().unwrap().unwrap(), "two");
    shutdown.trigger();
    let report = server.join().unwrap().unwrap();
    assert_eq!(report.accepted, 1);
}
