//! Exercise 1 (starter): ping-pong between two coroutines.
//!
//! Run it: `cargo run --example exercise1_ping_pong_starter`
//! (it panics at the `todo!()` until you write `ping_pong`).

// ANCHOR: starter
use may::go;
use may::sync::mpsc;

/// Start a "ponger" coroutine. Send it the numbers 0, 1, ..., rounds - 1 one at
/// a time; it answers each n with n + 1, and you wait for each answer before
/// sending the next number. Return the sum of all answers.
fn ping_pong(rounds: u64) -> u64 {
    let (to_ponger, from_pinger) = mpsc::channel::<u64>();
    let (to_pinger, from_ponger) = mpsc::channel::<u64>();
    // Hint: the ponger loops over `from_pinger` and sends on `to_pinger`;
    // it ends by itself once `to_ponger` is dropped.
    let _ = (
        go!(|| ()),
        to_ponger,
        from_pinger,
        to_pinger,
        from_ponger,
        rounds,
    );
    todo!("exchange `rounds` messages and sum the answers")
}

fn main() {
    may::config().set_workers(2);
    println!("sum of answers after 1000 rounds: {}", ping_pong(1000));
}
// ANCHOR_END: starter
