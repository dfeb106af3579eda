//! Step 4: `CONNECT` tunnels. `CONNECT host:port` asks for a raw TCP
//! connection (an `https://` URL comes this way, its TLS handshake going to
//! the origin through the proxy): the proxy connects, answers `200`, and
//! copies bytes both ways until both sides are done, one direction on the
//! connection's coroutine and the other on a second one. A side's end of
//! stream is passed on as a half-close (`shutdown(Write)`), so a client
//! that has sent everything can still read the whole answer. A tunnel
//! whose two directions are both silent for `IDLE` is closed.
//!
//! Plain HTTP is forwarded as in step 3. Still IP addresses only (names:
//! step 5). The demo opens a tunnel to an origin that answers only after
//! the client's end of stream.

#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_ip_forward.rs"]
mod steps_ip_forward;
#[path = "steps_ip_only.rs"]
mod steps_ip_only;
#[path = "steps_pool.rs"]
mod steps_pool;
#[path = "steps_request.rs"]
mod steps_request;
#[path = "steps_streaming.rs"]
mod steps_streaming;
#[path = "steps_tunnel.rs"]
mod steps_tunnel;

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};

use may_patterns::server::{Conn, ReadHalf, WriteHalf};
use steps_common::{show, Client, Service, BUF};
use steps_ip_forward::forward_ip;
use steps_pool::{connect_first, Pool};
use steps_request::{client_halves, next_head};
use steps_streaming::{refuse, Failure};
use steps_tunnel::open_tunnel;

/// This hop's name in `Via`.
const VIA: &str = "step4";

// ANCHOR: handle
/// One client connection: requests until the client closes, asks to
/// close, stays idle for `IDLE`, or a request fails, or a `CONNECT`, which
/// turns the connection into a tunnel until both sides are done.
fn handle(conn: Conn, pool: &Pool) -> io::Result<()> {
    let (mut client_in, mut client_out) = client_halves(conn)?;
    let mut buf = vec![0u8; BUF];
    while let Some(head) = next_head(&mut client_in, &mut client_out)? {
        if head.method.eq_ignore_ascii_case("CONNECT") {
            return connect_tunnel(&head.target, client_in, client_out);
        }
        if !forward_ip(head, &mut client_in, &mut client_out, &mut buf, pool)? {
            break;
        }
    }
    Ok(())
}

/// Answer a `CONNECT ip:port`: connect, then run the tunnel on this
/// connection (names: step 5).
fn connect_tunnel(
    target: &str,
    client_in: BufReader<ReadHalf>,
    mut client_out: BufWriter<WriteHalf>,
) -> io::Result<()> {
    let Ok(addr) = target.parse::<SocketAddr>() else {
        let why = format!("{target}: this step tunnels to ip:port only");
        return refuse(&mut client_out, Failure::Refuse(400, "Bad Request", why));
    };
    match connect_first(&[addr]) {
        Ok((_, origin)) => open_tunnel(origin, client_in, client_out).map(drop),
        Err(e) => refuse(&mut client_out, Failure::Upstream(e)),
    }
}
// ANCHOR_END: handle

/// The proxy, its origin connections pooled in `pool`.
fn start_proxy(addr: &str, pool: Arc<Pool>) -> io::Result<Service> {
    Service::start(addr, move |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn, &pool) {
            eprintln!("{peer}: {e}");
        }
    })
}

/// The most the demo's origin reads, and its client.
const DEMO_BYTES: u64 = 64 * 1024;

// ANCHOR: demo
/// An origin that reads until end of stream, then answers and closes:
/// it works through the tunnel only if the client's half-close arrives.
fn start_origin_after_eof(seen: Arc<Mutex<Vec<String>>>) -> io::Result<Service> {
    Service::start("127.0.0.1:0", move |mut conn| {
        let _ = conn.set_idle_timeout(Some(steps_common::WAIT));
        let mut got = Vec::new();
        if Read::take(&mut conn, DEMO_BYTES)
            .read_to_end(&mut got)
            .is_err()
        {
            return;
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let mut seen = seen.lock().unwrap();
        seen.push(format!(
            "read {} bytes, then end of stream: {text:?}",
            got.len()
        ));
        let answer = format!("the origin got {} bytes: {text}", got.len());
        if conn.write_all(answer.as_bytes()).is_ok() {
            seen.push("answered, and closed".to_owned());
        }
    })
}

/// A tunnel: (what the client did and saw, what the origin did and saw).
fn demo() -> io::Result<(Vec<String>, Vec<String>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = start_origin_after_eof(seen.clone())?;
    let proxy = start_proxy("127.0.0.1:0", Arc::default())?;
    let mut client = Client::connect(proxy.addr)?;
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr);
    client.send(connect.as_bytes())?;
    let head = client.head()?;
    let text = "hello through the tunnel";
    client.send(text.as_bytes())?;
    client.writer.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    Read::take(&mut client.reader, DEMO_BYTES).read_to_string(&mut answer)?;
    let said = vec![
        format!("sent {}", connect.lines().next().unwrap_or_default()),
        format!("got HTTP/1.1 {} {}", head.status, head.reason),
        format!("sent {} bytes, then shut its write side", text.len()),
        format!("read {answer:?}, then end of stream"),
    ];
    let seen = seen.lock().unwrap().clone();
    Ok((said, seen))
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step4_connect",
        || {
            let (said, seen) = demo().expect("the demo runs");
            show("the client", &said);
            show("the origin", &seen);
        },
        |addr| start_proxy(addr, Arc::default()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::atomic::Ordering;
    use steps_common::start_origin;

    #[test]
    fn the_answer_comes_back_after_the_clients_half_close() {
        configure_for_tests();
        let (said, seen) = demo().unwrap();
        assert_eq!(said[1], "got HTTP/1.1 200 Connection established");
        assert_eq!(
            said[3],
            "read \"the origin got 24 bytes: hello through the tunnel\", then end of stream"
        );
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn bytes_right_behind_the_connect_head_are_not_lost() {
        configure_for_tests();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin = start_origin_after_eof(seen.clone()).unwrap();
        let proxy = start_proxy("127.0.0.1:0", Arc::default()).unwrap();
        let mut client = Client::connect(proxy.addr).unwrap();
        let o = origin.addr;
        client
            .send(format!("CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n\r\nearly").as_bytes())
            .unwrap();
        client.send(b" and late").unwrap();
        client.writer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(client.head().unwrap().status, 200);
        let mut answer = String::new();
        client.reader.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "the origin got 14 bytes: early and late");
    }

    #[test]
    fn a_connect_that_cannot_be_made_is_refused() {
        configure_for_tests();
        let proxy = start_proxy("127.0.0.1:0", Arc::default()).unwrap();
        for (target, status) in [("example.com:443", 400), ("127.0.0.1:1", 502)] {
            let mut client = Client::connect(proxy.addr).unwrap();
            let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            assert_eq!(
                client.exchange("GET", &request).unwrap().head.status,
                status
            );
            assert!(client.closed().unwrap());
        }
    }

    #[test]
    fn plain_http_is_still_forwarded() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let pool = Arc::new(Pool::default());
        let proxy = start_proxy("127.0.0.1:0", pool.clone()).unwrap();
        let mut client = Client::connect(proxy.addr).unwrap();
        let o = origin.addr();
        let got = client
            .exchange(
                "GET",
                &format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"),
            )
            .unwrap();
        assert_eq!(got.body, b"hello from the origin\n");
        assert_eq!(pool.opened.load(Ordering::Relaxed), 1);
    }
}
