//! How steps 4-6 forward: every lease ends with its outcome, and a request
//! that failed before its answer began may go once more, to another
//! backend. A step includes this file with `#[path = "steps_retry.rs"] mod
//! steps_retry;` and passes `forward` to `steps_http::start_balancer`.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use may_patterns::balance::{Lease, Outcome, Pool};
use may_patterns::http::Framing;

use crate::steps_http::{exchange, refuse, relay, Request, COPY_BUFFER};

// ANCHOR: forward
/// Send the request to a backend and relay its answer. Every lease ends
/// with its outcome. A request that failed before its answer began goes
/// once more, to another backend, if sending it twice is safe: a `GET` or
/// `HEAD` without a body. Anything else gets a `502`.
pub fn forward(pool: &Pool, mut request: Request) -> io::Result<()> {
    let mut buf = vec![0; COPY_BUFFER];
    let idempotent = matches!(request.head.method.as_str(), "GET" | "HEAD");
    let attempts = if idempotent && request.framing == Framing::Empty {
        2
    } else {
        1
    };
    let mut failed: Option<(SocketAddr, io::Error)> = None;
    for _ in 0..attempts {
        let Some(lease) = pick_other(pool, failed.as_ref().map(|(addr, _)| *addr)) else {
            break;
        };
        match exchange(lease.addr(), &mut request, &mut buf) {
            Ok((backend, answer)) => {
                // HAProxy's `observe layer7`: a 5xx counts against the
                // backend. An error while relaying does not: it may be the
                // client's.
                let outcome = match answer.status {
                    500.. => Outcome::Error,
                    _ => Outcome::Ok,
                };
                let relayed = relay(backend, answer, &mut request, &mut buf);
                lease.done(outcome); // out of flight only now, for least-conn
                return relayed;
            }
            Err(e) => {
                let addr = lease.addr();
                lease.done(outcome_of(&e));
                failed = Some((addr, e));
            }
        }
    }
    let out = &mut request.client_out;
    match failed {
        Some((_, e)) => refuse(out, 502, "Bad Gateway", &e.to_string()),
        None => refuse(out, 503, "Service Unavailable", "no backend is up"),
    }
}

/// A timeout is a slow backend, anything else a failed one; both count
/// towards `fall`, and the stats tell them apart.
pub fn outcome_of(e: &io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

/// The pool's next pick, unless it is the backend that has just failed
/// this request (round-robin has moved past it already; least-connections
/// may pick it again): then the one after. `None` if no other is up.
fn pick_other(pool: &Pool, failed: Option<SocketAddr>) -> Option<Lease> {
    for _ in 0..pool.addrs().len() {
        let lease = pool.pick()?;
        if Some(lease.addr()) != failed {
            return Some(lease);
        }
    }
    None
}
// ANCHOR_END: forward
