//! What every step's balancer does around the pick, written once: read the
//! client's request and ready it for a backend, send it and read the
//! answer's head, relay the answer, refuse. A step includes this file with
//! `#[path = "steps_http.rs"] mod steps_http;` and passes `start_balancer`
//! the function that forwards: steps 1-3 try one backend
//! (`steps_forward.rs`), steps 4-6 retry (`steps_retry.rs`).

use std::io::{self, BufReader, BufWriter, ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use may::net::TcpStream;
use may_patterns::balance::Pool;
use may_patterns::http::{self, Framing, Limits};
use may_patterns::server::{Conn, ReadHalf, WriteHalf};

use crate::steps_common::Running;

/// A client that sends nothing for this long is closed.
const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// A backend that does not accept within this is a failed backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A backend that sends nothing for this long is a failed backend.
const BACKEND_IDLE: Duration = Duration::from_secs(5);
/// The buffer every body goes through: on the heap, never on the
/// coroutine's stack.
pub const COPY_BUFFER: usize = 16 * 1024;

// ANCHOR: handle
/// A balancer on a thread of its own: every connection is `handle`d, and
/// `forward`, the step's own part, sends its request on. `pool` is a
/// handle on the pool; the caller may keep another.
pub fn start_balancer(
    pool: Pool,
    forward: fn(&Pool, Request) -> io::Result<()>,
) -> io::Result<Running> {
    Running::start(move |conn| {
        let _ = handle(conn, &pool, forward);
    })
}

/// A client's request, ready for a backend: its hop-by-hop headers
/// removed, its framing set, `Connection: close` added.
pub struct Request {
    pub head: http::RequestHead,
    pub framing: Framing,
    pub client_in: BufReader<ReadHalf>,
    pub client_out: BufWriter<WriteHalf>,
}

/// One client connection, one request: read the head, check it, and hand
/// it to `forward`.
fn handle(
    conn: Conn,
    pool: &Pool,
    forward: fn(&Pool, Request) -> io::Result<()>,
) -> io::Result<()> {
    conn.set_idle_timeout(Some(CLIENT_IDLE))?;
    let (reader, writer) = conn.split()?;
    let mut client_in = BufReader::new(reader);
    let mut client_out = BufWriter::new(writer);
    let limits = Limits::default();
    let mut head = match http::read_request_head(&mut client_in, &limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(()),
        Err(e) => return refuse(&mut client_out, 400, "Bad Request", &e.to_string()),
    };
    if !head.target.starts_with('/') {
        let why = "a balancer takes origin-form targets (/path?query)";
        return refuse(&mut client_out, 400, "Bad Request", why);
    }
    let framing = head.framing()?;
    http::remove_hop_by_hop(&mut head.headers);
    http::set_framing(&mut head.headers, framing);
    head.headers.push(("Connection".into(), "close".into()));
    let request = Request {
        head,
        framing,
        client_in,
        client_out,
    };
    forward(pool, request)
}

/// Connect to the backend, send it the request (body included) and read
/// its answer's head: everything that happens before a byte of the answer
/// reaches the client (from step 4 on, what may still be retried).
pub fn exchange(
    addr: SocketAddr,
    request: &mut Request,
    buf: &mut [u8],
) -> io::Result<(BufReader<TcpStream>, http::ResponseHead)> {
    let (head, framing) = (&request.head, request.framing);
    let stream = may_patterns::net::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(BACKEND_IDLE))?;
    let mut out = BufWriter::new(stream.try_clone()?);
    let start = format!("{} {} HTTP/1.1", head.method, head.target);
    http::write_head(&mut out, &start, &head.headers)?;
    let limits = Limits::default();
    let cap = limits.body_bytes as u64;
    let body = &mut request.client_in;
    http::copy_body(body, framing, &mut out, framing, cap, &limits, buf)?;
    out.flush()?;
    let mut backend = BufReader::new(stream);
    let answer = http::read_response_head(&mut backend, &limits)?;
    Ok((backend, answer))
}

/// Stream the backend's answer, whose head has been read, to the client,
/// framed as the backend framed it (a body that ends at close ends at our
/// close too).
pub fn relay(
    mut backend: BufReader<TcpStream>,
    mut answer: http::ResponseHead,
    request: &mut Request,
    buf: &mut [u8],
) -> io::Result<()> {
    let limits = Limits::default();
    let method = &request.head.method;
    let framing = http::response_framing(method, answer.status, &answer.headers)?;
    http::remove_hop_by_hop(&mut answer.headers);
    if matches!(framing, Framing::Length(_) | Framing::Chunked) {
        http::set_framing(&mut answer.headers, framing);
    }
    answer.headers.push(("Connection".into(), "close".into()));
    let start = format!("HTTP/1.1 {} {}", answer.status, answer.reason);
    let client = &mut request.client_out;
    http::write_head(client, &start, &answer.headers)?;
    let cap = u64::MAX;
    http::copy_body(&mut backend, framing, client, framing, cap, &limits, buf)?;
    client.flush()
}
// ANCHOR_END: handle

/// Answer the client ourselves and close.
pub fn refuse(client: &mut impl Write, status: u16, reason: &str, why: &str) -> io::Result<()> {
    match http::write_error(client, status, reason, &[], &format!("{why}\n"), true) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()), // the client left
        done => done,
    }
}
