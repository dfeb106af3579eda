use std::time::Duration;

use super::*;
use crate::bounded;
use crate::runtime::configure_for_tests;

/// Run `f` on a coroutine; fail the test if it has not returned within 10 s
/// (a worker left parked shows up here, not as a hang).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done_tx, done_rx) = may::sync::mpsc::channel();
    may::go!(move || {
        let _ = done_tx.send(f());
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stage did not finish within 10 s")
}

/// Feed `items` into a stage of `workers` running `work`, collect what comes
/// out; the stage's books and the outputs.
fn run_stage<W>(
    workers: usize,
    items: Vec<i64>,
    work: impl Fn() -> W + Send + 'static,
) -> (StageStats, Vec<i64>)
where
    W: FnMut(i64) -> Outcome<i64> + Send + 'static,
{
    within_10s(move || {
        let (in_tx, in_rx) = bounded::channel(4);
        let (out_tx, out_rx) = bounded::channel(4);
        let stage = Stage::new("test", workers).spawn(in_rx, out_tx, work);
        let feeder = may::go!(move || {
            for item in items {
                in_tx.send(item).unwrap();
            }
        });
        let mut out: Vec<i64> = out_rx.iter().collect();
        out.sort_unstable();
        feeder.join().unwrap();
        (stage.join(), out)
    })
}

#[test]
fn every_item_is_counted_once_across_several_workers() {
    configure_for_tests();
    let (stats, out) = run_stage(3, (0..30).collect(), || {
        |n: i64| match n % 3 {
            0 => Outcome::rejected("multiple of three"),
            _ => Outcome::Out(-n),
        }
    });
    let expected: Vec<i64> = (0..30).filter(|n| n % 3 != 0).map(|n| -n).rev().collect();
    assert_eq!(out, expected);
    assert_eq!((stats.name, stats.workers), ("test", 3));
    assert_eq!((stats.items_in, stats.items_out), (30, 20));
    assert_eq!(stats.rejected, BTreeMap::from([("multiple of three", 10)]));
    assert_eq!(stats.abandoned, 0);
    assert!(stats.balances());
    assert!(stats.input_high_water.unwrap() <= 4);
}

#[test]
fn passed_on_items_are_sent_but_not_counted_and_rejects_can_travel_on() {
    configure_for_tests();
    // Negative numbers stand for an earlier stage's rejects; odd ones are
    // rejected here and sent on, as a reject-writing sink wants.
    let (stats, out) = run_stage(2, vec![-1, -2, 1, 2, 3, 4], || {
        |n: i64| match n {
            n if n < 0 => Outcome::PassOn(n),
            n if n % 2 == 1 => Outcome::Rejected {
                reason: "odd",
                pass_on: Some(-100 - n),
            },
            n => Outcome::Out(n * 10),
        }
    });
    assert_eq!(out, vec![-103, -101, -2, -1, 20, 40]);
    assert_eq!((stats.items_in, stats.items_out), (4, 2));
    assert_eq!(stats.rejected_total(), 2);
    assert!(stats.balances());
}

#[test]
fn a_stopped_next_stage_stops_every_worker_and_the_stage_before() {
    configure_for_tests();
    let (stats, feeder_failed) = within_10s(|| {
        let (in_tx, in_rx) = bounded::channel::<i64>(2);
        let (out_tx, out_rx) = bounded::channel::<i64>(2);
        let stage = Stage::new("test", 3).spawn(in_rx, out_tx, || Outcome::Out);
        // The next stage takes three items and stops for good.
        let next = may::go!(move || {
            for _ in 0..3 {
                out_rx.recv().unwrap();
            }
        });
        // Sends into the stage fail once its last worker has returned.
        let feeder = may::go!(move || (0..).find(|&n| in_tx.send(n).is_err()).is_some());
        next.join().unwrap();
        let stats = stage.join();
        (stats, feeder.join().unwrap())
    });
    assert!(feeder_failed, "the stage before must see its sends fail");
    // Three taken, and at most a queue's worth (2) left in it.
    assert!((3..=5).contains(&stats.items_out), "{stats:?}");
    assert!(stats.abandoned >= 1, "{stats:?}");
    assert!(stats.balances(), "{stats:?}");
}

#[test]
fn the_workers_of_a_stage_work_at_the_same_time() {
    configure_for_tests();
    // A structural fact, not a timing: with items waiting, more than one
    // worker is inside its 2 ms wait at the same moment.
    let (stats, out) = run_stage(4, (0..40).collect(), || {
        |n: i64| {
            may::coroutine::sleep(Duration::from_millis(2));
            Outcome::Out(n)
        }
    });
    assert_eq!(out, (0..40).collect::<Vec<i64>>());
    assert!(
        stats.peak_working > 1 && stats.peak_working <= 4,
        "{stats:?}"
    );
    assert!(stats.busy >= Duration::from_millis(2 * 40));
}

#[test]
fn each_worker_gets_its_own_work_and_the_stack_asked_for() {
    configure_for_tests();
    let (in_tx, in_rx) = bounded::channel::<i64>(8);
    let (out_tx, out_rx) = bounded::channel::<i64>(8);
    let words = 0x4000;
    let made = std::cell::Cell::new(0);
    let stage = Stage::new("test", 2)
        .stack_words(words)
        .spawn(in_rx, out_tx, || {
            made.set(made.get() + 1);
            |_: i64| Outcome::Out(may::coroutine::current().stack_size() as i64)
        });
    assert_eq!(made.get(), 2, "one work per worker");
    for n in 0..4 {
        in_tx.send(n).unwrap();
    }
    drop(in_tx);
    assert_eq!(stage.join().items_out, 4);
    let stacks: Vec<i64> = out_rx.iter().collect();
    assert_eq!(stacks, vec![words as i64; 4]);
}

#[test]
fn a_panicking_worker_fails_the_join_with_the_stage_name() {
    configure_for_tests();
    let (in_tx, in_rx) = bounded::channel::<i64>(1);
    let (out_tx, _out_rx) = bounded::channel::<i64>(1);
    let stage = Stage::new("fragile", 1).spawn(in_rx, out_tx, || {
        |_: i64| -> Outcome<i64> { panic!("a bug in the work") }
    });
    in_tx.send(1).unwrap();
    let joined = std::thread::spawn(move || stage.join()).join();
    let message = joined.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert_eq!(message, "a worker of stage fragile panicked");
}
