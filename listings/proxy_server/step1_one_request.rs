//! Step 1: one request per client connection. The client sends a request
//! in absolute form (`GET http://127.0.0.1:8080/hello HTTP/1.1`); the proxy
//! reads and checks the head, connects to the origin, sends the request in
//! origin form (`GET /hello`) with `Host` taken from the URL, the
//! hop-by-hop headers removed and itself added to `Via`, copies the answer
//! back and closes both connections (`Connection: close` both ways).
//!
//! Only `GET` without a body, to an IP address: step 3 streams bodies,
//! step 5 resolves names. The answer's body is read whole under a cap.
//!
//! With no arguments it runs a demo on loopback: an origin, the proxy, one
//! scripted client. `--serve ADDR` runs the proxy until Ctrl-C (try
//! `curl -x http://ADDR http://127.0.0.1:PORT/`).

#[path = "steps_common.rs"]
mod steps_common;
#[path = "steps_ip_only.rs"]
mod steps_ip_only;
#[path = "steps_request.rs"]
mod steps_request;

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;

use may::net::TcpStream;
use may_patterns::http::{
    append_via, read_response_head, remove_hop_by_hop, response_framing, set_framing, write_error,
    write_head, BodyReader, Framing, Limits, RequestHead,
};
use may_patterns::server::Conn;
use steps_common::{show, start_origin, Client, Service};
use steps_ip_only::ip_target;
use steps_request::{client_halves, next_head, Target, CONNECT_TIMEOUT, IDLE};

/// This hop's name in `Via`.
const VIA: &str = "step1";

/// A request the proxy answers itself: status, reason, a sentence.
struct Refusal(u16, &'static str, String);

// ANCHOR: handle
/// One client connection: one request, forwarded; then both are closed.
fn handle(conn: Conn) -> io::Result<()> {
    let (mut client_in, mut client_out) = client_halves(conn)?;
    let Some(head) = next_head(&mut client_in, &mut client_out)? else {
        return Ok(()); // closed without a request, or answered 400
    };
    match forward(head, &mut client_out) {
        Ok(()) => Ok(()),
        Err(Refusal(status, reason, why)) => {
            write_error(&mut client_out, status, reason, &[], &why, true)
        }
    }
}

/// Send `head` to its origin and its answer to `client`.
fn forward(head: RequestHead, client: &mut impl Write) -> Result<(), Refusal> {
    if head.method != "GET" || head.framing().ok() != Some(Framing::Empty) {
        let why = "this step forwards GET without a body only".to_owned();
        return Err(Refusal(501, "Not Implemented", why));
    }
    let (target, addr) = ip_target(&head.target).map_err(|(s, r, why)| Refusal(s, r, why))?;
    let bad_gateway = |e: io::Error| Refusal(502, "Bad Gateway", e.to_string());
    let origin = connect(addr).map_err(bad_gateway)?;
    send_request(head, &target, &origin).map_err(bad_gateway)?;
    relay_response(origin, client).map_err(bad_gateway)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let origin = may_patterns::net::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    origin.set_read_timeout(Some(IDLE))?;
    Ok(origin)
}
// ANCHOR_END: handle

// ANCHOR: rewrite
/// The head as the origin must see it: origin form, `Host` from the URL,
/// no hop-by-hop headers, this hop in `Via`, and `Connection: close`.
fn send_request(head: RequestHead, target: &Target, origin: &TcpStream) -> io::Result<()> {
    let mut headers = head.headers;
    remove_hop_by_hop(&mut headers);
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case("host"));
    headers.insert(0, ("Host".to_owned(), target.authority()));
    append_via(&mut headers, head.version, VIA);
    headers.push(("Connection".to_owned(), "close".to_owned()));
    let mut out = BufWriter::new(origin.try_clone()?);
    write_head(&mut out, &format!("GET {} HTTP/1.1", target.path), &headers)?;
    out.flush()
}

/// The biggest answer this step relays: it holds the body whole.
const BODY_CAP: u64 = 1024 * 1024;

