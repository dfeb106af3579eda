//! The coroutine stacks, measured: may prints a coroutine's real stack use
//! when it ends if its stack size (in words) is odd. [`child`] serves the
//! worst cases the proxy admits on connection and tunnel coroutines of
//! 1 MiB + 1 word; the parent test runs it in a process of its own (one
//! worker, so every report is out before it ends), reads may's reports,
//! and checks that [`CONNECTION_STACK`] and [`COPY_STACK_WORDS`] leave at
//! least twice the use measured. The figures go to stderr:
//! `cargo test --example proxy_server stack_tests -- --nocapture`, and
//! again with `--release`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use may::net::TcpListener;
use may_patterns::http::{read_response, Limits};
use may_patterns::runtime::{configure_once, Settings as Runtime};
use may_patterns::server::{self, Conn};
use may_patterns::shutdown::Shutdown;

use crate::access_log;
use crate::auth::Users;
use crate::cli::Args;
use crate::handler::{self, Settings, Stats};
use crate::loopback_tests::{chunked_body, echo_origin, settings, start};
use crate::tunnel::{COPY_STACK_WORDS, DOWN_NAME};
use crate::CONNECTION_STACK;

/// The measured stacks: 1 MiB plus the word that makes them odd.
const MEASURING_WORDS: usize = (1 << 17) + 1;
/// Bytes each body and the tunnel carry: many copy-buffer rounds.
const CARRIED: usize = 256 * 1024;
/// "alice:s3cret".
const ALICE: &str = "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n";

