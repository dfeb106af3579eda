//! Four ways to stop a coroutine that is blocked reading a socket, measured.
//!
//! Each case starts a coroutine that reads from a peer that never answers,
//! asks it to stop 20 ms later (the deadline case instead sets a read
//! timeout of 20 ms up front), and reports how long the coroutine took to
//! end after that moment, how it ended, and whether the values it held were
//! dropped.
//!
//! Run it: `cargo run --example cancel_compared`

use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::go;
use may::net::{TcpListener, TcpStream};
use may_patterns::runtime::{configure_once, Settings};

/// When the stop is asked for, after the reader has parked in `read`.
const STOP_AFTER: Duration = Duration::from_millis(20);
/// How often the flag-polling reader wakes up to look at its flag.
const POLL_SLICE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mechanism {
    Flag,
    SocketShutdown,
    CoroutineCancel,
    ReadTimeout,
}

/// What one case measured.
#[derive(Debug)]
struct Outcome {
    /// From the moment the stop was asked for to the end of the coroutine.
    late_by: Duration,
    /// How the coroutine ended, as its own code (or its join) saw it.
    ended: String,
    /// Whether the value the coroutine held across the read was dropped.
    dropped: bool,
}

/// Sets its flag when dropped: did the coroutine's values get cleaned up?
struct Held(Arc<AtomicBool>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ANCHOR: reader
/// Read until the peer speaks (it never does) or the socket fails. With a
/// `flag`, a timed-out read is a moment to look at it; without, it ends the
/// loop. Returns how the loop ended.
fn read_until_stopped(mut stream: TcpStream, flag: Option<&AtomicBool>, held: Held) -> String {
    let _held = held; // lives across every read, like a real call's state
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return "read returned end of stream".into(),
            Ok(_) => return "read data".into(),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => match flag
            {
                Some(flag) if flag.load(Ordering::SeqCst) => {
                    return "saw the flag after a timed-out read".into()
                }
                Some(_) => continue,
                None => return "read timed out".into(),
            },
            Err(e) => return format!("read failed: {e}"),
        }
    }
}
// ANCHOR_END: reader

// ANCHOR: stop
/// Run one case against `peer`, a listener whose connections never answer.
fn measure(mechanism: Mechanism, peer: &TcpListener) -> Outcome {
    let stream = may_patterns::net::connect(peer.local_addr().unwrap()).unwrap();
    let _server_side = peer.accept().unwrap(); // held open, never written to
    let handle_for_stop = stream.try_clone().unwrap();
    match mechanism {
        Mechanism::Flag => stream.set_read_timeout(Some(POLL_SLICE)).unwrap(),
        Mechanism::ReadTimeout => stream.set_read_timeout(Some(STOP_AFTER)).unwrap(),
        Mechanism::SocketShutdown | Mechanism::CoroutineCancel => {}
    }
    let (stop, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let reader = {
        let (stop, held) = (stop.clone(), Held(dropped.clone()));
        let polls_flag = mechanism == Mechanism::Flag;
        go!(move || read_until_stopped(stream, polls_flag.then_some(&*stop), held))
    };
    let started = Instant::now();
    may::coroutine::sleep(STOP_AFTER);
    let asked = Instant::now();
    match mechanism {
        Mechanism::Flag => stop.store(true, Ordering::SeqCst),
        Mechanism::SocketShutdown => handle_for_stop.shutdown(Shutdown::Both).unwrap(),
        // SAFETY: the reader holds no lock and nothing another coroutine
        // waits on; unwinding it drops what it holds, which is what we want.
        Mechanism::CoroutineCancel => unsafe { reader.coroutine().cancel() },
        Mechanism::ReadTimeout => {} // the timeout set up front fires by itself
    }
    let ended = match reader.join() {
        Ok(how) => how,
        Err(_) => "unwound (join returned Err)".into(),
    };
    let from = if mechanism == Mechanism::ReadTimeout {
        started + STOP_AFTER
    } else {
        asked
    };
    Outcome {
        late_by: from.elapsed(),
        ended,
        dropped: dropped.load(Ordering::SeqCst),
    }
}
// ANCHOR_END: stop

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    for mechanism in [
        Mechanism::Flag,
        Mechanism::SocketShutdown,
        Mechanism::CoroutineCancel,
        Mechanism::ReadTimeout,
    ] {
        let outcome = measure(mechanism, &peer);
        println!(
            "{:<16} ended {:.1?} after the stop: {}; held values dropped: {}",
            format!("{mechanism:?}"),
            outcome.late_by,
            outcome.ended,
            outcome.dropped
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// Generous against a busy CI machine, far below the flag's slice.
    const PROMPT: Duration = Duration::from_millis(15);

    fn run(mechanism: Mechanism) -> Outcome {
        configure_for_tests();
        let peer = TcpListener::bind("127.0.0.1:0").unwrap();
        measure(mechanism, &peer)
    }

    #[test]
    fn a_flag_is_seen_only_when_the_read_times_out() {
        let outcome = run(Mechanism::Flag);
        assert_eq!(outcome.ended, "saw the flag after a timed-out read");
        assert!(outcome.late_by >= POLL_SLICE - STOP_AFTER - Duration::from_millis(2));
        assert!(outcome.dropped);
    }

    #[test]
    fn shutting_the_socket_down_ends_the_read_at_once_without_unwinding() {
        let outcome = run(Mechanism::SocketShutdown);
        assert_eq!(outcome.ended, "read returned end of stream");
        assert!(outcome.late_by < PROMPT, "{outcome:?}");
        assert!(outcome.dropped);
    }

    #[test]
    fn cancel_wakes_a_coroutine_parked_in_read_at_once_and_unwinds_it() {
        let outcome = run(Mechanism::CoroutineCancel);
        assert_eq!(outcome.ended, "unwound (join returned Err)");
        assert!(outcome.late_by < PROMPT, "{outcome:?}");
        assert!(outcome.dropped, "unwinding runs destructors");
    }

    /// The chapter's claim beyond sockets: a coroutine parked on a channel
    /// or in a sleep is woken by `cancel` at once too, and unwinds.
    #[test]
    fn cancel_wakes_a_coroutine_parked_on_a_channel_or_a_timer_at_once() {
        configure_for_tests();
        let (_tx, rx) = may::sync::mpsc::channel::<u8>();
        let parked_on_recv = go!(move || rx.recv().is_ok());
        let parked_in_sleep = go!(|| may::coroutine::sleep(Duration::from_secs(60)));
        may::coroutine::sleep(STOP_AFTER);
        let asked = Instant::now();
        // SAFETY: neither coroutine holds anything another one waits on.
        unsafe {
            parked_on_recv.coroutine().cancel();
            parked_in_sleep.coroutine().cancel();
        }
        assert!(
            parked_on_recv.join().is_err(),
            "unwound, not woken by a message"
        );
        assert!(parked_in_sleep.join().is_err(), "unwound, not after 60 s");
        assert!(asked.elapsed() < PROMPT, "{:?}", asked.elapsed());
    }

    #[test]
    fn a_read_timeout_ends_the_read_when_it_fires() {
        let outcome = run(Mechanism::ReadTimeout);
        assert_eq!(outcome.ended, "read timed out");
        assert!(outcome.late_by < PROMPT, "{outcome:?}");
        assert!(outcome.dropped);
    }
}
