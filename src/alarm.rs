//! Timed waits kept by one OS thread, for code that waits many short times
//! a second: no may timer is involved.
//!
//! may 0.3.51 arms a timer first and finishes registering the wait after,
//! and a timer that fires in between finds the wait half made:
//!
//! - a socket timeout: `add_io_timer` puts the timer in the list, wakes the
//!   event loop if it is the earliest, and only then stores its handle in
//!   the socket's data (`src/io/sys/unix/epoll.rs:238-249`). A timer that
//!   fires before the handle is stored leaves the socket holding a handle to
//!   a spent entry, and the next event on that socket panics the event loop
//!   ("Node value is None", `may_queue-0.1.24/src/mpsc_list_v1.rs:44`); the
//!   process then hangs.
//! - a coroutine sleep: `Sleep::subscribe` hands the coroutine to the timer
//!   list, then registers its cancel data (`src/sleep.rs:17-29`). A timer
//!   that fires in between runs the coroutine on the timer thread while its
//!   old worker still writes to it (the heap corruption of the book's
//!   Pitfalls reference, "Known may 0.3.51 bugs").
//!
//! Either needs the worker thread to be held off its CPU for the whole
//! timeout between two of its own statements. On an idle machine that does
//! not happen; on two busy cores, with waits of a few milliseconds, it does:
//! in the circuit-breaker program (200 calls a second, each with a 2 ms
//! backend wait) the event loop panicked in 3 of 6 runs at a load average
//! of 5, and in none of 6 once the backend waited on an alarm instead.
//! [`Alarm`] keeps such waits on its own OS thread: a coroutine parks on a
//! one-shot channel with no timeout (the crate's own: a may mpsc channel
//! per wait would cost about 3 KiB), and the alarm thread sends to it when
//! the time comes; a socket's wait ends by the alarm thread shutting the
//! socket's reading side. Long timeouts (a quarter second and
//! more) are left to may: the window is the same, but a thread is almost
//! never held off its CPU that long.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::oneshot;

/// What the alarm thread does when an entry is due.
enum Action {
    /// Wake a coroutine parked on this channel.
    Wake(oneshot::Sender<()>),
    /// Shut down the reading side of this socket (a duplicate descriptor of
    /// the watched one), after marking the ring as fired.
    ShutdownRead(std::net::TcpStream, Arc<AtomicBool>),
    /// Run this closure on the alarm thread.
    Call(Box<dyn FnOnce() + Send>),
}

enum Message {
    Add {
        due: Instant,
        id: u64,
        action: Action,
    },
    Cancel(u64),
}

/// One OS thread keeping timed waits for coroutines. Share it (`&Alarm` is
/// enough: it is `Sync`); the thread ends when the alarm and every [`Ring`]
/// are dropped.
pub struct Alarm {
    tx: mpsc::Sender<Message>,
    next_id: AtomicU64,
}

/// A pending [`Alarm::shutdown_read_at`]; dropping it cancels the alarm.
pub struct Ring {
    fired: Arc<AtomicBool>,
    id: u64,
    tx: mpsc::Sender<Message>,
}

/// One alarm for the whole process, started on first use: for library code
/// that waits now and then and has no alarm of its own to be handed (the
/// rate limiter's `acquire`). Panics only if the OS refuses a thread.
pub fn shared() -> &'static Alarm {
    static SHARED: OnceLock<Alarm> = OnceLock::new();
    SHARED.get_or_init(|| Alarm::new().expect("the OS starts the alarm thread"))
}

impl Alarm {
    /// Start the alarm thread.
    pub fn new() -> io::Result<Alarm> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("alarm".into())
            .spawn(move || keep(rx))?;
        Ok(Alarm {
            tx,
            next_id: AtomicU64::new(0),
        })
    }

    fn add(&self, due: Instant, action: Action) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A send fails only if the thread is gone; the caller then finds
        // out at once (its channel disconnects, its ring never fires).
        let _ = self.tx.send(Message::Add { due, id, action });
        id
    }

    /// Park the calling coroutine (or thread) for `duration`, never less.
    /// Any length works, a microsecond included: may's 1 ms floor is a
    /// floor of its timers, and none is used here.
    pub fn sleep(&self, duration: Duration) {
        let (tx, rx) = oneshot::channel();
        self.add(Instant::now() + duration, Action::Wake(tx));
        let _ = rx.recv(); // no timeout: no may timer
    }

    /// At `at`, shut down the reading side of `socket`: a read parked on
    /// it (with no read timeout) returns end-of-file, and the ring says it
    /// was the alarm, not the peer.
    pub fn shutdown_read_at(&self, socket: &impl AsRawFd, at: Instant) -> io::Result<Ring> {
        // Safety: `socket` is borrowed, so its descriptor is open while we
        // duplicate it; the duplicate is ours to close.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) }.try_clone_to_owned()?;
        let fired = Arc::new(AtomicBool::new(false));
        let action = Action::ShutdownRead(std::net::TcpStream::from(fd), fired.clone());
        let id = self.add(at, action);
        Ok(Ring {
            fired,
            id,
            tx: self.tx.clone(),
        })
    }

    /// At `at`, run `f` on the alarm thread, unless the returned [`Call`]
    /// was dropped first. For a coroutine that waits on a channel for other
    /// things too: `f` sends it a message (the reactive time operators send
    /// their tick this way), so it waits on one channel and misses nothing.
    /// `f` must be short, a channel send: every other alarm of the process
    /// waits while it runs. A panic in `f` is caught and dropped, so the
    /// alarm keeps working for everyone else.
    pub fn call_at(&self, at: Instant, f: impl FnOnce() + Send + 'static) -> Call {
        let id = self.add(at, Action::Call(Box::new(f)));
        Call {
            id,
            tx: self.tx.clone(),
        }
    }
}

