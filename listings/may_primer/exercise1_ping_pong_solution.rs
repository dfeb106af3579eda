//! Exercise 1 (solution): ping-pong between two coroutines.
//!
//! Run it: `cargo run --example exercise1_ping_pong_solution`

use may::go;
use may::sync::mpsc;

// ANCHOR: solution
fn ping_pong(rounds: u64) -> u64 {
    let (to_ponger, from_pinger) = mpsc::channel::<u64>();
    let (to_pinger, from_ponger) = mpsc::channel::<u64>();
    let ponger = go!(move || {
        for n in from_pinger.iter() {
            if to_pinger.send(n + 1).is_err() {
                break; // the pinger is gone
            }
        }
    });
    let mut sum = 0;
    for n in 0..rounds {
        to_ponger.send(n).expect("the ponger is alive");
        sum += from_ponger.recv().expect("the ponger answers every ping");
    }
    drop(to_ponger); // ends the ponger's loop
    ponger.join().expect("the ponger did not panic");
    sum
}
// ANCHOR_END: solution

fn main() {
    may::config().set_workers(2);
    println!("sum of answers after 1000 rounds: {}", ping_pong(1000));
}

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn every_ping_gets_its_answer() {
        configure_for_tests();
        assert_eq!(ping_pong(0), 0);
        assert_eq!(ping_pong(1), 1);
        // answers are 1..=rounds
        assert_eq!(ping_pong(1000), 1000 * 1001 / 2);
    }
}
