//! Steps 3 and 4 forward plain HTTP to the IP address a URL names (names
//! are resolved from step 5 on). A step includes this file with
//! `#[path = "steps_ip_forward.rs"] mod steps_ip_forward;`.

use std::io::{self, BufRead, Write};

use may_patterns::http::RequestHead;

use crate::steps_ip_only::ip_target;
use crate::steps_pool::Pool;
use crate::steps_streaming::{forward, refuse, Failure, Io};

// ANCHOR: forward_ip
/// Forward one request and its answer, or refuse it; whether the client
/// connection can carry the next request.
pub fn forward_ip(
    head: RequestHead,
    client_in: &mut impl BufRead,
    client_out: &mut impl Write,
    buf: &mut [u8],
    pool: &Pool,
) -> io::Result<bool> {
    let (target, addr) = match ip_target(&head.target) {
        Ok(found) => found,
        Err((s, r, why)) => return refuse(client_out, Failure::Refuse(s, r, why)).map(|()| false),
    };
    let io = Io {
        client_in,
        client_out: &mut *client_out,
        buf,
    };
    match forward(head, &target, &[addr], io, pool) {
        Ok((keep_alive, ..)) => Ok(keep_alive),
        Err(failure) => refuse(client_out, failure).map(|()| false),
    }
}
// ANCHOR_END: forward_ip
