//! Known may 0.3.51 bug: a coroutine's timeout is cut to whole
//! milliseconds, so one shorter than 1 ms is no timeout at all, and a longer
//! one fires early by its fraction of a millisecond.
//!
//! may keeps a parked coroutine's timeout, and a socket's read and write
//! timeouts, as whole milliseconds (`AtomicDuration` stores
//! `Duration::as_millis()`, src/sync/atomic_dur.rs:9-35), and 0 there means
//! "none" (:20-25). So `recv_timeout(500µs)` in a coroutine waits until a
//! message comes, and a 500 µs read timeout waits until the peer sends or
//! closes. A 1.9 ms read timeout, `mpmc` receive or semaphore wait gives up
//! after 1 ms. may's `mpsc` ends late instead: short of its deadline, it
//! waits the whole cut timeout again (src/sync/mpsc.rs:214-230), so a
//! 10.9 ms `recv_timeout` lasts 20 ms. A deadline loop that waits for
//! `deadline - now` meets all of these.
//!
//! Each case below gives up its wait only when `RESCUE` later something
//! arrives (a message, or the peer closing), so a wait that ignores its
//! timeout shows as "waited for the rescue" instead of hanging.
//!
//! Run it: `cargo run --example pitfall_sub_ms_timeout`.

use std::io::Read;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use may::go;
use may::net::TcpListener;
use may_patterns::bounded;
use may_patterns::runtime::{configure_once, Settings};

/// When the rescue comes: far longer than any of the timeouts tried.
const RESCUE: Duration = Duration::from_millis(300);

/// The timeouts tried: under a millisecond, exactly one, and two with a
/// fraction that may cuts off.
const SHORT: Duration = Duration::from_micros(500);
const ONE_MS: Duration = Duration::from_millis(1);
const FRACTION: Duration = Duration::from_micros(1_900);
const LONGER_FRACTION: Duration = Duration::from_micros(10_900);

/// A wait that ends this much after its timeout is reported as late: far
/// more than a timer is late, even on a busy machine, at the median of
/// `TRIES` waits.
const LATE_BY: Duration = Duration::from_millis(5);

/// How a timed wait ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The timeout fired.
    TimedOut,
    /// The timeout did not fire: the wait lasted until the rescue.
    Rescued,
}

// ANCHOR: cases
/// One way of waiting: given a timeout, how the wait ended and how long it took.
type Case = fn(Duration) -> (Ended, Duration);

/// Time `wait`, which returns `true` if its timeout fired.
fn timed(wait: impl FnOnce() -> bool) -> (Ended, Duration) {
    let started = Instant::now();
    let ended = if wait() {
        Ended::TimedOut
    } else {
        Ended::Rescued
    };
    (ended, started.elapsed())
}

/// In a coroutine, time `wait` while another coroutine runs `rescue` after
/// `RESCUE`, unless the wait ended first; join both.
fn in_coroutine(
    wait: impl FnOnce() -> bool + Send + 'static,
    rescue: impl FnOnce() + Send + 'static,
) -> (Ended, Duration) {
    go!(move || {
        let (ended, wait_ended) = may::sync::mpsc::channel::<()>();
        let rescuer = go!(move || {
            // RESCUE is whole milliseconds, which may keeps.
            if wait_ended.recv_timeout(RESCUE) == Err(RecvTimeoutError::Timeout) {
                rescue();
            }
        });
        let result = timed(wait);
        let _ = ended.send(()); // the rescuer may be gone: it rescued
        rescuer.join().unwrap();
        result
    })
    .join()
    .unwrap()
}

/// `recv_timeout(timeout)` on may's own `mpsc` channel, from a coroutine.
fn may_channel_in_coroutine(timeout: Duration) -> (Ended, Duration) {
    let (tx, rx) = may::sync::mpsc::channel::<()>();
    in_coroutine(
        move || rx.recv_timeout(timeout).is_err(),
        move || {
            let _ = tx.send(()); // the wait may have just ended
        },
    )
}

/// The same wait on may's `mpmc` channel, from a coroutine: one timed
/// semaphore wait, where `mpsc` above loops until its deadline has passed.
fn mpmc_channel_in_coroutine(timeout: Duration) -> (Ended, Duration) {
    let (tx, rx) = may::sync::mpmc::channel::<()>();
    in_coroutine(
        move || rx.recv_timeout(timeout).is_err(),
        move || {
            let _ = tx.send(()); // the wait may have just ended
        },
    )
}

/// The same wait on may's channel from an OS thread: a thread parks on a
/// condition variable, which takes the timeout as it is.
fn may_channel_on_thread(timeout: Duration) -> (Ended, Duration) {
    let (tx, rx) = may::sync::mpsc::channel::<()>();
    let (ended, wait_ended) = std::sync::mpsc::channel::<()>();
    let rescuer = std::thread::spawn(move || {
        if wait_ended.recv_timeout(RESCUE) == Err(RecvTimeoutError::Timeout) {
            let _ = tx.send(());
        }
    });
    let result = timed(|| rx.recv_timeout(timeout).is_err());
    let _ = ended.send(()); // the rescuer may be gone: it rescued
    rescuer.join().unwrap();
    result
}

