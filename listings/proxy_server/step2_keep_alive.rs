//! Step 2: keep-alive on both sides. A client sends request after request
//! on one connection, and the proxy keeps each origin connection open
//! after its answer, in a pool shared by every client connection, to reuse
//! for the next request to the same destination. Both ends are bounded: a
//! client idle for `IDLE` is closed, the pool keeps at most
//! `IDLE_PER_DESTINATION` connections per destination and `IDLE_TOTAL` in
//! all, each for at most `POOL_IDLE`.
//!
//! Still `GET` without a body, to an IP address (bodies: step 3; names:
//! step 5). With no arguments it runs a demo: three requests on one client
//! connection, then the connection counts. `--serve ADDR` runs the proxy.

#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_ip_only.rs"]
mod steps_ip_only;
#[path = "steps_pool.rs"]
mod steps_pool;
#[path = "steps_request.rs"]
mod steps_request;

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use may_patterns::http::{
    append_via, read_response_head, remove_hop_by_hop, response_framing, set_framing, write_error,
    write_head, BodyReader, Framing, Limits, RequestHead, ResponseHead,
};
use may_patterns::server::Conn;
use steps_common::{show, start_origin, Client, Service};
use steps_ip_only::ip_target;
use steps_pool::{Pool, Upstream};
use steps_request::{client_halves, next_head, Target};

/// This hop's name in `Via`.
const VIA: &str = "step2";

/// A request the proxy answers itself: status, reason, a sentence.
struct Refusal(u16, &'static str, String);

fn bad_gateway(e: io::Error) -> Refusal {
    Refusal(502, "Bad Gateway", e.to_string())
}

// ANCHOR: handle
/// One client connection: requests until the client closes, asks to
/// close, or stays idle for `IDLE`, or a request fails.
fn handle(conn: Conn, pool: &Pool) -> io::Result<()> {
    let (mut client_in, mut client_out) = client_halves(conn)?;
    while let Some(head) = next_head(&mut client_in, &mut client_out)? {
        let keep_alive = head.keep_alive();
        if let Err(Refusal(status, reason, why)) = forward(head, keep_alive, &mut client_out, pool)
        {
            return write_error(&mut client_out, status, reason, &[], &why, true);
        }
        if !keep_alive {
            break;
        }
    }
    Ok(())
}
// ANCHOR_END: handle

/// Send `head` to its origin and its answer to `client`; the origin
/// connection goes back to the pool if the answer lets it.
fn forward(
    head: RequestHead,
    keep_alive: bool,
    client: &mut impl Write,
    pool: &Pool,
) -> Result<(), Refusal> {
    if head.method != "GET" || head.framing().ok() != Some(Framing::Empty) {
        let why = "this step forwards GET without a body only".to_owned();
        return Err(Refusal(501, "Not Implemented", why));
    }
    let (target, addr) = ip_target(&head.target).map_err(|(s, r, why)| Refusal(s, r, why))?;
    let request = origin_request(head, &target);
    let (mut upstream, response) = exchange(pool, addr, &request)?;
    let reusable =
        relay_response(&mut upstream, response, keep_alive, client).map_err(bad_gateway)?;
    if reusable {
        pool.put(upstream);
    }
    Ok(())
}

// ANCHOR: exchange
/// Send `request` on a pooled connection to `addr`, or a new one, and read
/// the answer's head. A pooled connection the origin has closed in the
/// meantime fails before any answer: the request is sent again, once, on
/// a new connection (safe, since it is a `GET` without a body).
fn exchange(
    pool: &Pool,
    addr: SocketAddr,
    request: &[u8],
) -> Result<(Upstream, ResponseHead), Refusal> {
    if let Some(mut upstream) = pool.take(addr) {
        match send(&mut upstream, request) {
            Ok(head) => return Ok((upstream, head)),
            Err(e) if closed_before_answer(&e) => {}
            Err(e) => return Err(bad_gateway(e)),
        }
    }
    let mut upstream = pool.connect(&[addr]).map_err(bad_gateway)?;
    let head = send(&mut upstream, request).map_err(bad_gateway)?;
    Ok((upstream, head))
}

fn send(upstream: &mut Upstream, request: &[u8]) -> io::Result<ResponseHead> {
    upstream.writer.write_all(request)?;
    upstream.writer.flush()?;
    read_response_head(&mut upstream.reader, &Limits::default())
}

fn closed_before_answer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}
// ANCHOR_END: exchange

/// The head as the origin must see it: origin form, `Host` from the URL,
/// no hop-by-hop headers, this hop in `Via`. No `Connection: close` now:
/// an HTTP/1.1 connection stays open unless one side says otherwise.
fn origin_request(head: RequestHead, target: &Target) -> Vec<u8> {
    let mut headers = head.headers;
    remove_hop_by_hop(&mut headers);
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case("host"));
    headers.insert(0, ("Host".to_owned(), target.authority()));
    append_via(&mut headers, head.version, VIA);
    let mut request = Vec::new();
    let start_line = format!("GET {} HTTP/1.1", target.path);
    write_head(&mut request, &start_line, &headers).expect("a Vec takes every write");
    request
}

/// The biggest answer this step relays: it holds the body whole.
const BODY_CAP: u64 = 1024 * 1024;

