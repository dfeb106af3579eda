//! The bounded channel's properties, checked under random schedules.
//!
//! Each property test runs many cases, each with its capacity, number and
//! kind of senders (coroutine or OS thread), item counts and pauses drawn
//! from a seeded generator. A failure names its seed; rerun that one case
//! with `BOUNDED_SEED=<seed> cargo test --lib bounded`.

use super::*;
use crate::runtime::configure_for_tests;
use may::go;
use may::sync::mpsc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// How long any test waits for something that should happen at once, before
/// calling it stuck. Generous: CI machines are busy.
const STUCK: Duration = Duration::from_secs(10);

fn seeds(cases: u64) -> Vec<u64> {
    match std::env::var("BOUNDED_SEED") {
        Ok(seed) => vec![seed.parse().expect("BOUNDED_SEED must be a number")],
        Err(_) => (1..=cases).collect(),
    }
}

/// Run `body` as a coroutine or on an OS thread; either way the returned
/// receiver yields its result, so the caller can wait with a bound.
fn spawn_task<R: Send + 'static>(
    on_thread: bool,
    body: impl FnOnce() -> R + Send + 'static,
) -> mpsc::Receiver<R> {
    let (done_tx, done_rx) = mpsc::channel();
    let run = move || {
        let _ = done_tx.send(body());
    };
    if on_thread {
        std::thread::spawn(run);
    } else {
        go!(may::coroutine::Builder::new().stack_size(0x8000), run).unwrap();
    }
    done_rx
}

fn wait_for<R>(task: &mpsc::Receiver<R>, what: &str) -> R {
    match task.recv_timeout(STUCK) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => panic!("{what} did not finish within {STUCK:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked (message above)"),
    }
}

/// A short random pause that reshuffles the schedule: nothing, a yield, or
/// (on an OS thread) a sleep of up to 200 µs.
///
/// Coroutines only yield here: with may 0.3.51, a coroutine sleep can
/// corrupt the heap, short ones often (see
/// `listings/pitfalls/pitfall_short_sleep.rs`).
fn jitter(rng: &mut fastrand::Rng) {
    match rng.u8(0..4) {
        0 => may::coroutine::yield_now(),
        1 if !may::coroutine::is_coroutine() => {
            std::thread::sleep(Duration::from_micros(rng.u64(0..200)))
        }
        _ => {}
    }
}

#[test]
fn try_send_fills_exactly_to_capacity_then_reports_full() {
    configure_for_tests();
    for capacity in [1, 2, 7] {
        let (tx, rx) = channel(capacity);
        for i in 0..capacity {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));
        assert_eq!(rx.len(), capacity);
        assert_eq!(rx.recv(), Ok(0));
        tx.try_send(99).unwrap();
        assert_eq!(tx.try_send(100), Err(TrySendError::Full(100)));
        assert_eq!(rx.high_water(), capacity);
    }
}

#[test]
fn send_timeout_times_out_on_a_full_channel_and_gives_the_item_back() {
    configure_for_tests();
    let (tx, _rx) = channel(1);
    tx.send("first").unwrap();
    let started = Instant::now();
    let result = tx.send_timeout("second", Duration::from_millis(30));
    assert_eq!(result, Err(SendTimeoutError::Timeout("second")));
    assert!(started.elapsed() >= Duration::from_millis(30));
}

/// May's own timed waits ignore a coroutine's timeout under 1 ms (it is
/// kept in whole milliseconds, and 0 means none); this channel rounds it up.
/// A rescue 2 s later ends a wait whose timeout did not fire, so a
/// regression fails here instead of hanging.
#[test]
fn sub_millisecond_timeouts_fire_in_a_coroutine() {
    configure_for_tests();
    let rescue_after = Duration::from_secs(2);
    let timeout = Duration::from_micros(300);

    let (tx, rx) = channel::<u8>(1);
    let receiver = spawn_task(false, move || {
        let started = Instant::now();
        (rx.recv_timeout(timeout), started.elapsed())
    });
    let send_rescue = std::thread::spawn(move || {
        std::thread::sleep(rescue_after);
        let _ = tx.send(1);
    });
    let (received, waited) = wait_for(&receiver, "recv_timeout(300 µs)");
    assert_eq!(received, Err(RecvTimeoutError::Timeout), "after {waited:?}");
    assert!(waited >= Duration::from_millis(1), "rounded up: {waited:?}");

    let (tx, rx) = channel::<u8>(1);
    tx.send(0).unwrap(); // full
    let sender = spawn_task(false, move || {
        let started = Instant::now();
        (tx.send_timeout(2, timeout), started.elapsed())
    });
    let receive_rescue = std::thread::spawn(move || {
        std::thread::sleep(rescue_after);
        rx.recv()
    });
    let (sent, waited) = wait_for(&sender, "send_timeout(300 µs)");
    assert_eq!(sent, Err(SendTimeoutError::Timeout(2)), "after {waited:?}");
    assert!(waited >= Duration::from_millis(1), "rounded up: {waited:?}");
    send_rescue.join().unwrap();
    assert_eq!(receive_rescue.join().unwrap(), Ok(0));
}

