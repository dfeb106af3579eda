//! The server layer's tests: real sockets on 127.0.0.1, each well under 2 s.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

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

/// Read from `stream` until end-of-file or an error; true if it was a
/// clean end-of-file or a reset (what a shut socket looks like).
fn sees_end(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

/// Hold the connection until its socket is shut.
fn hold(conn: Conn) {
    use std::io::Read;
    let mut conn = conn;
    let mut buf = vec![0u8; 256];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// A handler that says when it starts, then holds its connection.
fn hold_and_tell() -> (
    impl Fn(Conn) + Send + Sync + 'static,
    std::sync::mpsc::Receiver<u64>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handler = move |conn: Conn| {
        tx.send(conn.id()).unwrap();
        hold(conn);
    };
    (handler, rx)
}

const SOON: Duration = Duration::from_secs(5);

#[test]
fn shutdown_closes_every_socket_and_waits_for_every_coroutine() {
    let (handler, started) = hold_and_tell();
    let (addr, shutdown, server) = start(Config::default(), handler);
    let mut clients: Vec<_> = (0..50)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut ids: Vec<u64> = (0..50)
        .map(|_| started.recv_timeout(SOON).unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "ids are unique");
    let asked = Instant::now();
    shutdown.trigger();
    let report = server.join().unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(report.accepted, 50, "{report:?}");
    for client in &mut clients {
        assert!(sees_end(client), "every client sees its socket shut");
    }
}

#[test]
fn a_client_over_the_cap_is_told_and_closed_and_slots_are_shared() {
    use std::io::Read;
    let slots = Slots::new(2);
    let config = || Config {
        slots: slots.clone(),
        full_message: Some(b"ERROR :full\r\n".to_vec()),
        ..Config::default()
    };
    let (handler, started) = hold_and_tell();
    let (plain, shutdown, first) = start(config(), handler);
    let (other, started_other) = hold_and_tell();
    let (second_addr, second_stop, second) = start(config(), other);
    let one = std::net::TcpStream::connect(plain).unwrap();
    started.recv_timeout(SOON).unwrap();
    let _two = std::net::TcpStream::connect(second_addr).unwrap();
    started_other.recv_timeout(SOON).unwrap();
    assert_eq!(slots.in_use(), 2);
    for addr in [plain, second_addr] {
        let mut three = std::net::TcpStream::connect(addr).unwrap();
        three.set_read_timeout(Some(SOON)).unwrap();
        let mut told = String::new();
        three.read_to_string(&mut told).unwrap();
        assert_eq!(told, "ERROR :full\r\n");
    }
    one.shutdown(std::net::Shutdown::Both).unwrap(); // its slot comes back
    drop(one);
    // ... once its handler has read the end of stream and returned: a
    // connect before that would be refused as full (seen on a busy box).
    let freed_by = Instant::now() + SOON;
    while slots.in_use() > 1 {
        assert!(Instant::now() < freed_by, "the slot never came back");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _four = std::net::TcpStream::connect(plain).unwrap();
    started.recv_timeout(SOON).unwrap();
    shutdown.trigger();
    second_stop.trigger();
    let (a, b) = (
        first.join().unwrap().unwrap(),
        second.join().unwrap().unwrap(),
    );
    assert_eq!((a.accepted, a.refused_full), (2, 1), "{a:?}");
    assert_eq!((b.accepted, b.refused_full), (1, 1), "{b:?}");
    assert_eq!(slots.in_use(), 0, "every slot is back");
}

#[test]
fn a_bad_config_is_refused_with_a_reason() {
    configure_for_tests();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = Config {
        accept_backoff: Duration::ZERO,
        ..Config::default()
    };
    let e = run(listener, &Shutdown::new(), config, drop).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("backoff"), "{e}");
}

#[test]
fn an_idle_reader_and_a_stuck_writer_time_out() {
    use std::io::Read;
    let (tx, outcome) = std::sync::mpsc::channel();
    let handler = move |mut conn: Conn| {
        let too_short = conn.set_idle_timeout(Some(Duration::from_millis(10)));
        conn.set_idle_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        conn.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = Instant::now();
        let read = conn.read(&mut [0u8; 16]).map_err(|e| e.kind());
        let idle = started.elapsed();
        // The client never reads: the socket buffers fill, then a write
        // makes no progress for the timeout.
        let block = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        let wrote = loop {
            if let Err(e) = conn.write_all(&block) {
                break e.kind();
            }
        };
        tx.send((
            too_short.map_err(|e| e.kind()),
            read,
            idle,
            wrote,
            started.elapsed(),
        ))
        .unwrap();
    };
    let (addr, shutdown, server) = start(Config::default(), handler);
    let _client = std::net::TcpStream::connect(addr).unwrap();
    let (too_short, read, idle, wrote, stuck) = outcome.recv_timeout(SOON).unwrap();
    assert_eq!(too_short, Err(ErrorKind::InvalidInput));
    assert_eq!(read, Err(ErrorKind::TimedOut));
    assert!(
        idle >= Duration::from_millis(290) && idle < SOON,
        "{idle:?}"
    );
    assert_eq!(wrote, ErrorKind::TimedOut);
    assert!(stuck < SOON, "{stuck:?}");
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

#[test]
fn a_closer_ends_a_parked_read_from_another_thread() {
    let (tx, closers) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    let handler = move |conn: Conn| {
        let (mut reader, writer) = conn.split().unwrap();
        tx.send(writer.closer()).unwrap();
        let read = std::io::Read::read(&mut reader, &mut [0u8; 8]);
        done_tx.send(read.map_err(|e| e.kind())).unwrap();
        drop(writer);
    };
    let (addr, shutdown, server) = start(Config::default(), handler);
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let closer = closers.recv_timeout(SOON).unwrap();
    std::thread::spawn(move || closer.close()).join().unwrap();
    assert_eq!(done.recv_timeout(SOON).unwrap(), Ok(0));
    assert!(sees_end(&mut client));
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

#[test]
fn a_half_close_ends_the_peers_reading_but_not_its_writing() {
    let (heard, hear) = std::sync::mpsc::channel();
    let (addr, shutdown, server) = start(Config::default(), move |conn| {
        let (reader, mut writer) = conn.split().unwrap();
        writer.write_all(b"bye\n").unwrap();
        writer.shutdown_write().unwrap();
        let mut line = String::new();
        let read = BufReader::new(reader).read_line(&mut line).map(|_| line);
        heard.send(read.map_err(|e| e.kind())).unwrap();
    });
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(SOON)).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut got).unwrap();
    assert_eq!(got, b"bye\n", "all that was sent, then end-of-file");
    client.write_all(b"still here\n").unwrap();
    let heard = hear.recv_timeout(SOON).unwrap();
    assert_eq!(heard.unwrap(), "still here\n", "the other way still works");
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

#[test]
fn a_tls_half_close_is_refused_as_unsupported() {
    let (server_tls, client_tls) = tls_pair();
    let config = Config {
        tls: Some(server_tls),
        ..Config::default()
    };
    let (told, told_rx) = std::sync::mpsc::channel();
    let (addr, shutdown, server) = start(config, move |conn| {
        let (_reader, writer) = conn.split().unwrap();
        told.send(writer.shutdown_write().map_err(|e| e.kind()))
            .unwrap();
    });
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(SOON)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(client_tls, name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    let told = told_rx.recv_timeout(SOON).unwrap();
    assert_eq!(told, Err(ErrorKind::Unsupported));
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

/// A TLS config with a certificate for 127.0.0.1 from a fresh test CA, and
/// a client config that trusts that CA.
fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca = crate::tls::TestCa::new("server tests CA");
    let issued = ca.issue(&["127.0.0.1"]);
    let server = crate::tls::server_config(&issued).unwrap();
    (server, crate::tls::client_config(ca.roots()))
}

/// Echo through two coroutines: the reader half sends what it reads over a
/// channel to a writer coroutine on the write half, so both directions run
/// at once.
fn echo_on_two_coroutines(conn: Conn) {
    let (mut reader, mut writer) = conn.split().unwrap();
    let (tx, rx) = may::sync::mpsc::channel::<Vec<u8>>();
    let echoing = go!(move || {
        for chunk in rx.iter() {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 8192];
    while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
        tx.send(buf[..n].to_vec()).unwrap();
    }
    drop(tx);
    echoing.join().unwrap();
}

/// A rustls client on a plain thread that writes `total` bytes while it
/// reads the echo, with a key update half-way (the server's reader must
/// get the answering record sent). Returns the bytes echoed back.
fn tls_client_both_ways(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    total: usize,
) -> Vec<u8> {
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    sock.set_nonblocking(true).unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut echoed) = (0, Vec::with_capacity(total));
    let mut updated = false;
    let deadline = Instant::now() + SOON;
    let mut buf = vec![0u8; 16384];
    while echoed.len() < total {
        assert!(
            Instant::now() < deadline,
            "echoed {} of {total}",
            echoed.len()
        );
        let mut progress = false;
        if sent < total && !tls.wants_write() {
            let end = (sent + 4096).min(total);
            sent += tls.writer().write(&data[sent..end]).unwrap();
            progress = true;
        }
        if sent > total / 2 && !updated {
            tls.refresh_traffic_keys().unwrap();
            updated = true;
        }
        while tls.wants_write() {
            match tls.write_tls(&mut sock) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("client write: {e}"),
            }
        }
        match tls.read_tls(&mut sock) {
            Ok(0) => panic!("the server closed after {} bytes", echoed.len()),
            Ok(_) => {
                tls.process_new_packets().unwrap();
                progress = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        while let Ok(n @ 1..) = tls.reader().read(&mut buf) {
            echoed.extend_from_slice(&buf[..n]);
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(1)); // a plain thread, not a may worker
        }
    }
    assert_eq!(echoed, data, "the echo is what was sent, in order");
    echoed
}

#[test]
fn tls_halves_echo_a_mebibyte_both_ways_at_once_across_a_key_update() {
    let (server_tls, client_tls) = tls_pair();
    let config = Config {
        tls: Some(server_tls),
        ..Config::default()
    };
    let (addr, shutdown, server) = start(config, echo_on_two_coroutines);
    let echoed = tls_client_both_ways(addr, client_tls, 1 << 20);
    assert_eq!(echoed.len(), 1 << 20);
    shutdown.trigger();
    let report = server.join().unwrap().unwrap();
    assert_eq!((report.accepted, report.handshake_failed), (1, 0));
}

#[test]
fn a_silent_tls_client_delays_no_one_and_times_out() {
    let (server_tls, client_tls) = tls_pair();
    let config = Config {
        tls: Some(server_tls),
        handshake_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let (addr, shutdown, server) = start(config, echo_on_two_coroutines);
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    let mut garbage = std::net::TcpStream::connect(addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let started = Instant::now();
    for _ in 0..3 {
        tls_client_both_ways(addr, client_tls.clone(), 1024);
    }
    let served = started.elapsed();
    assert!(sees_end(&mut silent), "the silent client is cut");
    let cut = started.elapsed();
    assert!(sees_end(&mut garbage), "a client speaking HTTP is refused");
    // Loose: the three handshakes ran while the silent one waited.
    assert!(served < cut, "served in {served:?}, silent cut at {cut:?}");
    assert!(cut < Duration::from_secs(3), "{cut:?}");
    shutdown.trigger();
    let report = server.join().unwrap().unwrap();
    assert_eq!(
        (report.accepted, report.handshake_failed),
        (5, 2),
        "{report:?}"
    );
}
