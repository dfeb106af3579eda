//! `CONNECT` tunnels, from step 4 on: two copy loops, one per direction,
//! and a half-close passed on. A step includes this file with
//! `#[path = "steps_tunnel.rs"] mod steps_tunnel;`.

use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpStream;
use may_patterns::server::{ReadHalf, WriteHalf};

use crate::steps_common::BUF;
use crate::steps_request::IDLE;

// ANCHOR: tunnel
/// Answer a `CONNECT` whose origin is connected: say `200`, then run the
/// tunnel on this connection; the bytes that came back. Whatever the
/// client sent right behind its head is already in `client_in`'s buffer:
/// it is the tunnel's first bytes.
pub fn open_tunnel(
    origin: TcpStream,
    client_in: BufReader<ReadHalf>,
    mut client_out: BufWriter<WriteHalf>,
) -> io::Result<u64> {
    client_out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let client_out = client_out.into_inner().map_err(|e| e.into_error())?;
    let leftover = client_in.buffer().to_vec();
    tunnel(client_in.into_inner(), client_out, origin, &leftover)
}

/// Copy both ways until both sides are done: client to origin here, origin
/// to client on a second coroutine. The client's end of stream becomes the
/// origin's (`shutdown(Write)`), and the origin's answer still flows back.
/// The bytes that came back.
fn tunnel(
    mut client_in: ReadHalf,
    mut client_out: WriteHalf,
    origin: TcpStream,
    leftover: &[u8],
) -> io::Result<u64> {
    origin.set_read_timeout(Some(IDLE))?;
    let mut origin_out = origin.try_clone()?;
    origin_out.write_all(leftover)?;
    let mut origin_in = origin;
    let activity = Arc::new(Activity::new());
    let down = {
        let activity = activity.clone();
        go!(move || {
            let moved = pipe(&mut origin_in, &mut client_out, &activity);
            // Nothing more will come for the client. The server layer's
            // halves close whole (no half-close): the client has said all
            // it had to by the time a request-and-answer origin closes.
            client_out.close();
            moved
        })
    };
    let up = pipe(&mut client_in, &mut origin_out, &activity);
    // The client has finished sending: pass that on, and keep reading the
    // answer. If it broke off instead, stop the other direction too.
    let how = if up.is_ok() {
        Shutdown::Write
    } else {
        Shutdown::Both
    };
    let _ = origin_out.shutdown(how);
    let down = down
        .join()
        .map_err(|_| io::Error::other("the tunnel's second coroutine panicked"))?;
    up.and(down)
}

/// Copy `from` to `to` until end of stream, through a heap buffer. A read
/// that times out ends the copy only if the other direction has been
/// silent as long: a download to a client that sends nothing lives on.
fn pipe(from: &mut impl Read, to: &mut impl Write, activity: &Activity) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if is_timeout(&e) && activity.idle_for() < IDLE => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

/// When either direction of a tunnel last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}
// ANCHOR_END: tunnel