// ANCHOR: relay
/// Read the answer's body whole (capped) and write the answer to the
/// client, `Connection: close` only if the client asked for it. Whether
/// the origin connection can carry another request: the origin did not
/// ask to close it, and the body did not end by the origin closing it.
fn relay_response(
    upstream: &mut Upstream,
    head: ResponseHead,
    keep_alive: bool,
    client: &mut impl Write,
) -> io::Result<bool> {
    let limits = Limits::default();
    let framing = response_framing("GET", head.status, &head.headers)?;
    let reusable = head.keep_alive() && framing != Framing::UntilClose;
    let mut body = Vec::new();
    BodyReader::new(&mut upstream.reader, framing, BODY_CAP, &limits).read_to_end(&mut body)?;
    let mut headers = head.headers;
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, head.version, VIA);
    set_framing(&mut headers, Framing::Length(body.len() as u64));
    if !keep_alive {
        headers.push(("Connection".to_owned(), "close".to_owned()));
    }
    let status_line = format!("HTTP/1.1 {} {}", head.status, head.reason);
    write_head(client, &status_line, &headers)?;
    client.write_all(&body)?;
    client.flush()?;
    Ok(reusable)
}
// ANCHOR_END: relay

/// The proxy's counts, for the demo.
#[derive(Default)]
struct Stats {
    clients: AtomicU64,
}

/// The proxy, with its pool and counts.
struct Proxy {
    service: Service,
    pool: Arc<Pool>,
    stats: Arc<Stats>,
}

fn start_proxy(addr: &str) -> io::Result<Proxy> {
    let (pool, stats) = (Arc::new(Pool::default()), Arc::new(Stats::default()));
    let (p, st) = (pool.clone(), stats.clone());
    let service = Service::start(addr, move |conn| {
        st.clients.fetch_add(1, Ordering::Relaxed);
        let peer = conn.peer();
        if let Err(e) = handle(conn, &p) {
            eprintln!("{peer}: {e}");
        }
    })?;
    Ok(Proxy {
        service,
        pool,
        stats,
    })
}

// ANCHOR: demo
/// Three requests on one client connection; each answer's status line and
/// body, then the connection counts on both sides.
fn demo() -> io::Result<Vec<String>> {
    let origin = start_origin()?;
    let proxy = start_proxy("127.0.0.1:0")?;
    let mut client = Client::connect(proxy.service.addr)?;
    let mut lines = Vec::new();
    for path in ["/a", "/b", "/c"] {
        let request = format!(
            "GET http://{0}{path} HTTP/1.1\r\nHost: {0}\r\n\r\n",
            origin.addr()
        );
        let got = client.exchange("GET", &request)?;
        let body = String::from_utf8_lossy(&got.body).trim_end().to_owned();
        lines.push(format!("GET {path}: {} ({body})", got.head_lines()[0]));
    }
    drop(client);
    lines.push(format!(
        "client connections: {}, origin connections: {} (the proxy opened {})",
        proxy.stats.clients.load(Ordering::Relaxed),
        origin.connections.load(Ordering::SeqCst),
        proxy.pool.opened.load(Ordering::Relaxed),
    ));
    Ok(lines)
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step2_keep_alive",
        || show("one client connection", &demo().expect("the demo runs")),
        |addr| start_proxy(addr).map(|proxy| proxy.service),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::http::read_request_head;
    use may_patterns::runtime::configure_for_tests;
    use std::io::BufReader;

    fn get(origin: SocketAddr, path: &str, extra: &str) -> String {
        format!("GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\n{extra}\r\n")
    }

    #[test]
    fn three_requests_share_one_connection_on_each_side() {
        configure_for_tests();
        let lines = demo().unwrap();
        assert_eq!(
            lines.last().unwrap(),
            "client connections: 1, origin connections: 1 (the proxy opened 1)"
        );
    }

    #[test]
    fn two_clients_reuse_the_pooled_connection_one_after_the_other() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let proxy = start_proxy("127.0.0.1:0").unwrap();
        for _ in 0..2 {
            let mut client = Client::connect(proxy.service.addr).unwrap();
            let close = get(origin.addr(), "/", "Connection: close\r\n");
            let got = client.exchange("GET", &close).unwrap();
            assert_eq!(got.head.status, 200);
            // Closed once the origin connection is back in the pool.
            assert!(client.closed().unwrap());
        }
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn connection_close_from_the_client_is_honoured_and_passed_on_as_close() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let proxy = start_proxy("127.0.0.1:0").unwrap();
        let mut client = Client::connect(proxy.service.addr).unwrap();
        let request = get(origin.addr(), "/", "Connection: close\r\n");
        let got = client.exchange("GET", &request).unwrap();
        assert_eq!(got.header("connection"), Some("close"));
        assert!(client.closed().unwrap());
        // The origin connection stays pooled: the client's close is hop-by-hop.
        assert_eq!(proxy.pool.idle.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_pooled_connection_the_origin_closed_is_replaced() {
        configure_for_tests();
        // An origin that answers one request, then closes without saying so.
        let origin = Service::start("127.0.0.1:0", |conn| {
            let mut conn = BufReader::new(conn);
            if let Ok(Some(_)) = read_request_head(&mut conn, &Limits::default()) {
                let _ = conn
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        })
        .unwrap();
        let proxy = start_proxy("127.0.0.1:0").unwrap();
        let mut client = Client::connect(proxy.service.addr).unwrap();
        for _ in 0..2 {
            let got = client.exchange("GET", &get(origin.addr, "/", "")).unwrap();
            assert_eq!((got.head.status, got.body.as_slice()), (200, &b"ok"[..]));
        }
        assert_eq!(proxy.pool.opened.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound_per_destination() {
        configure_for_tests();
        let origin = start_origin().unwrap();
        let pool = Pool::default();
        for _ in 0..steps_pool::IDLE_PER_DESTINATION + 2 {
            pool.put(pool.connect(&[origin.addr()]).unwrap());
        }
        assert_eq!(
            pool.idle.lock().unwrap()[&origin.addr()].len(),
            steps_pool::IDLE_PER_DESTINATION
        );
    }
}
