//! Exercise 1 (solution): a de-duplication stage. The sample has order
//! A-1005 twice (lines 6 and 33), and the pipeline writes it twice. Write
//! `dedup`, a stage for between validate and write: it passes on the first
//! record of each `order_id` and turns every later one into a reject that
//! names the line where the id was first seen.
//!
//! Run it: `cargo run --example exercise1_dedup_solution`

use std::collections::HashMap;

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

// ANCHOR: solution
/// Pass on the first record of each `order_id`; reject later ones with the
/// reason `duplicate order_id "A-1005" (first seen on line 6)`. Rejects
/// from earlier stages pass through. Stop when the input ends or the next
/// stage is gone.
///
/// One coroutine owns the map, so no lock is needed. With several workers
/// in front of it, records arrive out of order, and "first" means first to
/// arrive; keep the lowest line instead if it must mean first in the file.
fn dedup(input: Receiver<Item>, output: Sender<Item>) {
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    for item in &input {
        let item = item.and_then(|record| match first_seen.get(&record.order_id) {
            Some(first) => Err(Reject {
                line: record.line,
                reason: format!(
                    "duplicate order_id {:?} (first seen on line {first})",
                    record.order_id
                ),
            }),
            None => {
                first_seen.insert(record.order_id.clone(), record.line);
                Ok(record)
            }
        });
        if output.send(item).is_err() {
            break;
        }
    }
}
// ANCHOR_END: solution

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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: u64, id: &str) -> Item {
        Ok(Record {
            line,
            order_id: id.to_string(),
        })
    }

    fn through_dedup(items: Vec<Item>) -> Vec<Item> {
        let (in_tx, in_rx) = bounded::channel(4);
        let (out_tx, out_rx) = bounded::channel(4);
        let stage = go!(move || dedup(in_rx, out_tx));
        let feeder = go!(move || items.into_iter().for_each(|i| in_tx.send(i).unwrap()));
        let out: Vec<Item> = out_rx.iter().collect();
        feeder.join().unwrap();
        stage.join().unwrap();
        out
    }

    #[test]
    fn repeats_are_rejected_with_the_first_line_and_rejects_pass_through() {
        may_patterns::runtime::configure_for_tests();
        let earlier = Reject {
            line: 3,
            reason: "bad date".to_string(),
        };
        let out = through_dedup(vec![
            record(2, "A"),
            Err(earlier.clone()),
            record(4, "B"),
            record(5, "A"),
            record(6, "A"),
        ]);
        assert_eq!(out[0], record(2, "A"));
        assert_eq!(out[1], Err(earlier));
        assert_eq!(out[2], record(4, "B"));
        let reason = |i: usize| out[i].clone().unwrap_err().reason;
        assert_eq!(reason(3), "duplicate order_id \"A\" (first seen on line 2)");
        assert_eq!(reason(4), "duplicate order_id \"A\" (first seen on line 2)");
    }

    #[test]
    fn the_stage_stops_when_the_next_one_is_gone() {
        may_patterns::runtime::configure_for_tests();
        let (in_tx, in_rx) = bounded::channel(4);
        let (out_tx, out_rx) = bounded::channel::<Item>(1);
        drop(out_rx);
        let stage = go!(move || dedup(in_rx, out_tx));
        in_tx.send(record(2, "A")).unwrap();
        stage.join().unwrap(); // returns although `in_tx` is still open
    }
}
