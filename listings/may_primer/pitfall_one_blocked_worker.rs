//! Pitfall: what ONE blocked worker freezes when there are two. The sockets
//! its epoll loop owns and the wake-ups queued to it from OS threads wait for
//! it; coroutines in its local run queue are stolen by the other worker.
//!
//! Run it: `cargo run --example pitfall_one_blocked_worker`

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use may::coroutine::Builder;
use may::go;
use may::net::{TcpListener, TcpStream};
use may::sync::mpsc;

const WORKERS: usize = 2;
const BLOCK: Duration = Duration::from_millis(300);
/// A wake-up later than this after the block began waited for the worker.
const STALLED: Duration = Duration::from_millis(150);
/// Waiters of each kind.
const EACH: usize = 10;

fn main() {
    may::config().set_workers(WORKERS);
    may::config().set_worker_pin(false);
    let r = block_one_worker();
    println!(
        "one of {WORKERS} workers blocked in std::thread::sleep({BLOCK:?}); \
         a wake-up is stalled if it came after {STALLED:?}:"
    );
    let row = |what: &str, late: &[bool]| {
        let n = late.iter().filter(|&&l| l).count();
        println!("  {what:<52}{n} of {} stalled", late.len());
    };
    row(
        "socket reads on the blocked worker's sockets",
        &r.own_sockets,
    );
    row(
        "socket reads on the other worker's sockets",
        &r.other_sockets,
    );
    row("channel wake-ups sent from an OS thread", &r.from_thread);
    row(
        "coroutines queued on the blocked worker (stolen)",
        &r.local_queue,
    );
}

/// For each waiter: did it wake later than [`STALLED`]?
#[derive(Debug)]
struct Stalls {
    own_sockets: Vec<bool>,
    other_sockets: Vec<bool>,
    from_thread: Vec<bool>,
    local_queue: Vec<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Socket { owner: usize },
    FromThread,
    LocalQueue,
}

fn block_one_worker() -> Stalls {
    let (woke_tx, woke_rx) = mpsc::channel::<(Kind, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    // Readers parked on loopback sockets, half owned by each worker
    // (fd % workers, epoll.rs:171); `main` writes to the other ends.
    let mut writers = Vec::new();
    for reader in socket_pairs(EACH, &mut writers) {
        let kind = Kind::Socket {
            owner: reader.as_raw_fd() as usize % WORKERS,
        };
        let (woke_tx, ready_tx) = (woke_tx.clone(), ready_tx.clone());
        go!(move || {
            let mut reader = reader;
            ready_tx.send(()).unwrap();
            reader.read_exact(&mut [0u8; 1]).unwrap();
            woke_tx.send((kind, Instant::now())).unwrap();
        });
    }
    // Receivers parked on channels: `main` sends to the first set, the
    // blocking coroutine to the second, just before it blocks.
    let mut from_thread = Vec::new();
    let mut local_queue = Vec::new();
    for (kind, senders) in [
        (Kind::FromThread, &mut from_thread),
        (Kind::LocalQueue, &mut local_queue),
    ] {
        for _ in 0..EACH {
            let (tx, rx) = mpsc::channel::<()>();
            let (woke_tx, ready_tx) = (woke_tx.clone(), ready_tx.clone());
            go!(move || {
                ready_tx.send(()).unwrap();
                rx.recv().unwrap();
                woke_tx.send((kind, Instant::now())).unwrap();
            });
            senders.push(tx);
        }
    }
    for _ in 0..3 * EACH {
        ready_rx.recv().unwrap();
    }

    // ANCHOR: block_one_worker
    // `Builder::id(0)` queues the blocker for worker 0 (coroutine_impl.rs:359).
    let (began_tx, began_rx) = mpsc::channel::<Instant>();
    go!(Builder::new().id(0), move || {
        // A coroutine's send queues the receiver on this worker's local
        // queue (scheduler.rs:184-188), which the other worker can steal.
        for tx in &local_queue {
            tx.send(()).unwrap();
        }
        began_tx.send(Instant::now()).unwrap();
        std::thread::sleep(BLOCK);
    })
    .unwrap();
    let began = began_rx.recv().unwrap();
    for w in &mut writers {
        w.write_all(b"x").unwrap();
    }
    for tx in &from_thread {
        tx.send(()).unwrap();
    }
    // ANCHOR_END: block_one_worker

    let mut stalls = Stalls {
        own_sockets: vec![],
        other_sockets: vec![],
        from_thread: vec![],
        local_queue: vec![],
    };
    for _ in 0..3 * EACH {
        let (kind, woke) = woke_rx
            .recv_timeout(10 * BLOCK)
            .expect("every waiter wakes");
        let late = woke - began > STALLED;
        match kind {
            Kind::Socket { owner: 0 } => stalls.own_sockets.push(late),
            Kind::Socket { .. } => stalls.other_sockets.push(late),
            Kind::FromThread => stalls.from_thread.push(late),
            Kind::LocalQueue => stalls.local_queue.push(late),
        }
    }
    stalls
}

/// `n` connected loopback sockets to read from, with their peers pushed onto
/// `writers`. Of each connected pair the reading end is picked by its fd, so
/// that exactly half the readers belong to each worker (`n` must be even).
fn socket_pairs(n: usize, writers: &mut Vec<TcpStream>) -> Vec<TcpStream> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut per_owner = [0usize; WORKERS];
    let mut readers = Vec::new();
    while readers.len() < n {
        let client = may_patterns::net::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let owner = |s: &TcpStream| s.as_raw_fd() as usize % WORKERS;
        // The worker with fewer readers so far gets the next one.
        let wanted = (0..WORKERS).min_by_key(|&w| per_owner[w]).unwrap();
        let (reader, writer) = if owner(&client) == wanted {
            (client, server)
        } else if owner(&server) == wanted {
            (server, client)
        } else {
            continue; // neither end is on that worker: try another pair
        };
        per_owner[wanted] += 1;
        writers.push(writer);
        readers.push(reader);
    }
    readers
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn one_blocked_worker_stalls_its_sockets_and_half_the_thread_wake_ups() {
        assert_eq!(configure_for_tests().workers, WORKERS);
        let r = block_one_worker();
        let stalled = |v: &[bool]| v.iter().filter(|&&l| l).count();
        assert_eq!(r.own_sockets.len(), EACH / WORKERS, "{r:?}");
        assert_eq!(r.other_sockets.len(), EACH / WORKERS, "{r:?}");
        assert_eq!(stalled(&r.own_sockets), r.own_sockets.len(), "{r:?}");
        assert_eq!(stalled(&r.other_sockets), 0, "{r:?}");
        // OS-thread wake-ups go to each worker in turn (scheduler.rs:211-219).
        assert_eq!(stalled(&r.from_thread), EACH / WORKERS, "{r:?}");
        assert_eq!(stalled(&r.local_queue), 0, "{r:?}");
    }
}
