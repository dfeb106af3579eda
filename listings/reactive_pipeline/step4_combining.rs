//! Step 4: combining streams. `merge` interleaves three sources and loses
//! nothing; `zip` pairs two in order and stops with the shorter;
//! `combine_latest` pairs the latest of each once both have sent; and a
//! slow subscriber of a merge of two endless sources holds back both.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use may_patterns::reactive::{Flux, Probe};
use may_patterns::runtime::{configure_once, Settings};

const SOURCES: u64 = 3;
const ITEMS: u64 = 1000;
const WAIT: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ANCHOR: merge
/// Three sources of 1000 numbers each, merged: source `s` sends
/// `s * 1000 .. s * 1000 + 999`, so every item says where it came from.
fn merged() -> Flux<u64> {
    let sources = (0..SOURCES)
        .map(|s| Flux::range(s * ITEMS, ITEMS))
        .collect();
    Flux::merge(sources)
}
// ANCHOR_END: merge

/// What a merge delivered: how many, how many distinct, whether each
/// source's order held, and how often the stream switched source.
fn check_merge(items: &[u64]) -> (usize, usize, bool, usize) {
    let distinct: BTreeSet<u64> = items.iter().copied().collect();
    let in_order = (0..SOURCES).all(|s| {
        let own: Vec<u64> = items.iter().copied().filter(|i| i / ITEMS == s).collect();
        own.windows(2).all(|pair| pair[0] < pair[1])
    });
    let switches = items
        .windows(2)
        .filter(|w| w[0] / ITEMS != w[1] / ITEMS)
        .count();
    (items.len(), distinct.len(), in_order, switches)
}

// ANCHOR: zip
/// Numbers paired with names: three names, so three pairs.
fn numbered() -> Flux<(u64, &'static str)> {
    Flux::range(1, 100).zip(Flux::from_iter(|| ["ann", "bob", "cy"]))
}
// ANCHOR_END: zip

// ANCHOR: combine_latest
/// A price and the currency it is shown in, each changing on its own time
/// (100 ms between any two changes): every change shows the latest pair.
fn shown_prices() -> Flux<(u32, &'static str)> {
    let prices = Flux::scripted(vec![(ms(0), 10), (ms(200), 12)], Some(ms(300)));
    let currency = Flux::scripted(vec![(ms(100), "EUR"), (ms(300), "USD")], Some(ms(300)));
    prices.combine_latest(currency)
}
// ANCHOR_END: combine_latest

// ANCHOR: slow
/// An endless source that counts the items taken from it.
fn endless(taken: &Arc<AtomicU64>) -> Flux<u64> {
    let taken = taken.clone();
    Flux::from_iter(move || {
        let taken = taken.clone();
        (0..).inspect(move |_| {
            taken.fetch_add(1, Ordering::SeqCst);
        })
    })
}

/// Ask a merge of two endless sources for 5 items, wait, and count what was
/// taken from each source.
fn slow_subscriber() -> (u64, [u64; 2]) {
    let taken = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let merge = Flux::merge(vec![endless(&taken[0]), endless(&taken[1])]);
    let (probe, subscriber) = Probe::new();
    merge.subscribe(subscriber);
    probe.request(5);
    probe.wait(5, WAIT);
    may_patterns::alarm::shared().sleep(ms(100)); // time to run ahead, if they could
    probe.cancel();
    let counts = [0, 1].map(|i| taken[i].load(Ordering::SeqCst));
    (probe.next_count(), counts)
}
// ANCHOR_END: slow

fn main() {
    configure_once(Settings {
        workers: 2,
        stack_words: 0x1000,
    });
    let items = merged().collect_vec().expect("ranges never fail");
    let (count, distinct, in_order, switches) = check_merge(&items);
    println!(
        "merge of {SOURCES} x {ITEMS}: {count} items, {distinct} distinct, \
         each source in order: {in_order}, ~{switches} switches between sources"
    );
    println!("zip: {:?}", numbered().collect_vec());
    println!("combine_latest: {:?}", shown_prices().collect_vec());
    let (got, taken) = slow_subscriber();
    println!(
        "merge of 2 endless sources, request(5): {got} items; taken from them \
         after 100ms more: ~{} and ~{}",
        taken[0], taken[1]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_loses_nothing_and_sends_nothing_twice() {
        may_patterns::runtime::configure_for_tests();
        let items = merged().collect_vec().unwrap();
        let (count, distinct, in_order, _) = check_merge(&items);
        assert_eq!((count, distinct, in_order), (3000, 3000, true));
    }

    #[test]
    fn zip_stops_with_the_shorter_and_combine_latest_waits_for_both() {
        may_patterns::runtime::configure_for_tests();
        assert_eq!(
            numbered().collect_vec(),
            Ok(vec![(1, "ann"), (2, "bob"), (3, "cy")])
        );
        assert_eq!(
            shown_prices().collect_vec(),
            Ok(vec![(10, "EUR"), (12, "EUR"), (12, "USD")])
        );
    }

    #[test]
    fn a_slow_subscriber_holds_each_source_to_its_credit() {
        may_patterns::runtime::configure_for_tests();
        let (got, taken) = slow_subscriber();
        assert_eq!(got, 5);
        // PER_SOURCE requested from each; `from_iter` takes one more item
        // from its iterator while it waits for demand.
        let most = may_patterns::reactive::PER_SOURCE as u64 + 1;
        assert!(taken.iter().all(|&t| t <= most), "{taken:?}");
    }
}
