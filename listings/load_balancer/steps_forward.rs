//! How steps 1-3 forward: one backend, one try. A step includes this file
//! with `#[path = "steps_forward.rs"] mod steps_forward;` and passes
//! `forward` to `steps_http::start_balancer`.

use std::io;

use may_patterns::balance::Pool;

use crate::steps_http::{exchange, refuse, relay, Request, COPY_BUFFER};

// ANCHOR: forward
/// Pick a backend, send it the request, stream its answer back. A failure
/// before the answer has begun is a `502`; after that the client sees the
/// connection close.
pub fn forward(pool: &Pool, mut request: Request) -> io::Result<()> {
    let Some(lease) = pool.pick() else {
        let why = "no backend is up";
        return refuse(&mut request.client_out, 503, "Service Unavailable", why);
    };
    let mut buf = vec![0; COPY_BUFFER];
    match exchange(lease.addr(), &mut request, &mut buf) {
        Ok((backend, answer)) => relay(backend, answer, &mut request, &mut buf),
        Err(e) => refuse(&mut request.client_out, 502, "Bad Gateway", &e.to_string()),
    }
    // `lease` drops here: the request is no longer in flight.
}
// ANCHOR_END: forward
