//! Pitfall: retrying a request that was not idempotent. A backend can
//! fail after it has done a request's work and before it answers: it
//! crashed, it was killed, its answer was lost on the way. The balancer
//! only sees a connection closed without an answer. A balancer that sends
//! every failed request to the next backend then does the work twice: for
//! a `POST /orders` that is two orders, and the client, which got one
//! `200`, cannot know.
//!
//! The demo's two backends share one orders table (the database behind
//! them); `orders-a` records the first request it gets and crashes before
//! it answers. One client sends one `POST /orders` through a balancer that
//! retries every failure, then through one that asks the final program's
//! rule, `retry::may_retry`. A `GET` that meets the same crash shows that
//! the rule still retries what is safe to send twice.
//!
//! Run it: `cargo run --example pitfall_retry_post`

// The final program's retry rule itself, not a copy of it.
#[path = "load_balancer/retry.rs"]
mod retry;

use std::io::{self, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use may::net::TcpListener;
use may_patterns::balance::{BackendConfig, Outcome, Pool, PoolConfig};
use may_patterns::clock::MonotonicClock;
use may_patterns::http::{self, Limits, Request, Response};
use may_patterns::runtime::{configure_once, Settings};
use may_patterns::server::{self, Config, Conn};
use may_patterns::shutdown::Shutdown;

use retry::Failure;

/// A peer that sends nothing for this long is given up on: a bound that
/// fails the demo instead of hanging it (every answer here comes at once).
const IDLE: Duration = Duration::from_secs(5);

/// One order in the shared table.
#[derive(Clone)]
struct Order {
    id: usize,
    item: String,
    by: &'static str,
}

/// The table every backend writes to. A std `Mutex`: it is held only to
/// push or count, never across a yield.
type Table = Arc<StdMutex<Vec<Order>>>;

/// What a backend is told to do, and what it saw.
struct Script {
    /// Die after the first request's work, before its answer.
    crash_first: AtomicBool,
    /// Requests read.
    read: AtomicUsize,
}

// ANCHOR: backend
/// An orders backend. `POST /orders` records the order and answers its
/// id; any other request answers how many orders there are. Scripted to
/// crash, it dies after its first request's work and before the answer:
/// the connection closes with nothing sent back.
fn orders_backend(
    conn: Conn,
    name: &'static str,
    table: &Table,
    script: &Script,
) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    let (input, mut output) = conn.split()?;
    let Some(request) = http::read_request(&mut BufReader::new(input), &Limits::default())? else {
        return Ok(());
    };
    script.read.fetch_add(1, Ordering::SeqCst);
    let mut orders = table.lock().expect("no one panics holding the table");
    let answer = if request.method == "POST" {
        let id = orders.len() + 1;
        let item = String::from_utf8_lossy(&request.body).into_owned();
        orders.push(Order { id, item, by: name });
        format!(r#"{{"order":{id},"by":"{name}"}}"#)
    } else {
        format!(r#"{{"orders":{},"by":"{name}"}}"#, orders.len())
    };
    drop(orders);
    if script.crash_first.swap(false, Ordering::SeqCst) {
        return Ok(()); // killed: the work is done, the answer never leaves
    }
    let json = "application/json";
    http::write_response(&mut output, 200, "OK", json, &[], answer.as_bytes())
}
// ANCHOR_END: backend

/// One attempt on one backend: connect, send the request, read the whole
/// answer. The error says how far it got, in the final program's terms.
fn attempt(addr: SocketAddr, request: &Request) -> Result<Response, Failure> {
    let mut stream =
        may_patterns::net::connect_timeout(&addr, IDLE).map_err(|e| Failure::Connect {
            timed_out: e.kind() == ErrorKind::TimedOut,
        })?;
    let (method, target, body) = (&request.method, &request.target, &request.body);
    let sent = stream
        .set_read_timeout(Some(IDLE))
        .and_then(|()| http::write_request(&mut stream, method, target, "orders", &[], body));
    sent.map_err(|_| Failure::Reset)?;
    let answer = http::read_response(&mut BufReader::new(stream), &Limits::default());
    answer.map_err(|e| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Timeout,
        ErrorKind::InvalidData => Failure::BadAnswer,
        _ => Failure::Reset, // closed or reset before a whole answer
    })
}

// ANCHOR: naive
/// THE MISTAKE: any failure is taken to mean "that backend did nothing",
/// so the request goes to the next backend, until one answers.
fn naive_forward(pool: &Pool, request: &Request) -> Response {
    let mut tried = Vec::new();
    while let Some(lease) = pool.pick_except(&tried) {
        tried.push(lease.addr());
        match attempt(lease.addr(), request) {
            Ok(answer) => {
                lease.done(Outcome::Ok);
                return answer;
            }
            Err(failure) => {
                lease.done(failure.outcome());
            }
        }
    }
    failed(502, "Bad Gateway", "no backend answered")
}
// ANCHOR_END: naive

// ANCHOR: checked
/// The fix: after a failure, the final program's rule (`retry.rs`) says
/// whether the request may go elsewhere: always if nothing was sent; once
/// sent, only an idempotent method without a body. Otherwise the client
/// is told, and can check whether its order went through.
fn checked_forward(pool: &Pool, request: &Request) -> Response {
    let idempotent = retry::idempotent(&request.method);
    let has_body = !request.body.is_empty();
    let mut tried = Vec::new();
    while let Some(lease) = pool.pick_except(&tried) {
        tried.push(lease.addr());
        match attempt(lease.addr(), request) {
            Ok(answer) => {
                lease.done(Outcome::Ok);
                return answer;
            }
            Err(failure) => {
                lease.done(failure.outcome());
                if !retry::may_retry(failure, idempotent, has_body) {
                    let (status, reason) = failure.status();
                    return failed(status, reason, failure.describe());
                }
            }
        }
    }
    failed(502, "Bad Gateway", "no backend answered")
}
// ANCHOR_END: checked

/// An answer the balancer makes itself.
fn failed(status: u16, reason: &str, why: &str) -> Response {
    Response {
        status,
        reason: reason.to_owned(),
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: format!("{why}\n").into_bytes(),
    }
}

/// One of the two balancers.
type Forward = fn(&Pool, &Request) -> Response;

/// One client connection, one request. The body is read whole first, so
/// that it can be sent again (nginx buffers request bodies by default,
/// and can resend them for the same reason).
fn balancer(conn: Conn, pool: &Pool, forward: Forward) -> io::Result<()> {
    conn.set_idle_timeout(Some(IDLE))?;
    let (input, mut output) = conn.split()?;
    let Some(request) = http::read_request(&mut BufReader::new(input), &Limits::default())? else {
        return Ok(());
    };
    let answer = forward(pool, &request);
    let kind = http::header(&answer.headers, "content-type").unwrap_or("text/plain");
    let (status, reason) = (answer.status, &answer.reason);
    http::write_response(&mut output, status, reason, kind, &[], &answer.body)
}

/// A server on 127.0.0.1:0, on a thread of its own; stopped (and waited
/// for) when dropped.
struct Running {
    addr: SocketAddr,
    stop: Shutdown,
    thread: Option<std::thread::JoinHandle<io::Result<server::Report>>>,
}

impl Running {
    fn start(handler: impl Fn(Conn) + Send + Sync + 'static) -> io::Result<Running> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Shutdown::new();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            server::run(listener, &stopping, Config::default(), handler)
        });
        Ok(Running {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start_orders(
    name: &'static str,
    table: &Table,
    crash_first: bool,
) -> io::Result<(Running, Arc<Script>)> {
    let script = Arc::new(Script {
        crash_first: AtomicBool::new(crash_first),
        read: AtomicUsize::new(0),
    });
    let (table, scripted) = (table.clone(), script.clone());
    let running = Running::start(move |conn| {
        let _ = orders_backend(conn, name, &table, &scripted);
    })?;
    Ok((running, script))
}

/// A round-robin pool over `addrs`, in order: the first pick is the first.
fn start_balancer(addrs: &[SocketAddr], forward: Forward) -> io::Result<Running> {
    let configs = addrs.iter().map(|&addr| BackendConfig::new(addr)).collect();
    let clock = Arc::new(MonotonicClock::new());
    let pool = Pool::new(configs, PoolConfig::default(), clock);
    Running::start(move |conn| {
        let _ = balancer(conn, &pool, forward);
    })
}

/// One request on a connection of its own; the whole answer. Runs on the
/// main thread (may's sockets block the thread outside a coroutine).
fn send(addr: SocketAddr, method: &str, body: &[u8]) -> io::Result<Response> {
    let mut stream = may_patterns::net::connect(addr)?;
    stream.set_read_timeout(Some(IDLE))?;
    http::write_request(&mut stream, method, "/orders", "shop", &[], body)?;
    http::read_response(&mut BufReader::new(stream), &Limits::default())
}

/// What one client request saw: its answer, the table afterwards, and how
/// many requests `orders-a` and `orders-b` read.
struct Seen {
    answer: Response,
    orders: Vec<Order>,
    read: [usize; 2],
}

/// `orders-a` (first in the pool, crashes after its first request's work)
/// and `orders-b`, one table, a balancer over them; one request.
fn run(forward: Forward, method: &str, body: &[u8]) -> io::Result<Seen> {
    let table = Table::default();
    let (a, script_a) = start_orders("orders-a", &table, true)?;
    let (b, script_b) = start_orders("orders-b", &table, false)?;
    let front = start_balancer(&[a.addr, b.addr], forward)?;
    let answer = send(front.addr, method, body)?;
    let orders = table.lock().expect("not poisoned").clone();
    let read = [&script_a, &script_b].map(|s| s.read.load(Ordering::SeqCst));
    Ok(Seen {
        answer,
        orders,
        read,
    })
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body)
        .trim_end()
        .to_owned()
}

fn print(title: &str, seen: &Seen) {
    println!("{title}");
    let Response { status, reason, .. } = &seen.answer;
    let body = match http::header(&seen.answer.headers, "content-type") {
        Some("application/json") => text(&seen.answer),
        _ => format!("{:?}", text(&seen.answer)),
    };
    println!("  the client got: {status} {reason} {body}");
    let [a, b] = seen.read;
    println!("  requests read: orders-a {a}, orders-b {b}");
    let orders: Vec<String> = seen
        .orders
        .iter()
        .map(|o| format!("#{} {:?} by {}", o.id, o.item, o.by))
        .collect();
    let orders = match orders.is_empty() {
        true => "empty".to_owned(),
        false => orders.join(", "),
    };
    println!("  the orders table: {orders}");
}

// ANCHOR: demo
fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let order = b"1 lamp";
    println!("orders-a records the first order it gets, then crashes before it answers.");
    println!("One client sends POST /orders \"1 lamp\", once, through each balancer.");

    let naive = run(naive_forward, "POST", order).expect("the naive run");
    assert_eq!(naive.answer.status, 200);
    assert_eq!(naive.orders.len(), 2, "one POST, two orders");
    assert_eq!(naive.read, [1, 1]);
    print("a balancer that retries every failure:", &naive);

    let checked = run(checked_forward, "POST", order).expect("the checked run");
    assert_eq!(checked.answer.status, 502);
    assert_eq!(checked.orders.len(), 1, "one POST, one order");
    assert_eq!(checked.read, [1, 0], "not sent again");
    print("a balancer that asks may_retry:", &checked);

    let get = run(checked_forward, "GET", b"").expect("the GET run");
    assert_eq!(get.answer.status, 200);
    assert!(text(&get.answer).contains("orders-b"), "retried elsewhere");
    assert_eq!(get.read, [1, 1]);
    print("the same crash on a GET /orders, through the second:", &get);
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn the_naive_balancer_turns_one_post_into_two_orders() {
        configure_for_tests();
        let seen = run(naive_forward, "POST", b"1 lamp").unwrap();
        assert_eq!(seen.answer.status, 200, "the client is told all went well");
        assert_eq!(text(&seen.answer), r#"{"order":2,"by":"orders-b"}"#);
        let by: Vec<&str> = seen.orders.iter().map(|o| o.by).collect();
        assert_eq!(by, ["orders-a", "orders-b"]);
    }

    #[test]
    fn the_checked_balancer_records_one_order_and_answers_502() {
        configure_for_tests();
        let seen = run(checked_forward, "POST", b"1 lamp").unwrap();
        assert_eq!(seen.answer.status, 502);
        assert_eq!(text(&seen.answer), Failure::Reset.describe());
        assert_eq!(seen.orders.len(), 1);
        assert_eq!(seen.orders[0].by, "orders-a");
        assert_eq!(seen.read, [1, 0], "orders-b never saw it");
    }

    #[test]
    fn the_checked_balancer_retries_a_get_that_met_the_same_crash() {
        configure_for_tests();
        let seen = run(checked_forward, "GET", b"").unwrap();
        assert_eq!(seen.answer.status, 200);
        assert_eq!(text(&seen.answer), r#"{"orders":0,"by":"orders-b"}"#);
        assert_eq!(seen.read, [1, 1], "orders-a read it first");
    }

    #[test]
    fn the_checked_balancer_retries_a_post_that_was_never_sent() {
        configure_for_tests();
        // A port nothing listens on: the connect is refused, nothing is sent.
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = refusing.local_addr().unwrap();
        drop(refusing);
        let table = Table::default();
        let (b, script) = start_orders("orders-b", &table, false).unwrap();
        let front = start_balancer(&[dead, b.addr], checked_forward).unwrap();
        let answer = send(front.addr, "POST", b"1 lamp").unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(text(&answer), r#"{"order":1,"by":"orders-b"}"#);
        assert_eq!(table.lock().unwrap().len(), 1);
        assert_eq!(script.read.load(Ordering::SeqCst), 1);
    }
}
