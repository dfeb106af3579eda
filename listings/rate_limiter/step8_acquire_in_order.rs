//! Step 8: wait for the limiter instead of being refused, in arrival order,
//! with a deadline.
//!
//! `check` answers at once. A client that would rather wait calls
//! `acquire`, which parks its coroutine until its turn: callers of one key
//! go in the order they came (a later, smaller request never slips in
//! first), and a caller whose turn would come after its deadline is told
//! so at once instead of waiting for nothing. On a ManualClock the queue is
//! exact; on the real clock the turns land one interval apart, up to may's
//! 1 ms timer step late.

use may::go;
use may::sync::mpsc::{channel, Sender};
use may_patterns::clock::{Clock, ManualClock};
use may_patterns::ratelimit::{Gcra, Limiter, Quota};
use may_patterns::runtime::{configure_once, Settings};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Queue = Arc<Limiter<&'static str, Gcra, ManualClock>>;

const KEY: &str = "api";

/// One caller: a name, what it asks for, how long it will wait at most.
struct Caller {
    name: &'static str,
    cost: u64,
    deadline: Duration,
}

/// What happened when a caller came: its turn, or why it has none.
type Arrival = (&'static str, Result<Duration, String>);

// ANCHOR: caller
/// `acquire`, in its two halves, so the listing can show the queue before
/// anyone goes: `reserve` takes the caller's place (under the shard's lock,
/// never blocking), `wait` parks the coroutine until then (no lock held).
fn caller(limiter: Queue, c: Caller, arrived: Sender<Arrival>, went: Sender<&'static str>) {
    match limiter.reserve(&KEY, c.cost, c.deadline) {
        Ok(turn) => {
            arrived.send((c.name, Ok(turn.at()))).unwrap();
            turn.wait(limiter.clock());
            went.send(c.name).unwrap();
        }
        Err(refused) => arrived.send((c.name, Err(refused.to_string()))).unwrap(),
    }
}
// ANCHOR_END: caller

// ANCHOR: queue
/// 10 per second (one every 100 ms), burst 2, spent at 0 ms; then five
/// callers, one after another, and a newcomer's `check` at 250 ms and again
/// once the last of them has gone. Returns the lines to print.
fn queue() -> Vec<String> {
    let quota = Quota::per_second(10, 2).expect("a valid quota");
    let limiter: Queue = Arc::new(Limiter::with_clock(
        Gcra::new(quota),
        16,
        ManualClock::new(),
    ));
    let mut lines = vec![format!("{quota}; the burst is spent at 0ms")];
    assert!(limiter.check(&KEY, 2).is_admitted());

    let s = Duration::from_secs(1);
    let callers = [
        ("a", 1, s),
        ("b", 2, s),
        ("c", 1, s * 15 / 100),
        ("d", 1, s),
        ("e", 3, s),
    ];
    let (arrived_tx, arrived) = channel();
    let (went_tx, went) = channel();
    let mut turns = Vec::new();
    for (name, cost, deadline) in callers {
        let (limiter, arrived_tx, went_tx) = (limiter.clone(), arrived_tx.clone(), went_tx.clone());
        go!(move || caller(
            limiter,
            Caller {
                name,
                cost,
                deadline
            },
            arrived_tx,
            went_tx
        ));
        // The next caller comes only after this one has its place.
        let (name, turn) = arrived.recv().unwrap();
        lines.push(match &turn {
            Ok(at) => {
                format!("{name} asks for {cost} (deadline {deadline:?}): its turn is at {at:?}")
            }
            Err(why) => {
                format!("{name} asks for {cost} (deadline {deadline:?}): refused at once, {why}")
            }
        });
        if let Ok(at) = turn {
            turns.push((at, name));
        }
    }

    let clock = limiter.clock();
    clock.set(Duration::from_millis(250));
    lines.push(format!(
        "at 250ms a newcomer checks: {:?}",
        limiter.check(&KEY, 1)
    ));
    // Move the clock to each turn; exactly that caller wakes and goes.
    for (at, name) in turns {
        clock.set(clock.now().max(at));
        let gone = went
            .recv_timeout(Duration::from_secs(5))
            .expect("a caller woke");
        assert_eq!(gone, name, "callers go in their order");
        lines.push(format!("clock at {at:?}: {gone} goes"));
    }
    let now = clock.now();
    let again = limiter.check(&KEY, 1);
    lines.push(format!("at {now:?} the newcomer checks again: {again:?}"));
    lines
}
// ANCHOR_END: queue

// ANCHOR: real_clock
/// On the real clock: `n` coroutines acquire one unit of one key at once,
/// 10 per second, burst 1. Returns when each went, from the start, sorted.
fn on_the_real_clock(n: usize) -> Vec<Duration> {
    let quota = Quota::per_second(10, 1).expect("a valid quota");
    let limiter = Arc::new(Limiter::new(Gcra::new(quota), 16));
    let start = Instant::now();
    let waiters: Vec<_> = (0..n)
        .map(|_| {
            let limiter = limiter.clone();
            go!(move || {
                limiter.acquire(&KEY, 1, Duration::from_secs(2)).unwrap();
                start.elapsed()
            })
        })
        .collect();
    let mut went: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    went.sort();
    went
}
// ANCHOR_END: real_clock

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    for line in queue() {
        println!("{line}");
    }
    let went: Vec<_> = on_the_real_clock(5).iter().map(|d| ms(*d)).collect();
    println!("real clock, 10 per second, burst 1, 5 coroutines at once:");
    println!("  they went after {}", went.join(", "));
}

/// A measured duration as the book prints it: milliseconds, one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn callers_go_in_arrival_order_and_a_hopeless_deadline_is_refused_up_front() {
        configure_for_tests();
        let lines = queue();
        assert_eq!(
            lines[1..],
            [
                "a asks for 1 (deadline 1s): its turn is at 100ms",
                "b asks for 2 (deadline 1s): its turn is at 300ms",
                "c asks for 1 (deadline 150ms): refused at once, would not be admitted before \
                 the deadline (it would be after 400ms)",
                "d asks for 1 (deadline 1s): its turn is at 400ms",
                "e asks for 3 (deadline 1s): refused at once, the cost is more than the quota \
                 ever admits at once",
                "at 250ms a newcomer checks: Denied { retry_after: 150ms, reset: 350ms }",
                "clock at 100ms: a goes",
                "clock at 300ms: b goes",
                "clock at 400ms: d goes",
                "at 400ms the newcomer checks again: Denied { retry_after: 100ms, reset: 200ms }",
            ]
        );
    }

    #[test]
    fn on_the_real_clock_turns_come_one_interval_apart_and_never_early() {
        configure_for_tests();
        let went = on_the_real_clock(4);
        for (i, at) in went.iter().enumerate() {
            // Never early. Late by may's 1 ms timer step on an idle machine;
            // the bound is loose because a busy one (a parallel build) was
            // seen 50 ms late.
            let turn = Duration::from_millis(100 * i as u64);
            assert!(*at >= turn, "went at {at:?}, before its turn {turn:?}");
            assert!(*at < turn + Duration::from_secs(1), "went at {at:?}");
        }
    }
}
