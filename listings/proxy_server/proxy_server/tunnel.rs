//! A CONNECT tunnel: bytes copied both ways between the client and the
//! origin until both sides are done, through fixed heap buffers.
//!
//! The handler's coroutine copies client -> origin; a second coroutine
//! copies origin -> client. Each side's EOF is passed on as a half-close
//! (`shutdown(Write)`: the client's to the origin, the origin's to the
//! client with `WriteHalf::shutdown_write`) while the other direction
//! keeps copying, so a client that sends its whole request and then waits
//! (`nc -N`), or an origin that answers and then still listens, works. A
//! listener with TLS has no half-close: there the origin's EOF closes the
//! client whole. An error on either side closes both.
//!
//! Idle: each side's reads time out after `idle`; a direction that times
//! out ends the tunnel only if the other direction has not moved for as
//! long either, so a long download with a silent client lives on.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown as Dir;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine;
use may::net::TcpStream;
use may_patterns::server::{ReadHalf, WriteHalf};

/// Each direction's buffer.
const BUF: usize = 16 * 1024;
/// The origin -> client coroutine's stack, in words: a copy loop, its
/// buffer on the heap. `stack_tests.rs` measured it carrying 256 KiB at
/// 384 words (3 KiB) in a debug build and 179 words (1.4 KiB) in a release
/// one: this is over twice the debug figure, rounded up to a power of two.
pub const COPY_STACK_WORDS: usize = 1024;

/// The origin -> client coroutine's name (in may's reports).
pub const DOWN_NAME: &str = "tunnel-down";

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

/// When either direction last moved a byte, in ms since the tunnel began.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Run the tunnel between the client's halves (their idle timeout set
/// before the split, the `200` already written) and `origin`; `leftover`
/// is what the client sent after its CONNECT head, owed to the origin first.
/// The second coroutine gets `stack_words` ([`COPY_STACK_WORDS`]; an odd
/// number in the stack test, so may measures it).
pub fn run(
    mut client_in: ReadHalf,
    mut client_out: WriteHalf,
    origin: TcpStream,
    leftover: &[u8],
    idle: Duration,
    stack_words: usize,
) -> io::Result<Moved> {
    origin.set_read_timeout(Some(idle))?;
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut origin_out = origin.try_clone()?;
    let mut origin_in = origin;
    origin_out.write_all(leftover)?;

    let down = {
        let (activity, idle) = (activity.clone(), idle);
        // Safety: the closure uses no thread-local storage and holds no
        // std lock across a park (may's rules for `spawn`).
        unsafe {
            coroutine::Builder::new()
                .name(DOWN_NAME.into())
                .stack_size(stack_words)
                .spawn(move || {
                    let moved = copy(&mut origin_in, &mut client_out, &activity, idle);
                    match &moved {
                        // The origin finished sending: the client reads
                        // end-of-file and may still send.
                        Ok(_) if client_out.shutdown_write().is_ok() => {}
                        // Broken, or no half-close (TLS): the client's
                        // reads end with this too.
                        _ => client_out.close(),
                    }
                    moved
                })?
        }
    };
    let up = copy(&mut client_in, &mut origin_out, &activity, idle);
    match &up {
        // The client finished sending: pass the half-close on.
        Ok(_) => {
            let _ = origin_out.shutdown(Dir::Write);
        }
        // The client is gone: stop the other direction too.
        Err(_) => {
            let _ = origin_out.shutdown(Dir::Both);
        }
    }
    let down = down
        .join()
        .map_err(|_| io::Error::other("the tunnel's copy coroutine panicked"))?;
    Ok(Moved {
        up: up.unwrap_or(0),
        down: down.unwrap_or(0),
    })
}

/// Copy until EOF; a read timeout ends it only when both ways were idle.
fn copy(
    from: &mut impl Read,
    to: &mut impl Write,
    activity: &Activity,
    idle: Duration,
) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if is_timeout(&e) && activity.idle_for() < idle => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_moves_everything_and_counts_it() {
        let activity = Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let data = vec![7u8; 3 * BUF + 5];
        let mut out = Vec::new();
        let n = copy(&mut &data[..], &mut out, &activity, Duration::from_secs(1)).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
    }

    #[test]
    fn timeouts_are_recognised() {
        assert!(is_timeout(&io::Error::from(ErrorKind::TimedOut)));
        assert!(!is_timeout(&io::Error::from(ErrorKind::BrokenPipe)));
    }
}
