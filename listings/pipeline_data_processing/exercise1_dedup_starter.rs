//! Exercise 1 (starter): a de-duplication stage. The sample has order
//! A-1005 twice (lines 6 and 33), and the pipeline writes it twice. Write
//! `dedup`, a stage for between validate and write: it passes on the first
//! record of each `order_id` and turns every later one into a reject that
//! names the line where the id was first seen.
//!
//! Run it: `cargo run --example exercise1_dedup_starter`
//! (it panics at the `todo!()` until you write `dedup`).

// ANCHOR: starter
use may::go;
use may_patterns::bounded::{self, Receiver, Sender};

/// What reaches the stage: a good record (its line and id), or a reject.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: u64,
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
}

pub type Item = Result<Record, Reject>;

/// Pass on the first record of each `order_id`; reject later ones with the
/// reason `duplicate order_id "A-1005" (first seen on line 6)`. Rejects
/// from earlier stages pass through. Stop when the input ends or the next
/// stage is gone.
fn dedup(input: Receiver<Item>, output: Sender<Item>) {
    // Hint: one coroutine, one HashMap from id to first line. Why would
    // several dedup workers need more than that?
    let _ = (input, output);
    todo!("remember the ids seen, reject the repeats")
}

fn main() {
    may::config().set_workers(2);
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/listings/pipeline_data_processing/data/orders.csv"
    );
    let text = std::fs::read_to_string(sample).unwrap(); // on the main thread, not a coroutine
    let (in_tx, in_rx) = bounded::channel(8);
    let (out_tx, out_rx) = bounded::channel(8);
    let stage = go!(move || dedup(in_rx, out_tx));
    let feeder = std::thread::spawn(move || {
        for (line, row) in (2..).zip(text.lines().skip(1)) {
            let order_id = row.split(',').next().unwrap_or("").to_string();
            in_tx.send(Ok(Record { line, order_id })).unwrap();
        }
    });
    let (mut passed, mut rejected) = (0, Vec::new());
    for item in out_rx {
        match item {
            Ok(_) => passed += 1,
            Err(reject) => rejected.push(reject),
        }
    }
    feeder.join().unwrap();
    stage.join().unwrap();
    println!("{passed} records passed");
    for r in rejected {
        println!("line {}: {}", r.line, r.reason);
    }
}
// ANCHOR_END: starter
