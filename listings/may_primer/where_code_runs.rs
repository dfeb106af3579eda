//! Where your code runs: which OS thread runs a coroutine after each kind of
//! wait, with may's two workers and its timer thread told apart.
//!
//! Run it: `cargo run --example where_code_runs`

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, ThreadId};
use std::time::Duration;

use may::coroutine::{self, Builder};
use may::go;
use may::net::TcpListener;
use may::sync::mpsc;

const WORKERS: usize = 2;
/// Confirmed waits wanted for each case that depends on a park (see `watch`).
const TRIALS: usize = 10;
const WAIT: Duration = Duration::from_millis(10);

fn main() {
    may::config().set_workers(WORKERS);
    may::config().set_worker_pin(false);
    find_workers();

    let [after_sleep, after_second_sleep, after_yield] = sleep_then_yield();
    let after_timeout = recv_timeout_expires();
    let from_thread = recv_from_thread(TRIALS);
    let from_coroutine = recv_from_coroutine(TRIALS);
    let reads = socket_reads(TRIALS, Wake::Data);
    let read_timeouts = socket_reads(TRIALS, Wake::Timeout);

    let row = |wait: &str, place: &str| println!("  {wait:<38}{place}");
    println!("where a coroutine runs after each kind of wait ({WORKERS} workers):");
    row(&format!("sleep({WAIT:?})"), after_sleep.name());
    row("...then sleep() again", after_second_sleep.name());
    row("...then yield_now()", after_yield.name());
    let timeout = format!("recv_timeout({WAIT:?}), timed out");
    row(&timeout, after_timeout.name());
    let on = |w| {
        from_thread
            .iter()
            .filter(|&&p| p == Some(Place::Worker(w)))
            .count()
    };
    let turns = format!(
        "{}: worker 0 ~{} times, worker 1 ~{}",
        name(&from_thread),
        on(0),
        on(1)
    );
    row("recv(), an OS thread sent", &turns);
    let (k, n) = share(&from_coroutine);
    let sender = format!(
        "{}: the sender's in ~{k} of ~{n}",
        name(&after(&from_coroutine))
    );
    row("recv(), a coroutine sent", &sender);
    let (k, n) = share(&reads);
    row(
        "socket read, data arrived",
        &format!("the socket's worker (fd % 2) in ~{k} of ~{n}"),
    );
    let exact = if all_where_woken(&read_timeouts) {
        "always"
    } else {
        "NOT always"
    };
    row(
        "socket read, its read timeout fired",
        &format!("the socket's worker (fd % 2), {exact}"),
    );
    println!("(~: counts of waits whose park was confirmed, which vary: an idle worker");
    println!(" can steal a coroutine queued on another; see `watch`)");
}

static WORKER_THREADS: OnceLock<Vec<ThreadId>> = OnceLock::new();

/// Which of may's threads runs the caller. may names none of its threads
/// (scheduler.rs:47,67), so they are told apart by `ThreadId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Worker(usize),
    /// may starts its workers and one timer thread (scheduler.rs:47-74); a
    /// coroutine on a may thread that is not a worker is on the timer thread.
    Timer,
}

impl Place {
    fn here() -> Place {
        let me = thread::current().id();
        let workers = WORKER_THREADS.get().expect("find_workers() runs first");
        match workers.iter().position(|&w| w == me) {
            Some(i) => Place::Worker(i),
            None => Place::Timer,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Place::Worker(_) => "a worker",
            Place::Timer => "the timer thread",
        }
    }
}

/// `Builder::id(i)` queues a new coroutine on worker i's own queue
/// (coroutine_impl.rs:359, scheduler.rs:224), so a probe spawned that way
/// reports worker i's thread. An idle worker can steal a probe before its
/// owner runs it; then two probes report one thread, and we ask again.
fn find_workers() {
    WORKER_THREADS.get_or_init(|| {
        for _ in 0..100 {
            let threads: Vec<ThreadId> = (0..WORKERS)
                .map(|i| {
                    go!(Builder::new().id(i), || thread::current().id())
                        .unwrap()
                        .join()
                        .unwrap()
                })
                .collect();
            if threads.iter().collect::<HashSet<_>>().len() == WORKERS {
                return threads;
            }
        }
        panic!("probes kept landing on one thread: are there {WORKERS} workers?");
    });
}

// ANCHOR: sleep_then_yield
/// A timer wakes a coroutine by running it on the timer thread
/// (scheduler.rs:55), so a second sleep starts from there and ends there
/// too; `yield_now` queues it for a worker, because the timer thread has no
/// worker id (scheduler.rs:185-190).
fn sleep_then_yield() -> [Place; 3] {
    go!(|| {
        coroutine::sleep(WAIT);
        let after_sleep = Place::here();
        coroutine::sleep(WAIT);
        let after_second_sleep = Place::here();
        coroutine::yield_now();
        [after_sleep, after_second_sleep, Place::here()]
    })
    .join()
    .unwrap()
}
// ANCHOR_END: sleep_then_yield