/// A pending [`Alarm::call_at`]; dropping it cancels the call if it has
/// not run yet.
pub struct Call {
    id: u64,
    tx: mpsc::Sender<Message>,
}

impl Drop for Call {
    fn drop(&mut self) {
        // If the call already ran, the alarm finds nothing to cancel.
        let _ = self.tx.send(Message::Cancel(self.id));
    }
}

impl Ring {
    /// Whether the alarm went off (the socket's reading side is shut).
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.fired() {
            let _ = self.tx.send(Message::Cancel(self.id));
        }
    }
}

/// The alarm thread: wait for the earliest entry or a new message.
fn keep(rx: mpsc::Receiver<Message>) {
    let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut actions = HashMap::new();
    loop {
        let mut message = match due.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse((at, _))) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        // Take every message already queued before firing anything, so a
        // cancel sent before its entry fell due is honoured even when this
        // thread was held off its CPU past that time.
        loop {
            match message {
                Ok(Message::Add {
                    due: at,
                    id,
                    action,
                }) => {
                    due.push(Reverse((at, id)));
                    actions.insert(id, action);
                }
                Ok(Message::Cancel(id)) => {
                    actions.remove(&id); // its heap entry finds nothing when due
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            message = rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
        let now = Instant::now();
        while let Some(&Reverse((at, id))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            match actions.remove(&id) {
                Some(Action::Wake(tx)) => tx.send(()),
                Some(Action::ShutdownRead(socket, fired)) => {
                    fired.store(true, Ordering::SeqCst); // before the reader sees end-of-file
                    let _ = socket.shutdown(std::net::Shutdown::Read);
                }
                Some(Action::Call(f)) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                }
                None => {} // cancelled
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::configure_for_tests;
    use may::go;
    use std::io::{Read, Write};

    #[test]
    fn a_sleep_lasts_at_least_its_time_even_under_a_millisecond() {
        configure_for_tests();
        let alarm = Arc::new(Alarm::new().unwrap());
        let handles: Vec<_> = [Duration::from_micros(300), Duration::from_millis(20)]
            .into_iter()
            .map(|d| {
                let alarm = alarm.clone();
                go!(move || {
                    let started = Instant::now();
                    alarm.sleep(d);
                    (d, started.elapsed())
                })
            })
            .collect();
        for handle in handles {
            let (asked, slept) = handle.join().unwrap();
            assert!(slept >= asked, "{slept:?} < {asked:?}");
            assert!(slept < asked + Duration::from_secs(1), "{slept:?}");
        }
    }

    #[test]
    fn the_shared_alarm_is_one_alarm_and_keeps_time() {
        configure_for_tests();
        assert!(std::ptr::eq(shared(), shared()));
        let started = Instant::now();
        go!(|| shared().sleep(Duration::from_millis(5)))
            .join()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn a_call_runs_at_its_time_and_a_dropped_one_never_runs() {
        configure_for_tests();
        let alarm = Alarm::new().unwrap();
        let (tx, rx) = may::sync::mpsc::channel();
        let started = Instant::now();
        let late = tx.clone();
        let dropped = alarm.call_at(started + Duration::from_millis(5), move || {
            late.send("dropped").unwrap()
        });
        drop(dropped);
        let _panics = alarm.call_at(started, || panic!("caught on the alarm thread"));
        let _kept = alarm.call_at(started + Duration::from_millis(20), move || {
            tx.send("kept").unwrap()
        });
        // The dropped call's sender went with it, so after "kept" the
        // channel is empty and disconnected.
        assert_eq!(rx.recv().unwrap(), "kept");
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(rx.recv().is_err(), "the dropped call never ran");
    }

    #[test]
    fn a_ring_ends_a_parked_read_and_a_dropped_one_never_fires() {
        configure_for_tests();
        let alarm = Arc::new(Alarm::new().unwrap());
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let reader = {
            let alarm = alarm.clone();
            go!(move || {
                let ring = alarm
                    .shutdown_read_at(&server, Instant::now() + Duration::from_millis(20))
                    .unwrap();
                let mut byte = [0u8; 1];
                let read = server.read(&mut byte).unwrap();
                // The stream can still answer after its reading side is shut.
                server.write_all(b"late").unwrap();
                (read, ring.fired())
            })
        };
        assert_eq!(reader.join().unwrap(), (0, true));
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "late");
        let mut other = std::net::TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let ring = alarm
            .shutdown_read_at(&server, Instant::now() + Duration::from_millis(5))
            .unwrap();
        drop(ring);
        alarm.sleep(Duration::from_millis(30));
        other.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            server.read(&mut byte).unwrap(),
            1,
            "a cancelled ring leaves the socket open"
        );
    }
}