/// Echo bytes until the client's end of stream (the tunnel's origin).
fn tcp_echo(mut conn: Conn) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn connect(addr: std::net::SocketAddr) -> StdStream {
    let s = StdStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Send `wire` on a new connection, half-close, and read one answer.
fn exchange(proxy: std::net::SocketAddr, wire: &[u8]) -> (u16, Vec<u8>) {
    let mut client = connect(proxy);
    client.write_all(wire).unwrap();
    let mut answers = BufReader::new(client);
    let limits = Limits {
        body_bytes: 1 << 20,
        ..Limits::default()
    };
    let answer = read_response(&mut answers, &limits).unwrap();
    (answer.status, answer.body)
}

/// Drive every worst case through a proxy on measured stacks. may prints
/// one report per connection coroutine and one for the tunnel's second.
#[test]
#[ignore = "run in a process of its own by stacks_have_twice_their_measured_use"]
fn child() {
    configure_once(Runtime {
        workers: 1,
        stack_words: 0x1000,
    });
    let (origin, origin_stop, origin_thread) = start(echo_origin);
    let (echo, echo_stop, echo_thread) = start(tcp_echo);
    let args = Args::try_parse_from([
        "proxy_server",
        "--allow-dest",
        "127.0.0.0/8",
        "--allow-dest",
        "::1/128",
        "--allow-connect-port",
        &echo.port().to_string(),
    ])
    .unwrap();
    let (log, log_writer) = access_log::start(Box::new(std::io::sink()), 16).unwrap();
    let proxy_settings = Settings {
        policy: args.policy(),
        users: Some(Users::parse("alice:s3cret\n").unwrap()),
        access_log: Some(log),
        tunnel_stack_words: MEASURING_WORDS,
        ..settings()
    };
    let stats = Arc::new(Stats::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let config = server::Config {
        stack_size: MEASURING_WORDS * size_of::<usize>(),
        ..server::Config::default()
    };
    let proxy_thread = {
        let (stop, counted) = (shutdown.clone(), stats.clone());
        std::thread::spawn(move || {
            server::run(listener, &stop, config, move |conn| {
                handler::serve(conn, &proxy_settings, &counted)
            })
        })
    };
    let up: Vec<u8> = (0..CARRIED).map(|i| (i % 239) as u8).collect();

    // A chunked upload after Expect: 100-continue, to a name (the
    // resolver's wait), answered chunked: both bodies re-chunked.
    let mut client = connect(proxy);
    let port = origin.port();
    write!(
        client,
        "POST http://localhost:{port}/chunked HTTP/1.1\r\n{ALICE}\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut answers = BufReader::new(client.try_clone().unwrap());
    let mut interim = String::new();
    answers.read_line(&mut interim).unwrap();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    answers.read_line(&mut interim).unwrap();
    client.write_all(&chunked_body(&up, 7000)).unwrap();
    let limits = Limits {
        body_bytes: 1 << 20,
        ..Limits::default()
    };
    let answer = read_response(&mut answers, &limits).unwrap();
    assert!(
        answer.status == 200 && answer.body == up,
        "{}",
        answer.status
    );
    drop((client, answers));

    // An HTTP/1.0 client: the chunked answer raw, to the close.
    let mut old = connect(proxy);
    write!(old, "GET http://{origin}/chunked HTTP/1.0\r\n{ALICE}\r\n").unwrap();
    let mut raw = Vec::new();
    old.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{:?}", &raw[..20]);

    // A tunnel carrying CARRIED bytes each way.
    let mut tunnel = connect(proxy);
    write!(tunnel, "CONNECT {echo} HTTP/1.1\r\n{ALICE}\r\n").unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tunnel.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let mut back = vec![0u8; 16 * 1024];
    for piece in up.chunks(back.len()) {
        tunnel.write_all(piece).unwrap();
        tunnel.read_exact(&mut back[..piece.len()]).unwrap();
        assert_eq!(&back[..piece.len()], piece);
    }
    tunnel.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        tunnel.read(&mut back).unwrap(),
        0,
        "the half-close came back"
    );

    // The refusals: a bad head, a path for a target, a wrong password, a
    // dead origin.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let refusals = [
        ("GET\r\n\r\n".to_owned(), 400),
        (format!("GET /x HTTP/1.1\r\n{ALICE}\r\n"), 400),
        (
            "GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n".to_owned(),
            407,
        ),
        (
            format!("GET http://{dead_addr}/ HTTP/1.1\r\n{ALICE}\r\n"),
            502,
        ),
    ];
    for (wire, status) in refusals {
        assert_eq!(exchange(proxy, wire.as_bytes()).0, status, "{wire}");
    }

    shutdown.trigger();
    proxy_thread.join().unwrap().unwrap();
    log_writer.finish().unwrap();
    origin_stop.trigger();
    origin_thread.join().unwrap().unwrap();
    echo_stop.trigger();
    echo_thread.join().unwrap().unwrap();
    // One worker: this runs after every report above is printed.
    may::go!(|| ()).join().unwrap();
    println!("stack child done");
}

/// The largest use (in words) may reported for a coroutine named `name`
/// (`None`: unnamed, the connections) on a measured stack, and how many.
fn largest(reports: &str, name: &str) -> (usize, usize) {
    let prefix = format!("coroutine name = {name}, stack size = ");
    // may rounds the stack up to whole pages; only measured ones are odd.
    let used: Vec<usize> = reports
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.split_once(",  used size = "))
        .filter(|(size, _)| size.parse::<usize>().is_ok_and(|s| s >= MEASURING_WORDS))
        .filter_map(|(_, used)| used.trim().parse().ok())
        .collect();
    (used.iter().copied().max().unwrap_or(0), used.len())
}

#[test]
fn stacks_have_twice_their_measured_use() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args(["stack_tests::child", "--exact", "--ignored", "--nocapture"])
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("stack child done"),
        "the child failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (connection, connections) = largest(&stdout, "None");
    let (tunnel, tunnels) = largest(&stdout, &format!("Some({DOWN_NAME:?})"));
    assert!(connections >= 7 && tunnels == 1, "{stdout}");
    let word = size_of::<usize>();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let kib = |words: usize| (words * word) as f64 / 1024.0;
    eprintln!(
        "{build}: connection coroutine {connection} words ({:.1} KiB) of {:.0} KiB, \
         tunnel's second {tunnel} words ({:.1} KiB) of {:.0} KiB",
        kib(connection),
        CONNECTION_STACK as f64 / 1024.0,
        kib(tunnel),
        kib(COPY_STACK_WORDS)
    );
    assert!(2 * connection * word <= CONNECTION_STACK, "{stdout}");
    assert!(2 * tunnel <= COPY_STACK_WORDS, "{stdout}");
}