/// Read the origin's answer whole (capped) and write it to the client,
/// with its hop-by-hop headers replaced as for the request.
fn relay_response(origin: TcpStream, client: &mut impl Write) -> io::Result<()> {
    let limits = Limits::default();
    let mut origin = BufReader::new(origin);
    let head = read_response_head(&mut origin, &limits)?;
    let framing = response_framing("GET", head.status, &head.headers)?;
    let mut body = Vec::new();
    BodyReader::new(&mut origin, framing, BODY_CAP, &limits).read_to_end(&mut body)?;
    let mut headers = head.headers;
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, head.version, VIA);
    set_framing(&mut headers, Framing::Length(body.len() as u64));
    headers.push(("Connection".to_owned(), "close".to_owned()));
    let status_line = format!("HTTP/1.1 {} {}", head.status, head.reason);
    write_head(client, &status_line, &headers)?;
    client.write_all(&body)?;
    client.flush()
}
// ANCHOR_END: rewrite

fn start_proxy(addr: &str) -> io::Result<Service> {
    Service::start(addr, |conn| {
        let peer = conn.peer();
        if let Err(e) = handle(conn) {
            eprintln!("{peer}: {e}");
        }
    })
}

// ANCHOR: demo
/// What the client sends: the URL whole, and headers for this hop only
/// (`Proxy-Connection`, `Connection` and the header it names).
fn demo_request(origin: SocketAddr) -> String {
    format!(
        "GET http://{origin}/hello HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: demo\r\n\
         Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n"
    )
}

/// One request through the proxy: (what the client sent, what the origin
/// saw, what the client got).
fn demo() -> io::Result<[Vec<String>; 3]> {
    let origin = start_origin()?;
    let proxy = start_proxy("127.0.0.1:0")?;
    let mut client = Client::connect(proxy.addr)?;
    let request = demo_request(origin.addr());
    let sent = request.lines().filter(|l| !l.is_empty()).map(str::to_owned);
    let got = client.exchange("GET", &request)?;
    let closed = client.closed()?;
    let mut shown = got.head_lines();
    shown.push(String::new());
    shown.push(String::from_utf8_lossy(&got.body).trim_end().to_owned());
    shown.push(format!("(then the proxy closed the connection: {closed})"));
    let seen = origin.take_seen().pop().unwrap_or_default();
    Ok([sent.collect(), seen, shown])
}
// ANCHOR_END: demo

fn main() {
    steps_common::main_of(
        "step1_one_request",
        || {
            let [sent, seen, got] = demo().expect("the demo runs");
            show("the client sent", &sent);
            show("the origin saw", &seen);
            show("the client got", &got);
        },
        start_proxy,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn targets_are_parsed_into_host_port_and_origin_form() {
        let t = Target::parse("http://example.com/a/b?c=d").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 80));
        assert_eq!(
            (t.path.as_str(), t.authority()),
            ("/a/b?c=d", "example.com".into())
        );
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!((t.path.as_str(), t.authority()), ("/", "[::1]:8080".into()));
        assert_eq!(Target::parse("https://example.com/"), None);
        assert_eq!(Target::parse("/relative"), None);
    }

    #[test]
    fn the_origin_gets_origin_form_without_hop_by_hop_headers() {
        configure_for_tests();
        let [_, seen, got] = demo().unwrap();
        assert!(seen[0].starts_with("GET /hello HTTP/1.1"), "{seen:?}");
        for hop in ["Proxy-Connection", "X-Hop", "Connection: keep-alive"] {
            assert!(!seen.iter().any(|l| l.starts_with(hop)), "{hop}: {seen:?}");
        }
        assert!(seen.contains(&"Via: 1.1 step1".to_owned()), "{seen:?}");
        assert_eq!(got[0], "HTTP/1.1 200 OK");
        assert!(got.contains(&"hello from the origin".to_owned()), "{got:?}");
        assert!(got.last().unwrap().ends_with("true)"), "{got:?}");
    }

    #[test]
    fn refusals_are_answered_by_the_proxy() {
        configure_for_tests();
        let proxy = start_proxy("127.0.0.1:0").unwrap();
        let cases = [
            ("GET /not-absolute HTTP/1.1\r\n\r\n", 400),
            (
                "POST http://127.0.0.1:1/ HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
                501,
            ),
            ("GET http://example.invalid/ HTTP/1.1\r\n\r\n", 502),
            ("GET http://127.0.0.1:1/ HTTP/1.1\r\n\r\n", 502),
            (
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
        ];
        for (request, status) in cases {
            let mut client = Client::connect(proxy.addr).unwrap();
            let got = client.exchange("GET", request).unwrap();
            assert_eq!(got.head.status, status, "{request:?}");
            assert!(client.closed().unwrap(), "{request:?}");
        }
    }
}
