//! Pitfall: `select!` over two ready channels can lose a message. The fix is
//! one merged channel carrying an enum.
//!
//! Run it: `cargo run --example pitfall_select_loses`

use may::go;
use may::select;
use may::sync::mpsc;

const ROUNDS: usize = 1_000;

fn main() {
    may::config().set_workers(2);
    let lost = go!(|| rounds_where_select_lost_a_message(ROUNDS))
        .join()
        .unwrap();
    let merged = rounds_where_merged_lost_a_message(ROUNDS);
    println!("both channels ready, one message each, {ROUNDS} rounds:");
    println!(
        "  select! then draining both: a message vanished in {:.1}% of rounds",
        percent(lost, ROUNDS)
    );
    println!(
        "  one merged channel: a message vanished in {:.1}% of rounds",
        percent(merged, ROUNDS)
    );
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}

// ANCHOR: select_loses
/// Each round: one message waits in each of two channels; `select!` takes
/// one, then we drain both. Returns how many rounds ended with fewer than two.
fn rounds_where_select_lost_a_message(rounds: usize) -> usize {
    let mut lost = 0;
    for _ in 0..rounds {
        let (tx_a, rx_a) = mpsc::channel::<u32>();
        let (tx_b, rx_b) = mpsc::channel::<u32>();
        tx_a.send(1).unwrap();
        tx_b.send(2).unwrap();

        let mut received = 0;
        select!(
            _ = rx_a.recv() => received += 1,
            _ = rx_b.recv() => received += 1
        );
        // Anything still queued is drained here; a message the losing branch
        // had already taken out of its channel is gone for good.
        received += rx_a.try_iter().count() + rx_b.try_iter().count();
        if received < 2 {
            lost += 1;
        }
    }
    lost
}
// ANCHOR_END: select_loses

// ANCHOR: merged
/// The fix: both sources send into one channel, tagged by an enum.
enum Event {
    Order(u32),
    Cancel(u32),
}

fn rounds_where_merged_lost_a_message(rounds: usize) -> usize {
    let mut lost = 0;
    for _ in 0..rounds {
        let (tx, rx) = mpsc::channel::<Event>();
        let orders = tx.clone();
        orders.send(Event::Order(1)).unwrap();
        tx.send(Event::Cancel(2)).unwrap();
        drop((orders, tx));

        let ids: Vec<u32> = rx
            .iter()
            .map(|event| match event {
                Event::Order(id) | Event::Cancel(id) => id,
            })
            .collect();
        if ids.len() < 2 {
            lost += 1;
        }
    }
    lost
}
// ANCHOR_END: merged

#[cfg(test)]
mod tests {
    use super::*;
    use may_patterns::runtime::configure_for_tests;

    #[test]
    fn select_over_two_ready_channels_loses_messages() {
        configure_for_tests();
        let lost = go!(|| rounds_where_select_lost_a_message(ROUNDS))
            .join()
            .unwrap();
        // How often depends on timing (build, load: compare the shown
        // output with a release run); one loss proves the point.
        assert!(lost > 0, "select! lost nothing in {ROUNDS} rounds");
    }

    #[test]
    fn a_merged_channel_loses_nothing() {
        configure_for_tests();
        assert_eq!(rounds_where_merged_lost_a_message(ROUNDS), 0);
    }
}