/// `recv_timeout` arms a timer on the timer thread (park.rs:207), which runs
/// the coroutine when it fires.
fn recv_timeout_expires() -> Place {
    let (_tx, rx) = mpsc::channel::<()>();
    go!(move || {
        assert!(rx.recv_timeout(WAIT).is_err(), "nobody sends");
        Place::here()
    })
    .join()
    .unwrap()
}

/// One wait of a watched coroutine.
#[derive(Debug, Clone, Copy)]
struct Woken {
    /// Where the wake-up should have put it.
    expected: Place,
    /// Where it ran after the wait; `None` when the park was not confirmed.
    after: Option<Place>,
}

impl Woken {
    fn ran_where_woken(&self) -> bool {
        self.after == Some(self.expected)
    }
}

/// Let a coroutine run `wait(i)` for i = 0, 1, 2 ..., and call `wake(i)` on
/// this thread only once that coroutine has parked in wait `i`: woken
/// earlier, it would still be running and would not move at all. Stops after
/// `wanted` confirmed waits (or four times as many tries), and returns every
/// try: what the wait returned, and where the coroutine ran after it, `None`
/// when its park was not confirmed.
///
/// may has no "is parked" signal, so a watcher coroutine gives one. Before
/// each wait the waiter pokes the watcher, which queues the watcher on the
/// waiter's worker (scheduler.rs:184-188). A worker runs one coroutine at a
/// time, so if the watcher then runs on the waiter's thread, the waiter has
/// parked. If the watcher runs elsewhere (it was stolen, or had not parked
/// itself yet), the try does not count.
fn watch<T: Send + 'static>(
    wanted: usize,
    mut wait: impl FnMut(usize) -> T + Send + 'static,
    mut wake: impl FnMut(usize),
) -> Vec<(T, Option<Place>)> {
    let (poke_tx, poke_rx) = mpsc::channel::<ThreadId>();
    let (parked_tx, parked_rx) = mpsc::channel::<bool>();
    let last = Arc::new(AtomicBool::new(false));
    let watcher = go!(move || {
        for waiter in poke_rx.iter() {
            parked_tx.send(thread::current().id() == waiter).unwrap();
        }
    });
    let waiter = go!({
        let last = last.clone();
        move || {
            let mut tries = Vec::new();
            while !last.load(Ordering::Acquire) {
                poke_tx.send(thread::current().id()).unwrap();
                let got = wait(tries.len());
                tries.push((got, Place::here()));
            }
            tries
        }
    });
    let mut parked = Vec::new();
    while !last.load(Ordering::Acquire) {
        parked.push(parked_rx.recv().unwrap());
        let confirmed = parked.iter().filter(|&&p| p).count();
        if confirmed == wanted || parked.len() == 4 * wanted {
            last.store(true, Ordering::Release);
        }
        wake(parked.len() - 1);
    }
    let tries = waiter.join().unwrap();
    watcher.join().unwrap();
    tries
        .into_iter()
        .zip(parked)
        .map(|((got, after), parked)| (got, parked.then_some(after)))
        .collect()
}

/// A send from an OS thread (here `main`) queues the receiver on the next
/// worker in turn (scheduler.rs:211-219). Where each wake-up ran.
fn recv_from_thread(trials: usize) -> Vec<Option<Place>> {
    let (tx, rx) = mpsc::channel::<()>();
    let woken = watch(
        trials,
        move |_| rx.recv().unwrap(),
        |_| tx.send(()).unwrap(),
    );
    woken.into_iter().map(|((), after)| after).collect()
}

/// "a worker" if every confirmed wait ended on a worker.
fn name(places: &[Option<Place>]) -> &'static str {
    if places
        .iter()
        .flatten()
        .all(|p| matches!(p, Place::Worker(_)))
    {
        "a worker"
    } else {
        "NOT always a worker"
    }
}

fn after(woken: &[Woken]) -> Vec<Option<Place>> {
    woken.iter().map(|w| w.after).collect()
}

/// How many confirmed waits ran where their wake-up queued them, of how many.
fn share(woken: &[Woken]) -> (usize, usize) {
    let confirmed = woken.iter().filter(|w| w.after.is_some());
    let right = confirmed.clone().filter(|w| w.ran_where_woken()).count();
    (right, confirmed.count())
}

/// Whether every confirmed wait ran where its wake-up should have put it.
fn all_where_woken(woken: &[Woken]) -> bool {
    woken
        .iter()
        .filter(|w| w.after.is_some())
        .all(Woken::ran_where_woken)
}

