//! One client's outgoing queue, bounded in bytes (IRC's "sendq"), and the
//! two traits a transport implements to carry lines.
//!
//! The router and the broadcast stage push lines and never wait: a client
//! that does not read must not slow anyone else. Its queue grows instead,
//! and when it passes `--sendq` bytes the client is cut ("SendQ exceeded")
//! and its socket is shut at once, which also frees a writer parked in a
//! write to it. The writer coroutine (connection.rs) takes everything
//! queued at each wake-up, so a burst of lines leaves in one write.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use may::sync::Semphore;

/// One IRC line WITHOUT its CRLF; shared by every outbox a fan-out reaches.
pub type Line = Arc<str>;

/// A connection's number, unique in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// Bytes a line costs in the sendq: the line and its CRLF.
fn cost(line: &str) -> usize {
    line.len() + 2
}

// ANCHOR: outbox
/// The sending side of one client's queue; clones share it.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    id: ClientId,
    sendq: usize,
    queued: AtomicUsize,
    state: Mutex<State>,
    /// Posted once per push or close: the writer parks on it.
    wake: Semphore,
    /// Shuts the client's socket (both directions): a cut must not wait
    /// for a writer parked in a write to a client that stopped reading.
    shut: Box<dyn Fn() + Send + Sync>,
    server_time: AtomicBool,
    registered: AtomicBool,
}

#[derive(Default)]
struct State {
    lines: VecDeque<Line>,
    /// Set by the first close: why, and whether the writer should still
    /// send what is queued (a QUIT's ERROR line) or drop it (a cut).
    closed: Option<Closing>,
}

struct Closing {
    reason: String,
    last: Option<Line>,
    flush: bool,
}

/// The line was not queued: the client passed its sendq and is cut.
#[derive(Debug)]
pub struct SendQExceeded;

impl Outbox {
    /// A queue of at most `sendq` bytes for client `id`; `shut` closes its
    /// socket. Returns the writer's end.
    pub fn new(
        id: ClientId,
        sendq: usize,
        shut: impl Fn() + Send + Sync + 'static,
    ) -> (Outbox, Drain) {
        let inner = Arc::new(Inner {
            id,
            sendq,
            queued: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
            wake: Semphore::new(0),
            shut: Box::new(shut),
            server_time: AtomicBool::new(false),
            registered: AtomicBool::new(false),
        });
        (
            Outbox {
                inner: inner.clone(),
            },
            Drain { inner },
        )
    }

    pub fn id(&self) -> ClientId {
        self.inner.id
    }

    /// Queue a line. Never blocks: the lock is held for a queue push, a
    /// few hundred nanoseconds, with no park inside. Past the sendq the
    /// line is dropped, the client is cut, and this and later pushes fail.
    pub fn push(&self, line: Line) -> Result<(), SendQExceeded> {
        let mut state = self.inner.lock();
        if state.closed.is_some() {
            return Err(SendQExceeded);
        }
        let queued = self.inner.queued.load(Ordering::Relaxed) + cost(&line);
        if queued > self.inner.sendq {
            drop(state);
            self.cut("SendQ exceeded");
            return Err(SendQExceeded);
        }
        self.inner.queued.store(queued, Ordering::Relaxed);
        state.lines.push_back(line);
        drop(state);
        self.inner.wake.post();
        Ok(())
    }
    // ANCHOR_END: outbox

    /// Send `last` (e.g. "ERROR :Closing link: ...") after what is queued,
    /// then close. The first close's reason is the one kept.
    pub fn close_with(&self, last: Option<Line>, reason: &str) {
        self.close(reason, last, true);
    }

    /// Close now, dropping what is queued, and shut the socket (the client
    /// is not reading: waiting for the writer would wait for it).
    pub fn cut(&self, reason: &str) {
        if self.close(reason, None, false) {
            (self.inner.shut)();
        }
    }

    /// Shut the socket now, whatever the outbox's state (the sweeper, when
    /// a closing writer has not finished in time).
    pub fn shut(&self) {
        (self.inner.shut)();
    }

    /// True when this call closed the outbox.
    fn close(&self, reason: &str, last: Option<Line>, flush: bool) -> bool {
        let mut state = self.inner.lock();
        if state.closed.is_some() {
            return false;
        }
        state.closed = Some(Closing {
            reason: reason.to_owned(),
            last,
            flush,
        });
        drop(state);
        self.inner.wake.post();
        true
    }

    pub fn close_reason(&self) -> Option<String> {
        let state = self.inner.lock();
        state.closed.as_ref().map(|c| c.reason.clone())
    }

    /// Bytes queued and not yet written (CRLFs included); for tests.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// The client negotiated IRCv3 `server-time`: room lines get `@time=`.
    pub fn set_server_time(&self, on: bool) {
        self.inner.server_time.store(on, Ordering::Relaxed);
    }

    pub fn wants_server_time(&self) -> bool {
        self.inner.server_time.load(Ordering::Relaxed)
    }

