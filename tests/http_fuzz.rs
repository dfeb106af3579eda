//! Random and mutated request heads against a tiny server built on the
//! proxy-side HTTP layer (`read_request_head`, `copy_body`, `write_error`):
//! whatever arrives, the server answers or closes, never hangs or panics,
//! and still serves a good request afterwards.
//!
//! The cases come from fastrand with a fixed seed (override with
//! `HTTP_FUZZ_SEED=<n>`); a failure prints the seed and the case.

use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_patterns::http::{copy_body, read_request_head, write_error, Framing, Limits};
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;

const CASES: usize = 5000;

/// The payload the server accepts; bodies over it are refused with 400.
const BODY_CAP: u64 = 64 * 1024;

/// One connection: requests until the client closes, a 400 and close on
/// anything malformed.
fn serve(conn: Conn) {
    // A client that stops sending cannot hold the coroutine for ever.
    conn.set_idle_timeout(Some(Duration::from_secs(2))).unwrap();
    let Ok((reader, mut writer)) = conn.split() else {
        return;
    };
    let mut reader = BufReader::with_capacity(4096, reader);
    let limits = Limits::default();
    let mut buf = vec![0; 16 * 1024];
    loop {
        let outcome = read_request_head(&mut reader, &limits).and_then(|head| {
            let Some(head) = head else { return Ok(None) };
            let framing = head.framing()?;
            let sink = &mut io::sink();
            copy_body(
                &mut reader,
                framing,
                sink,
                Framing::UntilClose,
                BODY_CAP,
                &limits,
                &mut buf,
            )?;
            Ok(Some(head.keep_alive()))
        });
        match outcome {
            Ok(Some(keep_alive)) => {
                if write_error(&mut writer, 200, "OK", &[], "ok", !keep_alive).is_err()
                    || !keep_alive
                {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let _ = write_error(&mut writer, 400, "Bad Request", &[], &e.to_string(), true);
                return;
            }
            // A clean close, an EOF inside a message, an idle timeout.
            Ok(None) | Err(_) => return,
        }
    }
}

const GOOD: [&[u8]; 3] = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
];

const BAD_CHUNK_SIZES: [&[u8]; 6] = [b"fffffffffffffffffff", b"-1", b"5 x", b"0x5", b"", b"5\n\r"];

/// Replace the first `from` in `case` with `to`, if there is one.
fn replace(case: &mut Vec<u8>, from: &[u8], to: &[u8]) {
    if let Some(at) = case.windows(from.len()).position(|w| w == from) {
        case.splice(at..at + from.len(), to.iter().copied());
    }
}

/// A good request with one to three mutations, or (one case in ten) bytes
/// at random.
fn case(rng: &mut fastrand::Rng) -> Vec<u8> {
    if rng.u8(..10) == 0 {
        let len = rng.usize(..200);
        return (0..len).map(|_| rng.u8(..)).collect();
    }
    let mut case = GOOD[rng.usize(..GOOD.len())].to_vec();
    for _ in 0..rng.usize(1..=3) {
        let at = rng.usize(..=case.len());
        match rng.u8(..7) {
            0 if at < case.len() => case[at] = rng.u8(..),
            1 => case.insert(at, rng.u8(..)),
            2 if at < case.len() => {
                case.remove(at);
            }
            3 => replace(
                &mut case,
                b"Host: h\r\n",
                b"Host: h\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n",
            ),
            4 => {
                let huge = format!("X-Huge: {}\r\n", "v".repeat(rng.usize(1..20_000)));
                replace(
                    &mut case,
                    b"Host: h\r\n",
                    format!("Host: h\r\n{huge}").as_bytes(),
                );
            }
            5 => replace(
                &mut case,
                b"5\r\nhello",
                &[BAD_CHUNK_SIZES[rng.usize(..6)], &b"\r\nhello"[..]].concat(),
            ),
            _ => replace(
                &mut case,
                b"Host: h\r\n",
                b"Host: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            ),
        }
    }
    case
}

/// Send `case` on a fresh connection, close our side, and read all the
/// server says until it closes. `Err` if it neither answers nor closes.
fn exchange(addr: std::net::SocketAddr, case: &[u8]) -> io::Result<Vec<u8>> {
    let mut client = std::net::TcpStream::connect(addr)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The server may close before it has read everything (after a 400):
    // a failed write is part of the game, the answer is what counts.
    let _ = client.write_all(case);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    match client.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        // The server closed with our unread bytes in its buffer: a reset.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(answer),
        Err(e) => Err(e),
    }
}

#[test]
fn the_server_survives_random_and_mutated_requests() {
    may_patterns::runtime::configure_for_tests();
    let seed: u64 = std::env::var("HTTP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let panics = Arc::new(AtomicU64::new(0));
    let server = {
        let (shutdown, panics) = (shutdown.clone(), panics.clone());
        std::thread::spawn(move || {
            server::run(listener, &shutdown, Config::default(), move |conn| {
                if catch_unwind(AssertUnwindSafe(|| serve(conn))).is_err() {
                    panics.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
    };

    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut ok, mut bad) = (0, 0);
    for i in 0..CASES {
        let case = case(&mut rng);
        let shown = String::from_utf8_lossy(&case[..case.len().min(300)]).into_owned();
        let answer = exchange(addr, &case)
            .unwrap_or_else(|e| panic!("seed {seed} case {i}: {e}, sent {shown:?}"));
        if answer.is_empty() {
            continue; // an incomplete message: closed without an answer
        }
        let status = answer.get(..12).unwrap_or_default();
        match status {
            b"HTTP/1.1 200" => ok += 1,
            b"HTTP/1.1 400" => bad += 1,
            _ => panic!(
                "seed {seed} case {i}: answer {:?} to {shown:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    // Both outcomes happened, so the cases exercise both paths.
    assert!(
        ok > CASES / 20 && bad > CASES / 20,
        "seed {seed}: {ok} ok, {bad} bad"
    );

    // Still serving: two good requests on one connection, both answered.
    let good = [GOOD[1], GOOD[2]].concat();
    let answer = String::from_utf8(exchange(addr, &good).unwrap()).unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");

    shutdown.trigger();
    server.join().unwrap().unwrap();
    assert_eq!(
        panics.load(Ordering::Relaxed),
        0,
        "seed {seed}: a handler panicked"
    );
    eprintln!(
        "seed {seed}: {CASES} cases, {ok} ok, {bad} refused, in {:?}",
        started.elapsed()
    );
}