#[test]
fn a_zero_timeout_takes_only_what_is_ready() {
    configure_for_tests();
    let (tx, rx) = channel(1);
    let task = spawn_task(false, move || {
        let empty = rx.recv_timeout(Duration::ZERO);
        tx.send(7).unwrap();
        let full = tx.send_timeout(8, Duration::ZERO);
        (empty, full, rx.recv_timeout(Duration::ZERO))
    });
    let (empty, full, ready) = wait_for(&task, "zero timeouts");
    assert_eq!(empty, Err(RecvTimeoutError::Timeout));
    assert_eq!(full, Err(SendTimeoutError::Timeout(8)));
    assert_eq!(ready, Ok(7));
}

#[test]
fn a_parked_sender_resumes_when_a_slot_frees() {
    configure_for_tests();
    let (tx, rx) = channel(1);
    tx.send(1).unwrap();
    let sender = spawn_task(false, move || tx.send(2));
    // The sender is parked: nothing arrives while the buffer stays full.
    assert!(sender.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(wait_for(&sender, "the parked sender"), Ok(()));
    assert_eq!(rx.recv(), Ok(2));
}

#[test]
fn the_receiver_ends_when_every_sender_is_dropped() {
    configure_for_tests();
    let (tx, rx) = channel(4);
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    tx2.send(2).unwrap();
    drop((tx, tx2));
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(1)),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn sending_after_the_receiver_is_dropped_fails_with_the_item() {
    configure_for_tests();
    let (tx, rx) = channel(2);
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.send(1), Err(SendError(1)));
    assert_eq!(tx.try_send(2), Err(TrySendError::Disconnected(2)));
    assert_eq!(
        tx.send_timeout(3, Duration::from_millis(1)),
        Err(SendTimeoutError::Disconnected(3))
    );
}

#[test]
fn the_channel_stays_open_until_the_last_receiver_is_dropped() {
    configure_for_tests();
    let (tx, rx) = channel(2);
    let rx2 = rx.clone();
    drop(rx);
    assert!(!tx.is_closed());
    tx.send(1).unwrap();
    assert_eq!(rx2.recv(), Ok(1));
    drop(rx2);
    assert!(tx.is_closed());
    assert_eq!(tx.send(2), Err(SendError(2)));
}

#[test]
#[should_panic(expected = "capacity of at least 1")]
fn a_zero_capacity_is_refused() {
    let _ = channel::<()>(0);
}

/// One random case: senders (coroutines and threads) push numbered items
/// through a small buffer to one or more consumers that pause at random.
///
/// Checked from outside the channel: between two receives, the sends that
/// have *returned* never exceed the items received plus the capacity (every
/// returned send holds a slot until its item is received; with several
/// consumers, each of the others may hold one item it has taken but not yet
/// counted). Also: every item arrives exactly once; with one consumer, each
/// sender's items arrive in the order sent; the channel's own high-water mark
/// stays within the capacity.
fn capacity_and_exactly_once_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let capacity = rng.usize(1..=8);
    let senders = rng.usize(1..=8);
    let consumers = rng.usize(1..=3);
    let (tx, rx) = channel::<(usize, usize)>(capacity);
    let sends_returned = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));

    let mut expected = Vec::new();
    let mut tasks = Vec::new();
    for id in 0..senders {
        let items = rng.usize(0..=60);
        expected.extend((0..items).map(|seq| (id, seq)));
        let (tx, sends_returned) = (tx.clone(), Arc::clone(&sends_returned));
        let mut rng = fastrand::Rng::with_seed(rng.u64(..));
        tasks.push(spawn_task(rng.bool(), move || {
            for seq in 0..items {
                tx.send((id, seq)).unwrap();
                sends_returned.fetch_add(1, Ordering::SeqCst);
                jitter(&mut rng);
            }
        }));
    }
    drop(tx);

    let slack = capacity + consumers - 1;
    let consumer_tasks: Vec<_> = (0..consumers)
        .map(|_| {
            let (rx, sends_returned, received) =
                (rx.clone(), Arc::clone(&sends_returned), Arc::clone(&received));
            let mut rng = fastrand::Rng::with_seed(rng.u64(..));
            spawn_task(rng.bool(), move || {
                let mut got = Vec::new();
                loop {
                    let returned = sends_returned.load(Ordering::SeqCst);
                    let counted = received.load(Ordering::SeqCst);
                    assert!(
                        returned <= counted + slack,
                        "seed {seed}: {returned} sends returned, {counted} received, capacity {capacity}, {consumers} consumers"
                    );
                    let Ok(item) = rx.recv() else { break };
                    received.fetch_add(1, Ordering::SeqCst);
                    got.push(item);
                    jitter(&mut rng);
                }
                got
            })
        })
        .collect();
    for task in &tasks {
        wait_for(task, "a sender");
    }
    let per_consumer: Vec<_> = consumer_tasks
        .iter()
        .map(|task| wait_for(task, "a consumer"))
        .collect();
    assert!(rx.high_water() <= capacity, "seed {seed}: high water");
    if consumers == 1 {
        let mut in_order = expected.clone();
        in_order.sort_by_key(|&(id, seq)| (id, seq));
        let mut got = per_consumer[0].clone();
        got.sort_by_key(|&(id, _)| id); // stable: keeps each sender's order
        assert_eq!(got, in_order, "seed {seed}: a sender's items out of order");
    }
    let mut all: Vec<_> = per_consumer.into_iter().flatten().collect();
    all.sort_unstable();
    expected.sort_unstable();
    assert_eq!(all, expected, "seed {seed}: items lost or duplicated");
}