/// The same wait on the book's bounded channel, which rounds a coroutine's
/// timeout up to the next whole millisecond.
fn bounded_channel_in_coroutine(timeout: Duration) -> (Ended, Duration) {
    let (tx, rx) = bounded::channel::<()>(1);
    in_coroutine(
        move || rx.recv_timeout(timeout).is_err(),
        move || {
            let _ = tx.send(()); // the wait may have just ended
        },
    )
}

/// A socket read with a read timeout of `timeout`, from a coroutine, against
/// a peer that sends nothing: the rescue accepts the connection (the kernel
/// completed it already) and closes it at once.
fn socket_read_in_coroutine(timeout: Duration) -> (Ended, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut stream = may_patterns::net::connect(listener.local_addr().unwrap()).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    in_coroutine(
        // Ok(0) means the peer closed: the rescue, not the timeout.
        move || stream.read(&mut [0; 16]).is_err(),
        move || drop(listener.accept().unwrap()),
    )
}
// ANCHOR_END: cases

/// Tries per line of output.
const TRIES: usize = 5;

/// The median of `TRIES` waits: one timer that fired late on a busy
/// machine does not decide the line, and neither does one wait that a late
/// timer happened to save from `mpsc`'s second wait. A wait that ignored
/// its timeout is reported at once (each one takes the whole rescue).
fn typical(case: Case, timeout: Duration) -> (Ended, Duration) {
    let mut tries = Vec::with_capacity(TRIES);
    for _ in 0..TRIES {
        let (ended, waited) = case(timeout);
        if ended == Ended::Rescued {
            return (ended, waited);
        }
        tries.push(waited);
    }
    tries.sort();
    (Ended::TimedOut, tries[TRIES / 2])
}

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let cases: [(&str, Case); 5] = [
        ("may mpsc, coroutine", may_channel_in_coroutine),
        ("may mpmc, coroutine", mpmc_channel_in_coroutine),
        ("may mpsc, OS thread", may_channel_on_thread),
        ("bounded channel, coroutine", bounded_channel_in_coroutine),
        ("socket read, coroutine", socket_read_in_coroutine),
    ];
    for (what, case) in cases {
        for timeout in [SHORT, ONE_MS, FRACTION, LONGER_FRACTION] {
            let (ended, waited) = typical(case, timeout);
            let verdict = match ended {
                Ended::TimedOut if waited < timeout => "timed out EARLY",
                Ended::TimedOut if waited > timeout + LATE_BY => "timed out LATE",
                Ended::TimedOut => "timed out",
                Ended::Rescued => "NO TIMEOUT, waited for the rescue",
            };
            println!("{what:<27} timeout {timeout:>7?}: {verdict} after {waited:.1?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// Slack for a busy machine: a timeout that fired is far below this.
    const LATE: Duration = Duration::from_millis(150);

    fn timed_out(case: Case, timeout: Duration) {
        let (ended, waited) = case(timeout);
        assert_eq!(ended, Ended::TimedOut);
        assert!(waited >= timeout && waited < LATE, "{waited:?}");
    }

    fn ignored(case: Case, timeout: Duration) {
        let (ended, waited) = case(timeout);
        assert_eq!(ended, Ended::Rescued, "the timeout fired after {waited:?}");
        assert!(waited >= RESCUE - Duration::from_millis(5), "{waited:?}");
    }

    #[test]
    fn a_coroutine_ignores_a_channel_timeout_under_one_millisecond() {
        configure_for_tests();
        for case in [may_channel_in_coroutine, mpmc_channel_in_coroutine] {
            ignored(case, SHORT);
            timed_out(case, ONE_MS);
        }
    }

    #[test]
    fn a_thread_honours_the_same_timeout() {
        configure_for_tests();
        timed_out(may_channel_on_thread, SHORT);
        timed_out(may_channel_on_thread, FRACTION);
    }

    #[test]
    fn a_coroutine_cuts_its_timeout_to_whole_milliseconds() {
        configure_for_tests();
        for case in [mpmc_channel_in_coroutine, socket_read_in_coroutine] {
            let (ended, waited) = typical(case, FRACTION);
            assert_eq!(ended, Ended::TimedOut);
            assert!(waited >= ONE_MS && waited < FRACTION, "{waited:?}");
        }
        // mpsc waits again until its deadline; bounded rounds up to 2 ms.
        timed_out(may_channel_in_coroutine, FRACTION);
        timed_out(bounded_channel_in_coroutine, FRACTION);
    }

    #[test]
    fn mpsc_waits_its_cut_timeout_again_when_the_first_falls_short() {
        configure_for_tests();
        // 10.9 ms is kept as 10 ms; short of the deadline, mpsc waits 10 ms more.
        let (ended, waited) = typical(may_channel_in_coroutine, LONGER_FRACTION);
        assert_eq!(ended, Ended::TimedOut);
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        timed_out(bounded_channel_in_coroutine, LONGER_FRACTION);
    }

    #[test]
    fn the_bounded_channel_rounds_the_timeout_up_instead() {
        configure_for_tests();
        let (ended, waited) = bounded_channel_in_coroutine(SHORT);
        assert_eq!(ended, Ended::TimedOut);
        assert!(waited >= ONE_MS && waited < LATE, "{waited:?}");
    }

    #[test]
    fn a_coroutine_ignores_a_socket_timeout_under_one_millisecond() {
        configure_for_tests();
        ignored(socket_read_in_coroutine, SHORT);
        timed_out(socket_read_in_coroutine, ONE_MS);
    }
}