    /// The router calls this when it sends 001: the registration timeout
    /// (connection.rs) no longer applies.
    pub fn set_registered(&self) {
        self.inner.registered.store(true, Ordering::Relaxed);
    }

    pub fn is_registered(&self) -> bool {
        self.inner.registered.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// A poisoned lock only means a pusher panicked mid-push; the queue is
    /// still a queue.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// ANCHOR: drain
/// The writer's end of an outbox.
pub struct Drain {
    inner: Arc<Inner>,
}

/// What the writer does next.
pub enum Batch {
    /// Write these lines (everything queued), then call `written`.
    Lines(Vec<Line>),
    /// Write these last lines (possibly none), then close the socket.
    Last(Vec<Line>),
}

impl Drain {
    /// Park until there is something to do, then take all of it.
    pub fn next(&self) -> Batch {
        loop {
            self.inner.wake.wait();
            let mut state = self.inner.lock();
            let State { lines, closed } = &mut *state;
            if let Some(closing) = closed {
                let mut last = Vec::new();
                if closing.flush {
                    last.extend(lines.drain(..));
                    last.extend(closing.last.take());
                }
                return Batch::Last(last);
            }
            if !state.lines.is_empty() {
                return Batch::Lines(mem::take(&mut state.lines).into());
            }
            // A post for lines an earlier wake-up already took.
        }
    }

    /// `lines` reached the socket: their bytes leave the sendq.
    pub fn written(&self, lines: &[Line]) {
        let bytes: usize = lines.iter().map(|l| cost(l)).sum();
        self.inner.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The write failed: close with `reason` (unless closed already).
    pub fn failed(&self, reason: &str) {
        Outbox {
            inner: self.inner.clone(),
        }
        .cut(reason);
    }
}
// ANCHOR_END: drain

/// Where the writer puts lines: plain/TLS add CRLF and write many lines in
/// one write; WebSocket sends one text frame per line.
pub trait LineSink: Send {
    fn write_lines(&mut self, lines: &[Line]) -> io::Result<()>;
    fn close(&mut self);
}

/// Where the reader gets lines from (plain/TLS: a bounded CRLF/LF reader;
/// WebSocket: frames).
pub trait LineSource: Send {
    /// `Ok(None)`: a clean end of stream.
    fn next_line(&mut self) -> io::Result<Option<Incoming>>;
}

/// One line from a client, or why there is none.
pub enum Incoming {
    Line(String),
    /// Longer than irc::MAX_LINE; the rest of it was skipped.
    TooLong,
    NotUtf8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(sendq: usize) -> (Outbox, Drain, Arc<AtomicBool>) {
        let shut = Arc::new(AtomicBool::new(false));
        let flag = shut.clone();
        let (outbox, drain) = Outbox::new(ClientId(1), sendq, move || {
            flag.store(true, Ordering::SeqCst)
        });
        (outbox, drain, shut)
    }

    fn line(s: &str) -> Line {
        Arc::from(s)
    }

    #[test]
    fn everything_queued_leaves_in_one_batch() {
        let (outbox, drain, _) = outbox(1000);
        for i in 0..5 {
            outbox.push(line(&format!("PRIVMSG #a :{i}"))).unwrap();
        }
        assert_eq!(outbox.queued_bytes(), 5 * 15, "13 bytes and a CRLF each");
        let Batch::Lines(lines) = drain.next() else {
            panic!("lines")
        };
        assert_eq!(lines.len(), 5);
        drain.written(&lines);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn passing_the_sendq_cuts_the_client_and_shuts_its_socket() {
        let (outbox, drain, shut) = outbox(40);
        outbox.push(line(&"x".repeat(18))).unwrap(); // 20 bytes
        outbox.push(line(&"x".repeat(18))).unwrap(); // 40: exactly full
        assert!(outbox.push(line("y")).is_err(), "41 bytes > 40");
        assert!(shut.load(Ordering::SeqCst), "the socket is shut at once");
        assert_eq!(outbox.close_reason().as_deref(), Some("SendQ exceeded"));
        assert!(outbox.push(line("z")).is_err(), "later pushes fail too");
        // A cut drops what is queued: the client was not reading it.
        let Batch::Last(last) = drain.next() else {
            panic!("last")
        };
        assert!(last.is_empty());
    }

    #[test]
    fn close_with_sends_the_queue_then_the_last_line() {
        let (outbox, drain, shut) = outbox(1000);
        outbox.push(line("a")).unwrap();
        outbox.close_with(Some(line("ERROR :bye")), "Quit: bye");
        outbox.close_with(None, "a second reason is ignored");
        let Batch::Last(last) = drain.next() else {
            panic!("last")
        };
        assert_eq!(last, vec![line("a"), line("ERROR :bye")]);
        assert!(
            !shut.load(Ordering::SeqCst),
            "the writer closes after writing"
        );
        assert_eq!(outbox.close_reason().as_deref(), Some("Quit: bye"));
    }
}