#[test]
fn property_capacity_is_never_exceeded_and_every_item_arrives_exactly_once() {
    configure_for_tests();
    for seed in seeds(150) {
        capacity_and_exactly_once_case(seed);
    }
}

/// An item that counts its own drop, to prove none vanishes unaccounted.
struct Counted(Arc<AtomicU64>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// One random case: many senders push into a tiny buffer; the receiver takes
/// a few items and is dropped while senders are parked. Every sender must
/// return, and every item is accounted for: received, handed back in a send
/// error, or dropped with the buffer.
fn no_sender_stays_blocked_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let capacity = rng.usize(1..=4);
    let senders = rng.usize(1..=10);
    let items_each = rng.usize(1..=30);
    let to_receive = rng.usize(0..=senders * items_each);
    let (tx, rx) = channel::<Counted>(capacity);
    let dropped = Arc::new(AtomicU64::new(0));

    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (tx, dropped) = (tx.clone(), Arc::clone(&dropped));
            spawn_task(rng.bool(), move || {
                let mut refused = 0;
                for _ in 0..items_each {
                    if let Err(SendError(item)) = tx.send(Counted(Arc::clone(&dropped))) {
                        // The item came back: keep it out of the drop count.
                        std::mem::forget(item);
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    drop(tx);

    let receiver = spawn_task(rng.bool(), move || {
        let mut received = 0;
        while received < to_receive {
            match rx.recv() {
                Ok(item) => {
                    std::mem::forget(item);
                    received += 1;
                }
                Err(RecvError) => break,
            }
        }
        received // rx is dropped here, with whatever is still buffered
    });

    let received = wait_for(&receiver, "the receiver");
    let refused: usize = tasks
        .iter()
        .map(|task| wait_for(task, "a sender after the receiver was dropped"))
        .sum();
    let dropped_in_buffer = dropped.load(Ordering::SeqCst) as usize;
    assert!(dropped_in_buffer <= capacity, "seed {seed}");
    assert_eq!(
        received + refused + dropped_in_buffer,
        senders * items_each,
        "seed {seed}: received {received}, refused {refused}, dropped {dropped_in_buffer}"
    );
}

#[test]
fn property_no_sender_stays_blocked_after_the_receiver_is_dropped() {
    configure_for_tests();
    for seed in seeds(150) {
        no_sender_stays_blocked_case(seed);
    }
}

/// Regression: with may's own `mpmc` disconnect, one of several receivers
/// parked at the moment the last sender dropped could sleep for good (in
/// our runs, once in 5,000 to 60,000 rounds). The end marker wakes them all.
#[test]
fn every_parked_receiver_wakes_when_the_last_sender_drops() {
    configure_for_tests();
    for round in 0..20_000 {
        let (tx, rx) = channel::<()>(1);
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..4 {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            go!(move || done_tx.send(rx.recv()).unwrap());
        }
        drop((rx, tx, done_tx));
        for _ in 0..4 {
            let ended = done_rx.recv_timeout(STUCK);
            assert_eq!(
                ended,
                Ok(Err(RecvError)),
                "round {round}: a receiver stayed parked"
            );
        }
    }
}
