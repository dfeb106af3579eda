//! Known may 0.3.51 bug: when the last `mpmc::Sender` drops, a receiver
//! about to park can stay parked for good.
//!
//! `drop_tx` wakes the receivers by posting the channel's semaphore until its
//! value is above 0 (may-0.3.51 src/sync/mpmc.rs:97-105): one post per parked
//! receiver, plus one spare. A receiver that has found the queue empty
//! (`try_recv`, :76-91) but has not yet counted itself into the semaphore
//! (`wait`, src/sync/semphore.rs:74-88) is not woken; it takes the spare. Two
//! receivers in that gap share one spare: the second parks, and with no
//! sender left nothing will ever post again.
//!
//! Each trial below parks a few receiver coroutines with `recv_timeout` while
//! the last sender drops. A receiver that saw the disconnection returns
//! `Disconnected` at once; a stranded one only gets `Timeout`, after `BOUND`.
//! With `recv()` it would wait forever.
//!
//! Run it: `cargo run --example pitfall_mpmc_disconnect`, or
//! `cargo run --example pitfall_mpmc_disconnect -- --trials 50000 --receivers 4`.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use clap::Parser;
use may::go;
use may::sync::mpmc;
use may_patterns::runtime::{configure_once, Settings};

/// Count how often dropping the last mpmc sender strands a receiver.
#[derive(Parser)]
struct Args {
    /// Trials to run.
    #[arg(long, default_value_t = 20_000)]
    trials: u32,
    /// Receiver coroutines per trial.
    #[arg(long, default_value_t = 4)]
    receivers: usize,
}

/// Far longer than a receiver needs to see a disconnection that woke it.
const BOUND: Duration = Duration::from_millis(100);

fn main() {
    let args = Args::parse();
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(11);
    let (mut trials_hit, mut stranded) = (0, 0);
    for _ in 0..args.trials {
        let left_parked = trial(args.receivers, rng.u32(0..2_000));
        trials_hit += u32::from(left_parked > 0);
        stranded += left_parked;
    }
    println!(
        "{} trials of {} receivers, the last sender dropped while they park:",
        args.trials, args.receivers
    );
    println!("  ~{trials_hit} trials left a receiver parked (~{stranded} receivers in all)");
    println!("  took {:.1?}", started.elapsed());
}

// ANCHOR: trial
/// Start `receivers` coroutines that wait on an empty mpmc channel, drop its
/// only sender about `spin` busy-loop turns later, and count the receivers
/// that were never told: they time out instead of seeing `Disconnected`.
fn trial(receivers: usize, spin: u32) -> usize {
    let (tx, rx) = mpmc::channel::<()>();
    let waiting: Vec<_> = (0..receivers)
        .map(|_| {
            let rx = rx.clone();
            go!(move || rx.recv_timeout(BOUND))
        })
        .collect();
    drop(rx);
    // A varying delay, so the drop lands at varying points of the receivers'
    // way into their wait.
    for _ in 0..spin {
        std::hint::spin_loop();
    }
    drop(tx);
    waiting
        .into_iter()
        .map(|receiver| receiver.join().unwrap())
        .filter(|ended| *ended == Err(RecvTimeoutError::Timeout))
        .count()
}
// ANCHOR_END: trial

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    /// It is a race: in our runs 3 to 17 trials in 20,000 stranded a
    /// receiver. 100,000 trials without one would mean the bug is gone.
    #[test]
    fn dropping_the_last_sender_can_leave_a_receiver_parked() {
        configure_for_tests();
        let mut rng = fastrand::Rng::with_seed(11);
        let first = (1..=100_000).find(|_| trial(4, rng.u32(0..2_000)) > 0);
        assert!(first.is_some(), "no receiver stranded in 100,000 trials");
    }
}