/// A send from a coroutine queues the receiver on the sender's worker
/// (scheduler.rs:184-188). The sender is woken from `main`, so it runs on
/// each worker in turn, and the receiver should follow it.
fn recv_from_coroutine(trials: usize) -> Vec<Woken> {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel::<Place>();
    let sender = go!(move || {
        for () in go_rx.iter() {
            tx.send(Place::here()).unwrap();
        }
    });
    let woken = watch(
        trials,
        move |_| rx.recv().unwrap(),
        // Moved in, so the sender's channel closes when `watch` returns.
        move |_| go_tx.send(()).unwrap(),
    );
    sender.join().unwrap();
    woken
        .into_iter()
        .map(|(sender, after)| Woken {
            expected: sender,
            after,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The peer writes a byte.
    Data,
    /// Nobody writes; the socket's read timeout fires.
    Timeout,
}

/// Each wait is a read on its own loopback connection; `main` writes to the
/// other end, or lets the read timeout fire. The reader's end is the
/// client's on even trials and the server's on odd ones, so the readers' fds
/// (and so, by fd % workers, epoll.rs:171, their workers) differ.
fn socket_reads(trials: usize, wake: Wake) -> Vec<Woken> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut readers, mut writers) = (Vec::new(), Vec::new());
    for i in 0..trials {
        let client = may_patterns::net::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (reader, writer) = if i % 2 == 0 {
            (client, server)
        } else {
            (server, client)
        };
        reader
            .set_read_timeout((wake == Wake::Timeout).then_some(WAIT))
            .unwrap();
        readers.push(reader);
        writers.push(writer);
    }
    let owners: Vec<usize> = readers
        .iter()
        .map(|r| r.as_raw_fd() as usize % WORKERS)
        .collect();
    let read = move |i: usize| {
        let mut byte = [0u8; 1];
        match readers[i % trials].read(&mut byte) {
            Ok(1) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            other => panic!("unexpected read result {other:?}"),
        }
    };
    let places = match wake {
        Wake::Data => {
            let write = |i: usize| writers[i % trials].write_all(b"x").unwrap();
            watch(trials, read, write)
                .into_iter()
                .map(|((), after)| after)
                .collect()
        }
        // Nobody writes, so a read can only end in its timeout, after it
        // parked: every wait counts, and no watcher is needed (one can be
        // stolen on every try, leaving nothing confirmed).
        Wake::Timeout => unwatched(trials, read),
    };
    places
        .into_iter()
        .enumerate()
        .map(|(i, after)| Woken {
            expected: Place::Worker(owners[i % trials]),
            after,
        })
        .collect::<Vec<_>>()
}

/// Where a coroutine ran after each of `n` waits that cannot end before they
/// park.
fn unwatched(n: usize, mut wait: impl FnMut(usize) + Send + 'static) -> Vec<Option<Place>> {
    go!(move || {
        (0..n)
            .map(|i| {
                wait(i);
                Some(Place::here())
            })
            .collect()
    })
    .join()
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;
    use std::sync::{Mutex, MutexGuard};

    /// The cases watch where may puts coroutines, so they must not share the
    /// workers with each other: one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn setup() -> MutexGuard<'static, ()> {
        assert_eq!(configure_for_tests().workers, WORKERS);
        find_workers();
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_timer_runs_the_coroutine_on_the_timer_thread_until_it_parks() {
        let _one = setup();
        let [after_sleep, after_second_sleep, after_yield] = sleep_then_yield();
        assert_eq!(after_sleep, Place::Timer);
        assert_eq!(after_second_sleep, Place::Timer);
        assert!(matches!(after_yield, Place::Worker(_)), "{after_yield:?}");
        assert_eq!(recv_timeout_expires(), Place::Timer);
    }

    #[test]
    fn a_wake_up_from_a_thread_or_a_coroutine_runs_on_a_worker() {
        let _one = setup();
        let from_thread = recv_from_thread(TRIALS);
        let from_coroutine = after(&recv_from_coroutine(TRIALS));
        for places in [from_thread, from_coroutine] {
            assert!(places.iter().flatten().count() >= TRIALS / 2, "{places:?}");
            assert_eq!(name(&places), "a worker", "{places:?}");
        }
    }

    #[test]
    fn a_coroutine_wakes_its_receiver_on_its_own_worker_unless_stolen() {
        let _one = setup();
        let (right, confirmed) = share(&recv_from_coroutine(TRIALS));
        assert!(2 * right > confirmed, "{right} of {confirmed}");
    }

    #[test]
    fn a_socket_wakes_its_reader_on_the_worker_that_owns_its_fd() {
        let _one = setup();
        // A read timeout runs the coroutine on the owner at once
        // (io/sys/unix/mod.rs:101); data queues it there, where it can be
        // stolen (epoll.rs:130).
        let timeouts = socket_reads(TRIALS, Wake::Timeout);
        let (right, confirmed) = share(&timeouts);
        assert!(confirmed == TRIALS && right == confirmed, "{timeouts:?}");
        let reads = socket_reads(TRIALS, Wake::Data);
        let (right, confirmed) = share(&reads);
        assert!(2 * right > confirmed, "{reads:?}");
        // Both workers own some of the sockets, so the test can fail.
        for w in 0..WORKERS {
            let owned = reads.iter().filter(|r| r.expected == Place::Worker(w));
            assert!(owned.count() > 0, "no socket on worker {w}: {reads:?}");
        }
    }
}
